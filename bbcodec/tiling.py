"""How images become coding units: tiles, the tile size, and the pyramid of subsampled images.

Nothing here knows about models or entropy coding: these are exact, invertible rearrangements of
uint8 tensors ``(N, C, H, W)``.

* **Tiles.** An image is padded up to a multiple of the tile size ``t`` by repeating its last row
  and column (the padded pixels are coded too, and cropped off after decoding), then cut into
  ``t x t`` tiles in row-major order. The tile is the largest of the model's training patch
  times a power of two, up to the ``tile`` setting, that pads the image least: the networks are
  fully convolutional, and larger tiles lose less context at their borders. With *edge tiles*
  (files since ``edge_tiles``) the image is padded to a multiple of the patch only, the tile is
  the largest that fits, and the rows and columns left over at the bottom and right are cut into
  smaller tiles (:class:`Level`): a 1280x800 photograph gets 128x128 tiles and a bottom row of
  32x32 ones, instead of 32x32 tiles throughout. The first level coded
  has its first rows of tiles cut into smaller tiles instead (its *lead*): the message is empty
  there, and a tile is coded without bits-back until the message holds the bits its latents'
  pop takes, which costs more the bigger the tile is. The lead is one row of patch-sized tiles
  unless the file names its rows' tile sizes (:func:`bbcodec.plan.lead_tiles` ramps them up).
* **Pyramid.** An image at least ``pyramid`` pixels on its shorter side is coded as two parts:
  its padded version's every fourth pixel of every fourth row, an image a quarter the size (a
  *level*, coded first by the decoder, and split again by the same rule), and the rest of its
  pixels given those. Models whose first pixel level is exactly that subsampled grid (as
  :class:`~bbcodec.models.hierarchical_vae.HierarchicalVAE`'s is) then predict it from a smaller
  image with context across tile borders, instead of from tile-local latents alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

SUBSAMPLE = 4  # the pyramid keeps every fourth pixel of every fourth row


def padded_size(size: int, t: int) -> int:
    return -(-size // t) * t


def tile_size(h: int, w: int, patch: int, largest: int) -> int:
    """The tile for an ``h x w`` image: of ``patch * 2**k`` up to ``largest`` (at least ``patch``),
    the largest one among those that pad the image least."""
    candidates = [patch]
    while candidates[-1] * 2 <= largest:
        candidates.append(candidates[-1] * 2)
    return min(reversed(candidates), key=lambda t: padded_size(h, t) * padded_size(w, t))


def pad(x: torch.Tensor, t: int) -> torch.Tensor:
    """``(N, C, H, W)`` padded to multiples of ``t`` by repeating the last row and column."""
    h, w = x.shape[-2:]
    rows = torch.clamp(torch.arange(padded_size(h, t)), max=h - 1)
    cols = torch.clamp(torch.arange(padded_size(w, t)), max=w - 1)
    return x[:, :, rows][:, :, :, cols]


def to_tiles(x: torch.Tensor, t: int) -> torch.Tensor:
    """``(N, C, H, W)`` with ``H`` and ``W`` multiples of ``t`` to ``(N * H/t * W/t, C, t, t)``."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // t, t, w // t, t).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, t, t).contiguous()


