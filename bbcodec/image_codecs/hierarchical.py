"""Coding colour tiles with a :class:`~bbcodec.models.hierarchical_vae.HierarchicalVAE`.

Its likelihood is autoregressive over fifteen pixel *groups* (the model calls them steps: per
pixel level coarse to fine, one per channel), as the context VAE's is over four.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch

from .. import codecs as C
from .. import detmath
from .. import entropy_models as em
from ..coding_params import CodingParams
from ..models.fixedpoint import ExactNumerics, to_grid
from ..protocol import BitsBackModel
from ..scale_maps import scale_map
from .ahead import rows_ahead
from .generic import ProtocolCodec


class _KnownPixels:
    """The known sub-pixels that a batch's heads read (:meth:`HierarchicalVAE.known_from_parts`),
    kept for the batch and filled step by step as the groups are popped, instead of rebuilt for
    every group. A head reads only the steps before its own, so steps filled beyond what a group
    was given (pushes go last group first, with every step known) change nothing it reads."""

    def __init__(self, net, tile: int):
        self.net, self.tile, self.matrix, self.parts = net, tile, None, ()

    def of(self, parts: tuple) -> torch.Tensor:
        """A matrix holding at least the steps ``parts`` (the groups before the one being coded)."""
        t = self.tile
        same = parts and self.parts and all(a is b for a, b in zip(parts, self.parts))
        if not same:
            self.matrix, self.parts = self.net.known_from_parts(parts, t, t), tuple(parts)
        elif len(parts) > len(self.parts):
            self.net.fill_known(self.matrix, parts[len(self.parts):], t, t, start=len(self.parts))
            self.parts = tuple(parts)
        return self.matrix


class _Copy(C.Codec):
    """A group whose symbols are a known function of earlier groups: costs nothing."""

    def __init__(self, value):
        self.value = value

    def push(self, message, symbols) -> None:
        if not torch.equal(torch.as_tensor(symbols), self.value):
            raise em.ModelError("symbols differ from the value implied by earlier groups")

    def pop(self, message):
        return self.value


class HierarchicalVAEBitsBack(BitsBackModel):
    """A :class:`~bbcodec.models.hierarchical_vae.HierarchicalVAE` network as a protocol model
    for ``tile x tile`` tiles, evaluated in exact numerics.

    Two latent layers in HiLLoC order: ``z2`` on N(0, 1)'s max-entropy bins, then ``z1`` on the
    bins of equal mass under ``p(z1|z2)`` (so both priors are uniform bin indices). The likelihood
    codes the sub-pixel groups coarse to fine, each log-scale mapped by its scale map. With
    ``grey`` only the first channel's groups are coded (the others are copies of it); with
    ``given`` tiles (:meth:`likelihood`) the first pixel level (every fourth pixel of every fourth
    row, all channels) is taken from them instead of being coded.
    """

    takes_given = True

    def __init__(self, net, tile: int, precision: int = 24, grey: bool = False, scale_maps=None):
        cfg = net.config
        self.net, self.num, self.tile, self.grey = net, ExactNumerics(), tile, grey
        self.image_shape, self.pixels = (cfg.channels, tile, tile), "uint8"
        self.latent_shapes = ((cfg.z2_channels, tile // 4, tile // 4), (cfg.z1_channels, tile // 2, tile // 2))
        self.latent_bits, self.precision = cfg.latent_bits, precision
        self.scale_maps = scale_maps
        self.given_groups = cfg.channels  # the first level: one group per channel
        self.elbo_batch = max(1, int(200 * (cfg.patch / tile) ** 2))
        self._cached = (None, None)
        self._prior_cached = (None, None)
        self._ahead = None

    def _posterior_parameters(self, x):
        """``q(z|x)``'s parameters, computed once for the two layers popped (or pushed) in turn."""
        if self._cached[0] is not x:
            ahead = self._ahead.rows(x) if self._ahead is not None else None
            self._cached = (x, ahead if ahead is not None else self._posterior_of(x))
        return self._cached[1]

    @contextlib.contextmanager
    def posteriors_ahead(self, units: torch.Tensor, batch: int):
        """While in the context, ``q(z|x)``'s parameters of ``units`` (int64 tiles ``(N, C, T, T)``)
        are computed ``batch`` tiles at a time, in order, in a worker thread (:class:`.ahead.RowsAhead`)
        where a CPU is spare for it, and a batch that is a run of rows of ``units`` takes them from
        there: the encoder's posteriors do not depend on the message. The exact networks compute
        every tile on its own, so the values are those of the batch's own call (the golden files
        check the bytes)."""
        with rows_ahead(units, batch, self._posterior_of) as ahead:
            self._ahead = ahead
            try:
                yield
            finally:
                self._ahead = None

    def _posterior_of(self, x):
        """((mean, scale) of z1, (mean, scale) of z2) under the posterior, per block of rows."""
        def rows(x):
            (m1, log_s1), (m2, log_s2) = self.net.posterior(x, self.num)
            return (m1, detmath.exp_scale(log_s1)), (m2, detmath.exp_scale(log_s2))
        return self.num.by_rows(rows, x)

    def _prior1(self, z2_bins):
        """``p(z1|z2)``'s (mean, scale), kept for the last ``z2_bins``: a batch asks for them two
        or three times (z1's bins when it is popped or pushed, then the likelihood's features)."""
        last, found = self._prior_cached
        if last is not None and last.shape == z2_bins.shape and torch.equal(last, z2_bins):
            return found
        z2 = to_grid(em.bin_centres(z2_bins, self.latent_bits))

        def rows(z2):
            pm, log_ps = self.net.prior1(z2, self.num)
            return pm, detmath.exp_scale(log_ps)
        found = self.num.by_rows(rows, z2)
        self._prior_cached = (z2_bins.clone(), found)
        return found

    def posterior(self, x, layer, above):
        (m1, s1), (m2, s2) = self._posterior_parameters(x)
        if layer == 0:
            return em.GaussianOnBins(m2, s2, self.latent_bits, precision=self.precision)
        pm, ps = self._prior1(above[0])
        return em.GaussianOnBins(m1, s1, self.latent_bits, pm, ps, precision=self.precision)

    def _group_codec(self, group, feats, previous, given_parts, known):
        channels = self.net.config.channels
        if given_parts is not None and group < self.given_groups:
            return _Copy(given_parts[group])
        if self.grey and group % channels:
            return _Copy(previous[group - group % channels])
        t, scale_map = self.tile, self.scale_maps[group]

        def entropy_model(f, known_rows):  # built per block of rows, where the head's output is in cache
            raw = self.net.head(group, f, known_rows, t, t, self.num)
            return self.net.likelihood.entropy_model(raw, self.precision, scale_map)

        return C.Spread(self.num.by_rows(entropy_model, feats, known.of(previous)))

    def likelihood(self, latents, given=None):
        z2_bins, z1_bins = latents
        pm, ps = self._prior1(z2_bins)
        z1 = to_grid(em.bin_centres(z1_bins, self.latent_bits, pm, ps))
        feats = self.num.by_rows(lambda rows: self.net.features(rows, self.num), z1)
        given_parts = None if given is None else self.net.split_steps(given)
        known = _KnownPixels(self.net, self.tile)
        groups = C.AutoregressiveGroups(lambda g, prev: self._group_codec(g, feats, prev, given_parts, known),
                                        self.net.steps)
        return C.Transform(groups, self.net.split_steps, lambda parts: self.net.join_steps(parts, self.tile, self.tile))

    def coded_groups(self, given: bool) -> list[int]:
        """The pixel groups that are coded: not given, and not copies of the first channel."""
        channels = self.net.config.channels
        first = self.given_groups if given else 0
        return [g for g in range(first, self.net.steps) if not (self.grey and g % channels)]

    def negative_elbo(self, x, generator=None, given: bool = False):
        """The network's own definition over the coded groups (with ``given``: not the first level)."""
        return self.net.negative_elbo(x, self.num, generator, steps=self.coded_groups(given), scale_maps=self.scale_maps)


