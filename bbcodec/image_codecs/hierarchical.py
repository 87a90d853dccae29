"""Coding colour tiles with a :class:`~bbcodec.models.hierarchical_vae.HierarchicalVAE`.

Its likelihood is autoregressive over fifteen pixel *groups* (the model calls them steps: per
pixel level coarse to fine, one per channel), as the context VAE's is over four.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .. import codecs as C
from .. import detmath
from .. import entropy_models as em
from ..coding_params import CodingParams
from ..models.fixedpoint import to_grid
from ..scale_maps import scale_map
from ..segments import ELBO_SEED
from .base import BatchedImageCodec


class _Copy(C.Codec):
    """A group whose symbols are a known function of earlier groups: costs nothing."""

    def __init__(self, value):
        self.value = value

    def push(self, message, symbols) -> None:
        if not torch.equal(torch.as_tensor(symbols), self.value):
            raise em.ModelError("symbols differ from the value implied by earlier groups")

    def pop(self, message):
        return self.value


class HierarchicalVAECodec(BatchedImageCodec):
    """Codes uint8 colour tiles ``(N, C, T, T)`` with a :class:`HierarchicalVAE`.

    One batch is one bits-back step over the latent pair ``(z2, z1)`` (HiLLoC order): pop ``z2``
    with ``q(z2|x)`` on N(0, 1)'s max-entropy bins, pop ``z1`` with ``q(z1|x)`` on the bins of equal
    mass under ``p(z1|z2)``, push the sub-pixel groups, push ``z1`` and ``z2`` as uniform bin
    indices. With ``grey=True`` only the first channel is coded; the others are copies of it.

    ``tile`` (a multiple of 4; default the model's training patch) is the coded unit's size: the
    networks are fully convolutional, and larger tiles lose less context at their borders. The
    per-image estimates in ``params`` are per training patch and are scaled to the tile's area.
    With ``given`` tiles (see :meth:`_batch_codec`), the first pixel level (every fourth pixel of
    every fourth row, all channels) is taken from them instead of being coded. ``scale_shifts``
    and ``scale_slopes`` (one integer per pixel group each, default zeros) map each group's
    log-scales (:mod:`bbcodec.scale_maps`).
    """

    def __init__(self, model, params: CodingParams | None = None, grey: bool = False,
                 tile: int | None = None, scale_shifts=None, scale_slopes=None):
        super().__init__(model, params)
        groups = model.steps
        shifts, slopes = tuple(scale_shifts or (0,) * groups), tuple(scale_slopes or (0,) * groups)
        if len(shifts) != groups or len(slopes) != groups:
            raise ValueError(f"scale shifts and slopes must be given for all {groups} pixel steps")
        self.scale_maps = [scale_map(shift, slope) for shift, slope in zip(shifts, slopes)]
        self.bits = self.cfg.latent_bits
        self.grey = grey
        t = self.tile = int(tile or self.cfg.patch)
        if t < 4 or t % 4:
            raise ValueError(f"tile size {t} is not a positive multiple of 4")
        area = (t / self.cfg.patch) ** 2
        pp = self.params
        self.params = replace(pp, batch=max(1, int(pp.batch / area)), bits_per_image=pp.bits_per_image * area,
                              pop_bits_per_image=pp.pop_bits_per_image * area,
                              lanes_per_image=max(1, round(pp.lanes_per_image * area)))
        self.z1_shape = (self.cfg.z1_channels, t // 2, t // 2)
        self.z2_shape = (self.cfg.z2_channels, t // 4, t // 4)
        self.given_groups = self.cfg.channels  # the first level: one group per channel

    def image_shape(self):
        return (self.cfg.channels, self.tile, self.tile)

    def _z2_values(self, bins):
        return to_grid(em.bin_centres(bins, self.bits))

    def _prior1(self, z2_bins):
        pm, log_ps = self.model.prior1(self._z2_values(z2_bins), self.num)
        return pm, detmath.exp_scale(log_ps)

    def _posterior(self, x):
        (m1, s1), (m2, s2) = self.model.posterior(x, self.num)
        p = self.params.precision

        def layer(i, previous):
            if i == 0:
                return C.Spread(em.GaussianOnBins(m2, detmath.exp_scale(s2), self.bits, precision=p))
            pm, ps = self._prior1(previous[0])
            return C.Spread(em.GaussianOnBins(m1, detmath.exp_scale(s1), self.bits, pm, ps, precision=p))

        return C.AutoregressiveGroups(layer, 2)

    def _prior(self, size):
        return C.Sequence([C.Spread(em.Uniform(1 << self.bits, (size,) + self.z2_shape)),
                           C.Spread(em.Uniform(1 << self.bits, (size,) + self.z1_shape))])

    def _group_codec(self, group, feats, previous, given_parts):
        if given_parts is not None and group < self.given_groups:
            return _Copy(given_parts[group])
        if self.grey and group % self.cfg.channels:
            return _Copy(previous[group - group % self.cfg.channels])
        t = self.tile
        raw = self.model.head(group, feats, self.model.known_from_parts(previous, t, t), t, t, self.num)
        return C.Spread(self.model.likelihood.entropy_model(raw, self.params.precision, self.scale_maps[group]))

    def _coded_groups(self, given: bool) -> list[int]:
        """The pixel groups that are coded: not given, and not copies of the first channel."""
        first = self.given_groups if given else 0
        return [g for g in range(first, self.model.steps) if not (self.grey and g % self.cfg.channels)]

    def _head_outputs(self, x, z1, given: bool):
        """``(group, sub-pixels, raw likelihood parameters)`` of each coded group of tiles ``x``."""
        t = self.tile
        feats = self.model.features(z1, self.num)
        parts = self.model.split_steps(x)
        known = self.model.known_from_image(x)
        for group in self._coded_groups(given):
            yield group, parts[group], self.model.head(group, feats, known, t, t, self.num)

    def sample_outputs(self, images: torch.Tensor, given: bool = False) -> dict:
        """For choosing scale maps: ``{group: (sub-pixels (M,), raw parameters (M, nout))}`` of the
        coded groups of tiles ``images``, decoded from their posterior means (exact networks)."""
        with torch.inference_mode():
            x = images.to(torch.int64)
            (m1, _), _ = self.model.posterior(x, self.num)
            return {group: (sym.reshape(-1), raw.reshape(-1, raw.shape[-1]))
                    for group, sym, raw in self._head_outputs(x, to_grid(m1), given)}

    def _likelihood(self, z, given=None):
        z2_bins, z1_bins = z
        pm, ps = self._prior1(z2_bins)
        z1 = to_grid(em.bin_centres(z1_bins, self.bits, pm, ps))
        feats = self.model.features(z1, self.num)
        given_parts = None if given is None else self._split(given)
        return C.AutoregressiveGroups(lambda g, prev: self._group_codec(g, feats, prev, given_parts), self.model.steps)

    def _split(self, x):
        return self.model.split_steps(x)

    def _join(self, parts):
        return self.model.join_steps(parts, self.tile, self.tile)

    def _fixed_latents(self, size):
        centre = 1 << (self.bits - 1)
        return (torch.full((size,) + self.z2_shape, centre, dtype=torch.int64),
                torch.full((size,) + self.z1_shape, centre, dtype=torch.int64))

    def negative_elbo(self, images: torch.Tensor, batch: int = 200, seed: int = ELBO_SEED, given: bool = False) -> dict:
        """Negative ELBO in bits (exact networks, analytic KLs given one seeded z2 sample, one z1
        sample), summed over tiles. In grey mode only the first channel's terms count; with
        ``given`` the first level's terms do not count."""
        from ..models.hierarchical_vae import gaussian_kl

        gen = torch.Generator().manual_seed(seed)
        kl_bits = nll_bits = 0.0
        lik = self.model.likelihood
        batch = max(1, int(batch * (self.cfg.patch / self.tile) ** 2))
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = images[i: i + batch].to(torch.int64)
                (m1, s1), (m2, s2) = self.model.posterior(x, self.num)
                z2 = to_grid(m2 + torch.randn(m2.shape, generator=gen, dtype=torch.float64) * torch.exp(s2))
                pm, log_ps = self.model.prior1(z2, self.num)
                z1 = to_grid(m1 + torch.randn(m1.shape, generator=gen, dtype=torch.float64) * torch.exp(s1))
                kl = gaussian_kl(m1, s1, pm, log_ps).sum() + gaussian_kl(m2, s2, 0.0, 0.0).sum()
                for group, sym, raw in self._head_outputs(x, z1, given):
                    nll_bits -= lik.log_prob(sym, raw, self.scale_maps[group]).sum().item() / math.log(2)
                kl_bits += kl.item() / math.log(2)
        return {"kl_bits": kl_bits, "nll_bits": nll_bits, "bits": kl_bits + nll_bits}
