"""How images become coding units: tiles, the tile size, and the pyramid of subsampled images.

Nothing here knows about models or entropy coding: these are exact, invertible rearrangements of
uint8 tensors ``(N, C, H, W)``.

* **Tiles.** An image is padded up to a multiple of the tile size ``t`` by repeating its last row
  and column (the padded pixels are coded too, and cropped off after decoding), then cut into
  ``t x t`` tiles in row-major order. The tile is the largest of the model's training patch
  times a power of two, up to the ``tile`` setting, that pads the image least: the networks are
  fully convolutional, and larger tiles lose less context at their borders. The first level coded
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
    """Rows ``[top, bottom)`` of a padded level image, cut into ``tile x tile`` tiles."""

    top: int
    bottom: int
    tile: int


class Level(NamedTuple):
    """One level of the pyramid: the image size at this level, its tile, whether its first pixel
    level is given by the next level (``split``), and ``lead``, the tile sizes of its first rows
    of tiles (each row ``tile`` pixels high; the rest uses ``tile``). The first level coded has no
    bits in the message to take bits back from; small tiles there keep the images coded without
    bits-back (see ``plain_start``) small."""

    h: int
    w: int
    tile: int
    split: bool
    lead: tuple[int, ...] = ()

    @property
    def padded(self) -> tuple[int, int]:
        return padded_size(self.h, self.tile), padded_size(self.w, self.tile)

    @property
    def pieces(self) -> list[Piece]:
        """Runs of rows with the same tile size, top to bottom."""
        ph, t = self.padded[0], self.tile
        sizes = list(self.lead) + [t] * (ph // t - len(self.lead))
        out = []
        for row, size in enumerate(sizes):
            if out and out[-1].tile == size:
                out[-1] = out[-1]._replace(bottom=(row + 1) * t)
            else:
                out.append(Piece(row * t, (row + 1) * t, size))
        return out

    def tiles_in(self, piece: Piece) -> int:
        return (piece.bottom - piece.top) // piece.tile * (self.padded[1] // piece.tile)

    @property
    def tiles_per_image(self) -> int:
        return sum(self.tiles_in(p) for p in self.pieces)

    @property
    def next_size(self) -> tuple[int, int]:
        return self.padded[0] // SUBSAMPLE, self.padded[1] // SUBSAMPLE


def levels(h: int, w: int, patch: int, largest_tile: int = 0, pyramid: int = 0, leads=None) -> list[Level]:
    """The pyramid of an ``h x w`` image, full size first. ``pyramid`` is the shorter side from
    which an image is split (0: never); tiles are chosen by :func:`tile_size`. ``leads``, per level,
    the tile sizes of its first rows (:attr:`Level.lead`); by default (``None`` or empty) the first
    level's first row of tiles uses ``patch``-sized tiles if its tiles are larger and it has more
    rows. ``ValueError`` unless given leads fit the levels: one per level, each size a multiple of 4
    that divides the level's tile, no more sizes than rows."""
    out = _levels(h, w, patch, largest_tile, pyramid)
    if not leads:
        return out
    leads = tuple(tuple(lead) for lead in leads)
    if len(leads) != len(out) or any(
            len(lead) > lvl.padded[0] // lvl.tile
            or any(type(t) is not int or t < 4 or t % 4 or lvl.tile % t for t in lead)
            for lead, lvl in zip(leads, out)):
        raise ValueError("lead tiles do not fit the model and image shape")
    return [lvl._replace(lead=lead) for lvl, lead in zip(out, leads)]


def _levels(h: int, w: int, patch: int, largest_tile: int, pyramid: int) -> list[Level]:
    if patch % SUBSAMPLE:
        raise ValueError(f"patch size {patch} is not a multiple of {SUBSAMPLE}")
    out = []
    while True:
        t = tile_size(h, w, patch, largest_tile)
        split = bool(pyramid) and min(h, w) >= max(pyramid, 2 * SUBSAMPLE)
        split = split and padded_size(h, t) // SUBSAMPLE < h and padded_size(w, t) // SUBSAMPLE < w  # smaller next
        lead = (patch,) if not out and t > patch and padded_size(h, t) > t else ()
        out.append(Level(h, w, t, split, lead))
        if not split:
            return out
        h, w = out[-1].next_size


def level_images(x: torch.Tensor, pyramid_levels: list[Level]) -> list[torch.Tensor]:
    """The padded image of every level, ``(N, C, H_k, W_k)``, full size first."""
    out = []
    for lvl in pyramid_levels:
        padded = pad(x, lvl.tile)
        out.append(padded)
        x = padded[:, :, ::SUBSAMPLE, ::SUBSAMPLE]
    return out


def cut(padded: torch.Tensor, lvl: Level) -> list[torch.Tensor]:
    """A padded level image ``(N, C, H, W)`` to the tiles of each of the level's pieces."""
    return [to_tiles(padded[:, :, p.top: p.bottom], p.tile) for p in lvl.pieces]


def uncut(parts: list[torch.Tensor], n: int, lvl: Level) -> torch.Tensor:
    """Inverse of :func:`cut`, cropped to the level's size: ``(N, C, h, w)``."""
    w = lvl.padded[1]
    rows = [from_tiles(t, n, p.bottom - p.top, w) for t, p in zip(parts, lvl.pieces)]
    return torch.cat(rows, 2)[:, :, :lvl.h, :lvl.w].contiguous()


def given_image(next_level: torch.Tensor, lvl: Level) -> torch.Tensor:
    """The padded image of level ``lvl`` as far as the next level ``(N, C, h, w)`` (unpadded, the
    size of ``lvl.next_size``) determines it: its pixels on the subsampled grid, zero elsewhere."""
    n, c = next_level.shape[:2]
    full = torch.zeros((n, c) + lvl.padded, dtype=next_level.dtype)
    full[:, :, ::SUBSAMPLE, ::SUBSAMPLE] = next_level
    return full