class HierarchicalVAECodec(ProtocolCodec):
    """Codes uint8 colour tiles ``(N, C, T, T)`` with a :class:`HierarchicalVAE` (through
    :class:`HierarchicalVAEBitsBack`).

    ``tile`` (a multiple of 4; default the model's training patch) is the coded unit's size: the
    networks are fully convolutional, and larger tiles lose less context at their borders. The
    per-image estimates in ``params`` are per training patch and are scaled to the tile's area.
    ``scale_shifts`` and ``scale_slopes`` (one integer per pixel group each, default zeros) and
    ``output_offsets`` (``nout`` integers per group in turn, default zeros) are each group's scale
    map (:mod:`bbcodec.scale_maps`).
    """

    def __init__(self, model, params: CodingParams | None = None, grey: bool = False,
                 tile: int | None = None, scale_shifts=None, scale_slopes=None, output_offsets=None):
        groups, nout = model.steps, model.likelihood.nout
        shifts, slopes = tuple(scale_shifts or (0,) * groups), tuple(scale_slopes or (0,) * groups)
        offsets = tuple(output_offsets or ())
        if len(shifts) != groups or len(slopes) != groups or len(offsets) not in (0, groups * nout):
            raise ValueError(f"scale shifts, slopes and output offsets must be given for all {groups} pixel steps")
        t = int(tile or model.config.patch)
        if t < 4 or t % 4:
            raise ValueError(f"tile size {t} is not a positive multiple of 4")
        pp = params or CodingParams()
        area = (t / model.config.patch) ** 2
        params = replace(pp, batch=max(1, int(pp.batch / area)), bits_per_image=pp.bits_per_image * area,
                         pop_bits_per_image=pp.pop_bits_per_image * area,
                         lanes_per_image=max(1, round(pp.lanes_per_image * area)))
        per_group = [offsets[g * nout:(g + 1) * nout] for g in range(groups)]
        maps = [scale_map(shift, slope, own if any(own) else None) for shift, slope, own in zip(shifts, slopes, per_group)]
        super().__init__(HierarchicalVAEBitsBack(model, t, params.precision, grey, maps), params)
        self.net, self.tile, self.grey, self.scale_maps = model, t, grey, maps

    def sample_outputs(self, images: torch.Tensor, given: bool = False) -> dict:
        """For choosing scale maps: ``{group: (sub-pixels (M,), raw parameters (M, nout))}`` of the
        coded groups of tiles ``images``, given a posterior sample of their latents (exact networks)."""
        net, num, t = self.net, self.model.num, self.tile
        with torch.inference_mode():
            x = images.to(torch.int64)
            (m1, log_s1), _ = net.posterior(x, num)
            # the latents coding sees are posterior samples (bits-back), whose outputs are less
            # sure than the posterior mean's: maps fitted to those carry over to the code
            z1 = m1 + torch.randn(m1.shape, generator=torch.Generator().manual_seed(0), dtype=m1.dtype) * torch.exp(log_s1)
            feats = net.features(to_grid(z1), num)
            parts = net.split_steps(x)
            known = net.known_from_image(x)
            out = {}
            for group in self.model.coded_groups(given):
                raw = net.head(group, feats, known, t, t, num)
                out[group] = (parts[group].reshape(-1), raw.reshape(-1, raw.shape[-1]))
            return out
