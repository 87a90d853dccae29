"""Pixel likelihoods: raw network outputs to (training log-probability, coding entropy model).

Each likelihood maps the last axis of a head's output (``nout`` values per pixel) both to a
differentiable float32 log-probability for training and to a :mod:`bbcodec.entropy_models` model
built with deterministic float64 math for coding. The two describe the same distribution, so the
trained negative ELBO is what coding achieves.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import entropy_models as em

LOG_SCALE_OFFSET = math.log(127.5)  # raw log-scales are in units of half the pixel range
LOG_SCALE_MIN = -4.0  # scales of at least exp(-4) ~ 0.018 pixel
LOG_SCALE_MAX = 7.0


class ScaleMap(NamedTuple):
    """How coders adapt a model's outputs to the data: ``offsets`` (a tensor of ``nout`` values, or
    None) are added to the raw outputs, then ``log_scale -> slope * log_scale + shift`` maps the
    natural-log scales (in pixel levels, so the pivot is a scale of one level). ``slope`` and
    ``shift``: floats, or tensors that broadcast against the scales (to try several maps at once).
    Offsets on the activation grid keep coding's float64 raw outputs exact."""

    slope: float = 1.0
    shift: float = 0.0
    offsets: torch.Tensor | None = None


def with_offsets(raw: torch.Tensor, scale_map: ScaleMap | None) -> torch.Tensor:
    """``raw`` plus the map's output offsets (``raw`` itself without them)."""
    if scale_map is None or scale_map.offsets is None:
        return raw
    return raw + scale_map.offsets.to(raw)


def _logsumexp_rows(t: torch.Tensor) -> torch.Tensor:
    """``log(sum(exp(t), 0))`` of a ``(rows, N)`` tensor, elementwise over its long rows (the
    maximum is a constant for autograd)."""
    top = t.amax(0).detach()
    return top + torch.log(torch.exp(t - top).sum(0))


class Likelihood:
    """``scale_map`` (where a likelihood has scales, else ignored): a :class:`ScaleMap` applied to
    every log-scale, or None."""

    nout: int
    name: str

    def log_prob(self, x: torch.Tensor, raw: torch.Tensor, scale_map: ScaleMap | None = None) -> torch.Tensor:
        raise NotImplementedError

    def entropy_model(self, raw: torch.Tensor, precision: int, scale_map: ScaleMap | None = None) -> em.EntropyModel:
        raise NotImplementedError


class LogisticMixtureLikelihood(Likelihood):
    """``components`` discretised logistics over 0..255, plus (``end_masses``) point masses at 0
    and 255. Raw outputs: mixture logits (components [+2]), then means, then log-scales, with
    ``mean = 127.5 * (raw + 1)`` and ``log_scale = raw + log(127.5)`` (then ``scale_map``, then
    clamped)."""

    def __init__(self, components: int = 1, end_masses: bool = True, n: int = 256):
        self.components, self.end_masses, self.n = components, end_masses, n
        self.nlogits = components + (2 if end_masses else 0)
        self.nout = self.nlogits + 2 * components
        self.name = "logistic_mixture"

    def _split(self, raw, scale_map=None):
        k, m = self.components, self.nlogits
        raw = with_offsets(raw, scale_map)
        logits = raw[..., :m]
        means = 127.5 * (raw[..., m: m + k] + 1.0)
        log_scales = raw[..., m + k: m + 2 * k] + LOG_SCALE_OFFSET
        if scale_map is not None:
            log_scales = log_scales * scale_map.slope + scale_map.shift
        return logits, means, torch.clamp(log_scales, LOG_SCALE_MIN, LOG_SCALE_MAX)

    def log_prob(self, x, raw, scale_map=None):
        """Each component's log-probability of its bin, ``log(sigmoid(u) - sigmoid(l))`` (the
        log-density where that difference is below 1e-5; the one-sided tail at 0 and ``n - 1``),
        laid out component-major so that every step is elementwise over long rows. In ``raw``'s
        dtype (float32 with autograd for training and the scale maps' fit, float64 for coding's
        negative ELBO)."""
        k, m, n = self.components, self.nlogits, self.n
        shape = x.shape
        x = x.reshape(-1)
        # one copy to parameter-major rows (nout, N): every step below is elementwise over long
        # contiguous rows, the log-softmax too (a reduction over 6 strided values per pixel is slow)
        raw = with_offsets(raw, scale_map).reshape(-1, raw.shape[-1]).t().contiguous()
        logits, means, log_scales = raw.split([m, k, k])  # split, not slices: one backward for all three
        log_w = logits - _logsumexp_rows(logits)  # (m, N)
        weights = log_w[:k]  # (K, N), as everything below
        log_scales = log_scales + LOG_SCALE_OFFSET
        if scale_map is not None:
            log_scales = log_scales * scale_map.slope + scale_map.shift
        log_scales = torch.clamp(log_scales, LOG_SCALE_MIN, LOG_SCALE_MAX)
        centred = x.to(raw.dtype).unsqueeze(0) - 127.5 * (means + 1.0)
        first = x == 0
        edge = torch.nonzero(first | (x == n - 1)).squeeze(1)  # the one-sided bins
        at_first = first[edge]
        inv = torch.exp(-log_scales)
        mid, half = centred * inv, 0.5 * inv
        diff = torch.sigmoid(mid + half) - torch.sigmoid(mid - half)
        log_pdf = mid - log_scales - 2 * F.softplus(mid)
        out = torch.where(diff > 1e-5, torch.log(diff.clamp(min=1e-12)), log_pdf)
        if edge.numel():
            me, he = mid[:, edge], half[:, edge]
            out[:, edge] = torch.where(at_first, F.logsigmoid(me + he), F.logsigmoid(he - me))
        total = _logsumexp_rows(out + weights)
        if self.end_masses and edge.numel():
            ends = torch.where(at_first, log_w[-2, edge], log_w[-1, edge])
            total[edge] = torch.logaddexp(total[edge], ends)
        return total.reshape(shape)

    def entropy_model(self, raw, precision, scale_map=None):
        logits, means, log_scales = self._split(raw.to(torch.float64), scale_map)
        return em.LogisticMixture(means, log_scales=log_scales, logits=logits, n=self.n,
                                  precision=precision, end_masses=self.end_masses)


class BernoulliLikelihood(Likelihood):
    """Binary pixels: one logit per pixel. Coded ``pack`` pixels per rANS step
    (:class:`bbcodec.entropy_models.PackedBernoulli`)."""

    nout = 1
    name = "bernoulli"

    def log_prob(self, x, raw, scale_map=None):
        return -F.binary_cross_entropy_with_logits(raw[..., 0], x.to(raw.dtype), reduction="none")

    def entropy_model(self, raw, precision, scale_map=None):
        return em.Bernoulli(logits=raw[..., 0].to(torch.float64), precision=precision)

    def packed_model(self, raw, pack: int, precision: int = 31) -> em.PackedBernoulli:
        """Pixels ``(..., m*pack)`` as ``m`` packed symbols of ``pack`` bits each."""
        logits = raw[..., 0].to(torch.float64)
        return em.PackedBernoulli(logits=logits.reshape(logits.shape[:-1] + (-1, pack)), precision=precision)


def make_likelihood(name: str, components: int = 1) -> Likelihood:
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "logistic_mixture":
        return LogisticMixtureLikelihood(components, end_masses=True)
    raise ValueError(f"unknown likelihood {name!r}")