def from_tiles(tiles: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``to_tiles(pad(x, t), t)`` for ``n`` images of ``h x w``: ``(N, C, h, w)``."""
    c, t = tiles.shape[1], tiles.shape[-1]
    th, tw = padded_size(h, t) // t, padded_size(w, t) // t
    x = tiles.reshape(n, th, tw, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(n, c, th * t, tw * t)
    return x[:, :, :h, :w].contiguous()


class Piece(NamedTuple):
    """Tiles of one size, ``tile x tile``: the rectangles ``(top, bottom, left, right)`` of a
    padded level image they cover, each cut in row-major order, in turn."""

    tile: int
    rects: tuple[tuple[int, int, int, int], ...]

    @property
    def top(self) -> int:
        return self.rects[0][0]

    @property
    def tiles(self) -> int:
        """Tiles per image."""
        return sum((b - a) // self.tile * ((r - l) // self.tile) for a, b, l, r in self.rects)


def _sizes_below(t: int, limit: int) -> list[int]:
    """Tile sizes for a remainder: multiples of 4 dividing ``t``, at most ``limit``, largest first."""
    return [d for d in range(min(t, limit) // 4 * 4, 0, -4) if t % d == 0]


def _split(length: int, t: int) -> list[int]:
    """``length`` (a multiple of 4, under ``t``) as a sum of tile sizes dividing ``t``, largest first."""
    out = []
    while length:
        out.append(_sizes_below(t, length)[0])
        length -= out[-1]
    return out


def _band(top: int, bottom: int, width: int, size: int) -> tuple[list, list]:
    """A band of rows ``[top, bottom)`` (a multiple of ``size`` high) as ``size`` tiles from the left
    edge, and columns of smaller tiles for the rest of ``width``: ``(main, remainder)`` entries
    ``(tile, rect)``."""
    cut = width // size * size
    main = [(size, (top, bottom, 0, cut))] if cut else []
    rest, left = [], cut
    for d in _split(width - cut, size):
        rest.append((d, (top, bottom, left, left + d)))
        left += d
    return main, rest


class Level(NamedTuple):
    """One level of the pyramid: the image size at this level, its tile, whether its first pixel
    level is given by the next level (``split``), and ``lead``, the tile sizes of its first rows
    of tiles (each row ``tile`` pixels high; the rest uses ``tile``). The first level coded has no
    bits in the message to take bits back from; small tiles there keep the images coded without
    bits-back (see ``plain_start``) small.

    ``grain`` (0: ``tile``) is what the image is padded to a multiple of. With a grain smaller
    than the tile (*edge tiles*), the rows and columns that do not fill a whole tile are cut into
    smaller tiles (sizes dividing ``tile``, largest first) instead of padding the image up to
    whole tiles."""

    h: int
    w: int
    tile: int
    split: bool
    lead: tuple[int, ...] = ()
    grain: int = 0

    @property
    def padded(self) -> tuple[int, int]:
        g = self.grain or self.tile
        return padded_size(self.h, g), padded_size(self.w, g)

    @property
    def rows(self) -> int:
        """Whole rows of full-height tiles (lead rows included)."""
        return self.padded[0] // self.tile

    @property
    def pieces(self) -> list[Piece]:
        """The level's tiles, grouped in coding order into runs of one size: each lead row and its
        right-hand remainder in turn, the rows of full-size tiles, their remainders, then the
        bands of smaller tiles at the bottom (each with its remainder). Without edge tiles, runs of
        rows of one size. Lengthening the lead by a row changes nothing of the order before that
        row (the encoder's re-lead relies on it)."""
        (ph, pw), t = self.padded, self.tile
        order = []
        for r, size in enumerate(self.lead):  # row by row: a longer lead only appends to the order
            main, rest = _band(r * t, (r + 1) * t, pw, size)
            order += main + rest
        bands = [_band(r * t, (r + 1) * t, pw, t) for r in range(len(self.lead), self.rows)]
        order += [e for main, _ in bands for e in main] + [e for _, rest in bands for e in rest]
        top = self.rows * t
        for d in _split(ph - top, t):
            main, rest = _band(top, top + d, pw, d)
            order += main + rest
            top += d
        out = []
        for size, rect in order:
            if out and out[-1][0] == size:
                last = out[-1][1][-1]
                if last[1] == rect[0] and last[2:] == rect[2:]:  # the same columns, one row down
                    out[-1][1][-1] = (last[0], rect[1], *rect[2:])
                else:
                    out[-1][1].append(rect)
            else:
                out.append((size, [rect]))
        return [Piece(size, tuple(rects)) for size, rects in out]

    def tile_origins(self) -> list[tuple[int, int, int]]:
        """``(tile, top, left)`` of each tile of one image, in coding order."""
        return [(p.tile, y, x) for p in self.pieces for a, b, l, r in p.rects
                for y in range(a, b, p.tile) for x in range(l, r, p.tile)]

    def tiles_in(self, piece: Piece) -> int:
        return piece.tiles

    @property
    def tiles_per_image(self) -> int:
        return sum(p.tiles for p in self.pieces)

    @property
    def next_size(self) -> tuple[int, int]:
        return self.padded[0] // SUBSAMPLE, self.padded[1] // SUBSAMPLE


def levels(h: int, w: int, patch: int, largest_tile: int = 0, pyramid: int = 0, leads=None,
           edge: bool = False) -> list[Level]:
    """The pyramid of an ``h x w`` image, full size first. ``pyramid`` is the shorter side from
    which an image is split (0: never); tiles are chosen by :func:`tile_size`, or with ``edge``
    (edge tiles, see :class:`Level`) every level is padded to a multiple of ``patch`` only and
    its tile is the largest ``patch * 2**k`` up to ``largest_tile`` that fits it. ``leads``, per
    level, the tile sizes of its first rows (:attr:`Level.lead`); by default (``None`` or empty)
    the first level's first row of tiles uses ``patch``-sized tiles if its tiles are larger and it
    has more rows. ``ValueError`` unless given leads fit the levels: one per level, each size a
    multiple of 4 that divides the level's tile, no more sizes than rows."""
    out = _levels(h, w, patch, largest_tile, pyramid, edge)
    if not leads:
        return out
    leads = tuple(tuple(lead) for lead in leads)
    if len(leads) != len(out) or any(
            len(lead) > lvl.rows or any(type(t) is not int or t < 4 or t % 4 or lvl.tile % t for t in lead)
            for lead, lvl in zip(leads, out)):
        raise ValueError("lead tiles do not fit the model and image shape")
    return [lvl._replace(lead=lead) for lvl, lead in zip(out, leads)]


def _edge_tile(h: int, w: int, patch: int, largest: int) -> int:
    t, fits = patch, min(padded_size(h, patch), padded_size(w, patch))
    while t * 2 <= max(largest, patch) and t * 2 <= fits:
        t *= 2
    return t


def _levels(h: int, w: int, patch: int, largest_tile: int, pyramid: int, edge: bool = False) -> list[Level]:
    if patch % SUBSAMPLE:
        raise ValueError(f"patch size {patch} is not a multiple of {SUBSAMPLE}")
    out = []
    while True:
        t = _edge_tile(h, w, patch, largest_tile) if edge else tile_size(h, w, patch, largest_tile)
        lvl = Level(h, w, t, False, grain=patch if edge else 0)
        ph, pw = lvl.padded
        split = bool(pyramid) and min(h, w) >= max(pyramid, 2 * SUBSAMPLE)
        split = split and ph // SUBSAMPLE < h and pw // SUBSAMPLE < w  # smaller next
        lead = (patch,) if not out and t > patch and ph > t else ()
        out.append(lvl._replace(split=split, lead=lead))
        if not split:
            return out
        h, w = out[-1].next_size


def level_images(x: torch.Tensor, pyramid_levels: list[Level]) -> list[torch.Tensor]:
    """The padded image of every level, ``(N, C, H_k, W_k)``, full size first: padded by repeating
    the last row and column."""
    out = []
    for lvl in pyramid_levels:
        h, w = x.shape[-2:]
        rows = torch.clamp(torch.arange(lvl.padded[0]), max=h - 1)
        cols = torch.clamp(torch.arange(lvl.padded[1]), max=w - 1)
        padded = x[:, :, rows][:, :, :, cols]
        out.append(padded)
        x = padded[:, :, ::SUBSAMPLE, ::SUBSAMPLE]
    return out


def cut(padded: torch.Tensor, lvl: Level) -> list[torch.Tensor]:
    """A padded level image ``(N, C, H, W)`` to the tiles of each of the level's pieces,
    ``(N * tiles, C, t, t)``, image by image."""
    n, out = padded.shape[0], []
    for p in lvl.pieces:
        parts = [to_tiles(padded[:, :, a:b, l:r], p.tile) for a, b, l, r in p.rects]
        if len(parts) == 1:
            out.append(parts[0])
        else:
            out.append(torch.cat([t.reshape(n, -1, *t.shape[1:]) for t in parts], 1).reshape(-1, *parts[0].shape[1:]))
    return out


def uncut(parts: list[torch.Tensor], n: int, lvl: Level) -> torch.Tensor:
    """Inverse of :func:`cut`, cropped to the level's size: ``(N, C, h, w)``."""
    c = parts[0].shape[1]
    full = torch.empty((n, c) + lvl.padded, dtype=parts[0].dtype)
    for tiles, p in zip(parts, lvl.pieces):
        tiles = tiles.reshape(n, -1, c, p.tile, p.tile)
        first = 0
        for a, b, l, r in p.rects:
            count = (b - a) // p.tile * ((r - l) // p.tile)
            full[:, :, a:b, l:r] = from_tiles(tiles[:, first:first + count].reshape(-1, c, p.tile, p.tile),
                                              n, b - a, r - l)
            first += count
    return full[:, :, :lvl.h, :lvl.w].contiguous()


def given_image(next_level: torch.Tensor, lvl: Level) -> torch.Tensor:
    """The padded image of level ``lvl`` as far as the next level ``(N, C, h, w)`` (unpadded, the
    size of ``lvl.next_size``) determines it: its pixels on the subsampled grid, zero elsewhere."""
    n, c = next_level.shape[:2]
    full = torch.zeros((n, c) + lvl.padded, dtype=next_level.dtype)
    full[:, :, ::SUBSAMPLE, ::SUBSAMPLE] = next_level
    return full
