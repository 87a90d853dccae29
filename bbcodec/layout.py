"""How a model codes an image tensor: its coding units, their codecs, chunks and segments.

A coding *unit* is a whole image for whole-image models and a tile for tiled ones
(:mod:`bbcodec.tiling`). A file's units are coded in independent chunks; a chunk is one message
holding one segment (:mod:`bbcodec.segments`) per piece of each pyramid level.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import torch

from . import plan, scale_maps, tiling
from .coding_params import split_coding
from .container import coding_header_bytes
from .errors import BBCodecError
from .registry import architecture
from .segments import ELBO_SEED, Segment, Starved, decode_segments, encode_segments
from .threads import run_chunks

MAX_RELEADS = 3  # times a one-image encoding may lengthen its lead (see Layout.encode_chunk)


def _ticker(progress, total):
    return None if progress is None else (lambda n: progress(n, total))


class _CappedTicks:
    """Progress ticks passed on to ``tick`` up to ``total`` units in all: a re-led encoding codes a
    few more, smaller, units than it set out to."""

    def __init__(self, tick, total: int):
        self.tick, self.left = tick, total

    def __call__(self, n: int) -> None:
        n = min(n, self.left)
        if n > 0:
            self.left -= n
            self.tick(n)


def _serialised(tick):
    """``tick`` called under a lock: the chunks of :func:`threads.run_chunks` report from
    several threads."""
    if tick is None:
        return None
    lock = threading.Lock()

    def locked(n):
        with lock:
            tick(n)

    return locked


class Layout:
    """How a model codes an image tensor: its coding units and their codecs.

    A ``context_vae`` model codes whole images. A fully convolutional model codes tiles
    (:mod:`.tiling`): each image's pyramid levels (one level unless ``pyramid`` is set) are cut
    into pieces of tiles, and a chunk codes every piece of every level as a segment on one message,
    full size first, so that the decoder has each smaller level before the level whose pixels it
    gives. Greyscale images given to a colour model are coded in its grey mode (one channel, the
    others implied). ``coding`` (over the model's coding defaults) holds stored parameters
    (:attr:`params`) and encoder options (:attr:`options`). With ``adapt``, :meth:`encode` first
    fits each level's scale maps (shifts, slopes and output offsets) to a sample of its tiles
    (:mod:`bbcodec.scale_maps`); they are then part of :meth:`stored_params`.
    """

    def __init__(self, loaded, shape, coding: dict | None = None):
        self.loaded, self.shape = loaded, tuple(shape)
        self.arch = architecture(loaded.config.get("arch"))
        defaults = dict(loaded.meta.get("coding", {}))
        self.params, self.options = split_coding({**defaults, **(coding or {})})
        self._asked = set(coding or {})  # what the caller set, which the encoder leaves alone
        # grey images: a colour model codes them in its grey mode (channels 2 and 3 are copies of
        # the first); a one-channel model (trained on luminance) codes them as they are
        one_channel = loaded.config.get("channels", 3) == 1
        self.grey = self.arch.tiled and len(self.shape) == 3 and not one_channel
        self.luminance = self.arch.tiled and len(self.shape) == 3 and one_channel
        self.levels, self.pieces = [], []
        self.releads = 0  # how often the encoder may still lengthen the lead (Layout.encode_chunk)
        choose_edge = self.params.edge_tiles is None  # the encoder chooses; files always say
        if choose_edge:
            self.params = replace(self.params, edge_tiles=self.arch.tiled)
        if self.params.lead_tiles is None:  # the encoder chooses; files always say
            self.params = replace(self.params, lead_tiles=self._chosen_leads() if self.arch.tiled else ())
        if choose_edge and self.arch.tiled and self._whole_tiles_alike():
            self.params = replace(self.params, edge_tiles=False)  # files say what files before them did
        self._set_levels()
        if self.levels and self.params.units_reversed:  # tiles keep their order (only whole images reverse)
            self.params = replace(self.params, units_reversed=False)
        groups = self.loaded.model.steps if self.levels else 0  # pixel groups of a tiled model
        nout = self.loaded.model.likelihood.nout if self.levels else 1
        for key in MAP_KEYS:
            setattr(self.params, key, scale_maps.check_level_maps(getattr(self.params, key), key, len(self.levels),
                                                                  groups, nout))

    def _set_levels(self) -> None:
        """:attr:`levels` from the parameters, and :attr:`pieces`, the flat list of segments of a
        chunk as (level index, piece index)."""
        if self.arch.tiled:
            h, w = self.shape[-2:]
            self.levels = tiling.levels(h, w, self.loaded.config.get("patch"), self.params.tile,
                                        self.params.pyramid, self.params.lead_tiles, self.params.edge_tiles)
        self.pieces = [(k, i) for k, lvl in enumerate(self.levels) for i in range(len(lvl.pieces))]

    def _starvable(self) -> dict:
        """``{segment: 1}``: the segments whose starvation (:class:`~bbcodec.segments.Starved`)
        lengthens the lead. While :attr:`releads` lasts (and the plan is stored), those are the
        first level's pieces of full-size tiles after its first piece: a full-size tile's pop is
        the largest a chunk's start has to pay for."""
        if self.releads <= 0 or not self.levels or not self.params.stored_plan:
            return {}
        first = self.levels[0]
        return {s: 1 for s, (k, i) in enumerate(self.pieces) if k == 0 and i > 0 and first.pieces[i].tile == first.tile}

    def _relead(self, segment: int) -> None:
        """Cut the row of tiles that starved at ``segment`` (see :meth:`_starvable`) into tiles of
        half the size: the rows before it put too few bits in the message for its pops (a sky
        that costs far less than the estimates the lead was chosen from)."""
        first = self.levels[0]
        row = first.pieces[self.pieces[segment][1]].top // first.tile
        lead = (list(first.lead) + [first.tile] * row)[:row] + [first.tile // 2]
        rest = tuple(self.params.lead_tiles[1:]) or ((),) * (len(self.levels) - 1)
        self.params = replace(self.params, lead_tiles=(tuple(lead),) + rest)
        self.releads -= 1
        self._set_levels()

    def _whole_tiles_alike(self) -> bool:
        """Whether whole tiles, with the same lead, tile this shape as edge tiles do
        (:class:`tiling.Level`)."""
        (h, w), patch, p = self.shape[-2:], self.loaded.config.get("patch"), self.params
        try:
            whole, edge = (tiling.levels(h, w, patch, p.tile, p.pyramid, p.lead_tiles, e) for e in (False, True))
        except ValueError:  # the lead does not fit whole tiles' rows
            return False
        return [(lvl.padded, lvl.pieces) for lvl in whole] == [(lvl.padded, lvl.pieces) for lvl in edge]

    def _tile_order(self) -> list[tuple]:
        """``(level, tile, top, left)`` of one image's tiles in coding order."""
        return [(k, *origin) for k, lvl in enumerate(self.levels) for origin in lvl.tile_origins()]

    def _chosen_leads(self) -> tuple:
        """The lead tiles an encoder stores: :func:`plan.lead_tiles` of the first level from the
        start-up estimates (a grey image coded by a colour model costs a third of its estimate),
        or ``()`` where that is the default single row of patch-sized tiles."""
        (h, w), patch = self.shape[-2:], self.loaded.config.get("patch")
        default = tiling.levels(h, w, patch, self.params.tile, self.params.pyramid, edge=self.params.edge_tiles)
        first = default[0]
        coded = 1 / self.loaded.config.get("channels", 3) if self.grey else 1.0
        lead = plan.lead_tiles(first.tile, first.rows, first.tile * first.padded[1], patch,
                               self.params.bits_per_image * coded, self.params.pop_bits_per_image)
        return () if lead == first.lead else (lead,) + ((),) * (len(default) - 1)

    def _codec(self, level: int = 0, tile=None):
        p = self.params
        return self.arch.codec(self.loaded.model, p, grey=self.grey, tile=tile,
                               shifts=p.scale_shifts[level] if p.scale_shifts else None,
                               slopes=p.scale_slopes[level] if p.scale_slopes else None,
                               offsets=p.output_offsets[level] if p.output_offsets else None)

    def codecs(self) -> list:
        """One codec per segment of a chunk (per piece of each pyramid level; one for whole images)."""
        if not self.levels:
            return [self._codec()]
        return [self._codec(k, self.levels[k].pieces[i].tile) for k, i in self.pieces]

    def adapt(self, images: torch.Tensor) -> None:
        """Fit the scale maps to ``images`` (if ``adapt`` is set and none are set yet): per level,
        to a sample of its tiles spread over the images (:func:`scale_maps.choose_level_maps`).
        Maps that change nothing are not stored, and none are where they would not save what they
        add to the header."""
        if not (self.levels and self.options.adapt) or any(getattr(self.params, key) for key in MAP_KEYS):
            return
        h, w = self.shape[-2:]
        sample = scale_maps.sample_images(images, h * w)
        maps, saving_bits = scale_maps.choose_level_maps(self.loaded.model, self.segments(sample),
                                                         [k for k, _ in self.pieces], len(self.levels))
        # only the kinds of map in use are stored, and only if they save more than the header grows
        mapped = replace(self.params, **{key: values for key, values in zip(MAP_KEYS, maps)
                                         if any(v for level in values for v in level)})
        header_bits = 8 * (coding_header_bytes(mapped.to_dict()) - coding_header_bytes(self.params.to_dict()))
        if saving_bits > header_bits:
            self.params = mapped

    @property
    def whole_images(self) -> bool:
        """Whether a chunk holds whole images (several segments per image), not any run of units."""
        return len(self.pieces) > 1

    def units_per_image(self) -> int:
        return sum(lvl.tiles_per_image for lvl in self.levels) if self.levels else 1

    def unit_count(self) -> int:
        return self.shape[0] * self.units_per_image()

    def segment_sizes(self, n_images: int) -> list[int]:
        """The units of each segment of a chunk of ``n_images`` whole images."""
        if not self.levels:
            return [n_images]
        return [n_images * self.levels[k].tiles_in(self.levels[k].pieces[i]) for k, i in self.pieces]

    def segments(self, images: torch.Tensor) -> list[Segment]:
        """The segments coding ``images`` (all of the shape this layout is for but the count)."""
        codecs = self.codecs()
        if not self.levels:
            return [Segment(codecs[0], images)]
        x = images.unsqueeze(1).expand(-1, 3, -1, -1) if self.grey else images.unsqueeze(1) if self.luminance else images
        tiles = [tiling.cut(img, lvl) for lvl, img in zip(self.levels, tiling.level_images(x, self.levels))]
        return [Segment(codec, tiles[k][i], tiles[k][i] if self.levels[k].split else None)
                for codec, (k, i) in zip(codecs, self.pieces)]

    def chunk_ranges(self, n_images: int, chunk: int) -> list[tuple[int, int]]:
        """Chunks as (first image, end) ranges when chunks hold whole images, otherwise as ranges of
        units (then a chunk may end inside an image)."""
        if self.whole_images:
            per_chunk = max(1, chunk // self.units_per_image())
            return [(i, min(n_images, i + per_chunk)) for i in range(0, n_images, per_chunk)]
        total = self.unit_count()
        return [(i, min(total, i + chunk)) for i in range(0, total, chunk)]

    def chunk_parts(self, images: torch.Tensor, chunk: int) -> list[torch.Tensor]:
        """What each chunk codes, in order (views, not copies): its images when chunks hold whole
        images, otherwise its run of units (tiles are cut from all the images at once)."""
        ranges = self.chunk_ranges(len(images), chunk)
        if self.whole_images:
            return [images[a:b] for a, b in ranges]
        units = self.segments(images)[0].units
        return [units[a:b] for a, b in ranges]

    def encode_chunk(self, index: int, part: torch.Tensor, progress=None, codecs=None):
        """Chunk ``index`` of :meth:`chunk_parts`: ``(bytes, units, stats)``. ``codecs``: those of
        :meth:`codecs`, to reuse for runs of units (made afresh if not given)."""
        if not self.whole_images:
            segments = [Segment((codecs or self.codecs())[0], part.flip(0) if self.params.units_reversed else part)]
            data, st = encode_segments(segments, chunk=index, progress=progress)
            return data, len(part), st
        resume = None
        while True:
            segments = self.segments(part)  # tiles made chunk by chunk
            try:
                data, st = encode_segments(segments, chunk=index, progress=progress,
                                           stop_if_starved=self._starvable(), resume=resume)
                return data, sum(len(s.units) for s in segments), st
            except Starved as starved:
                # the rows before it are coded alike whatever this row's tiles: carry on from there
                before = self._tile_order()
                self._relead(starved.segment)
                done = starved.state.units_done
                resume = starved.state if self._tile_order()[:done] == before[:done] else None

    def _cap_initial_lanes(self, n_images: int, chunk: int) -> None:
        """Fewer initial lanes for small chunks (:func:`plan.capped_initial_lanes`; an encoder's
        choice, which files store), unless the caller set ``initial_lanes``."""
        if "initial_lanes" in self._asked:
            return
        sizes = self.segment_sizes(n_images)  # units per segment, all the images in one chunk
        bits = sum(size * codec.params.bits_per_image for size, codec in zip(sizes, self.codecs()))
        per_chunk = bits / max(1, len(self.chunk_ranges(n_images, chunk)))
        lanes = plan.capped_initial_lanes(self.params.initial_lanes, per_chunk)
        self.params = replace(self.params, initial_lanes=lanes)

    def encode(self, images: torch.Tensor, chunk: int, progress=None, workers=None):
        """``(chunk bytes, units per chunk, stats per chunk)``; adapts first (see :meth:`adapt`).
        ``workers`` (a :class:`bbcodec.parallel.ChunkWorkers`) code the chunks, if there are
        several, in their processes: the same bytes."""
        self._cap_initial_lanes(len(images), chunk)
        self.adapt(images)
        tick = _ticker(progress, self.unit_count())
        parts = self.chunk_parts(images, chunk)
        if workers is not None and len(parts) > 1:
            return workers.encode(self, parts, tick)
        if len(parts) == 1 and len(images) == 1 and self.whole_images and "lead_tiles" not in self._asked:
            # one image in one chunk: where its first rows starve a row of full-size tiles, that
            # row is cut smaller (the lead is the file's, so all its chunks and images share it)
            self.releads = MAX_RELEADS
            tick = tick and _CappedTicks(tick, self.unit_count())
        tick = _serialised(tick)
        shared = {}  # the codecs for runs of units, one set per thread of run_chunks

        def encode(index):
            codecs = None
            if not self.whole_images:
                if threading.get_ident() not in shared:
                    shared[threading.get_ident()] = self.codecs()
                codecs = shared[threading.get_ident()]
            return self.encode_chunk(index, parts[index], tick, codecs)

        coded = run_chunks(len(parts), encode)
        return [c[0] for c in coded], [c[1] for c in coded], [c[2] for c in coded]

    def decode_chunk(self, index: int, data: bytes, count: int, progress=None, on_images=None) -> torch.Tensor:
        """Chunk ``index`` of ``count`` units, decoded: its images ``(n, C, H, W)`` when chunks
        hold whole images, otherwise its units; :meth:`assemble` joins the chunks. ``on_images``:
        see :meth:`decode`."""
        n = count // self.units_per_image()
        if self.whole_images and count != n * self.units_per_image():
            raise BBCodecError("corrupt .bbc header: a chunk does not hold whole images")
        sizes = self.segment_sizes(n) if self.whole_images else [count]
        on_batch = None
        if on_images is not None:  # batches come off last units first: reversed units are first first
            on_batch = lambda units: on_images(units.flip(0))  # noqa: E731
        try:
            decoded = decode_segments(data, self.codecs(), sizes, self._given_for(n), chunk=index, progress=progress,
                                      on_batch=on_batch)
        except BBCodecError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:
            raise BBCodecError(f"corrupt .bbc file: chunk {index} does not decode ({exc})") from exc
        if self.whole_images:
            return self._level_image(0, decoded, n)
        return decoded[0].flip(0) if self.params.units_reversed else decoded[0]

    def streams(self, chunks: int, workers=None) -> bool:
        """Whether :meth:`decode` can hand out the images in order as they are decoded: one chunk
        of a whole-image model's images coded last first (``units_reversed``), in this process."""
        return not self.levels and self.params.units_reversed and chunks == 1 and workers is None

    def assemble(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The image tensor from the decoded chunks of :meth:`decode_chunk`, in order."""
        if not self.levels:
            return torch.cat(parts).reshape(self.shape) if parts else torch.empty(self.shape, dtype=torch.uint8)
        if not self.whole_images:
            lvl = self.levels[0]
            channels = self.loaded.config.get("channels", 3)
            units = torch.cat(parts) if parts else torch.empty((0, channels, lvl.tile, lvl.tile), dtype=torch.uint8)
            parts = [tiling.uncut([units], self.shape[0], lvl)]
        x = torch.cat(parts)
        return (x[:, 0] if self.grey or self.luminance else x).contiguous()

    def decode(self, chunks, counts, progress=None, workers=None, on_images=None) -> torch.Tensor:
        """Inverse of :meth:`encode` (``counts``: units per chunk; ``workers`` as there).
        ``on_images(images)``, where :meth:`streams` allows, is called with consecutive runs of the
        decoded images, in order, as they come off (the whole tensor is returned as well)."""
        if on_images is not None and not self.streams(len(chunks), workers):
            raise ValueError("this file's images do not decode in order")
        tick = _ticker(progress, self.unit_count())
        if workers is not None and len(chunks) > 1:
            return self.assemble(workers.decode(self, chunks, counts, tick))
        tick = _serialised(tick)
        return self.assemble(run_chunks(len(chunks), lambda index: self.decode_chunk(index, chunks[index], counts[index],
                                                                                     tick, on_images)))

    def _level_image(self, k: int, decoded: dict, n: int) -> torch.Tensor:
        """Level ``k``'s image ``(n, C, h, w)`` from its decoded segments."""
        return tiling.uncut([decoded[s] for s, (lk, _) in enumerate(self.pieces) if lk == k], n, self.levels[k])

    def _given_for(self, n: int):
        given_pieces = {}  # level -> its pieces' given tiles, made once the next level is decoded

        def given_for(s, decoded):
            k, i = self.pieces[s]
            lvl = self.levels[k]
            if not lvl.split:
                return None
            if k not in given_pieces:
                given_pieces[k] = tiling.cut(tiling.given_image(self._level_image(k + 1, decoded, n), lvl), lvl)
            return given_pieces[k][i]

        return given_for if self.whole_images else None

    def negative_elbo(self, images: torch.Tensor, seed: int = ELBO_SEED) -> dict:
        """The model's negative ELBO in bits over all coded units (see the codecs'
        ``negative_elbo``); pyramid levels count only the pixels they code."""
        total = {"kl_bits": 0.0, "nll_bits": 0.0, "bits": 0.0}
        for segment in self.segments(images):
            kwargs = {"given": True} if segment.given is not None else {}
            part = segment.codec.negative_elbo(segment.units, seed=seed, **kwargs)
            total = {k: total[k] + part[k] for k in total}
        return total

    def stored_params(self) -> dict:
        """The coding parameters the file stores (tiled models: the tile size used, too)."""
        params = self.params.to_dict()
        if self.arch.tiled:
            params["tile"] = self.params.tile or self.loaded.config.get("patch")
        return params


MAP_KEYS = ("scale_shifts", "scale_slopes", "output_offsets")  # the stored scale maps


def make_codec(loaded, coding: dict | None = None, shape=None):
    """The batched codec for ``loaded`` (for images of ``shape``, needed for colour models)."""
    if shape is None:
        shape = (1, loaded.config.get("height", 28), loaded.config.get("width", 28))
    return Layout(loaded, shape, coding).codecs()[0]
