"""Deterministic float64 math for entropy models.

Encoder and decoder must compute *bit-identical* integer frequencies, whatever the thread count,
the tensor shapes the work happens to be batched in, or the device. Library transcendental
functions (``torch.exp``, ``torch.sigmoid``, ...) do not promise that: vectorised and scalar code
paths, CPU and GPU differ in the last bit, and one flipped ``floor`` corrupts everything decoded
after it. So every function here is built only from IEEE-754 basic operations (+, -, *, /, floor,
comparisons), each issued as its own elementwise torch op, which IEEE requires to round
correctly; and the few transcendental functions are monotone tables, generated once on the CPU by
a fixed sequence of such operations and then linearly interpolated.

Everything is float64. Tables give absolute errors below 1e-9, far below the 2**-31 resolution of
the coder; what matters is that results are reproducible and monotone non-decreasing in the
argument (so quantised CDFs never decrease).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

_LN2 = 0.6931471805599453


def _exp_np(x: np.ndarray) -> np.ndarray:
    """exp(x) for float64 arrays by range reduction and a Taylor polynomial (basic ops only)."""
    y = x * (1.0 / _LN2)
    n = np.floor(y + 0.5)
    f = (y - n) * _LN2  # |f| <= ln2/2
    p = np.ones_like(f)
    for k in range(17, 0, -1):  # Horner on sum f^k/k!
        p = p * f / k + 1.0
    n = np.clip(n, -1022, 1023).astype(np.int64)
    scale = ((n + 1023) << 52).view(np.float64)
    return p * scale


def _normal_cdf_np(t: np.ndarray) -> np.ndarray:
    """Standard normal CDF from basic ops: Taylor series near 0, Laplace continued fraction in
    the tails; absolute error below 1e-15 near 0 and relative error below 1e-12 in the tails."""
    t = np.asarray(t, dtype=np.float64)
    out = np.empty_like(t)
    pdf = _exp_np(-0.5 * t * t) * (1.0 / math.sqrt(2 * math.pi))
    near = np.abs(t) <= 5.0
    tn = t[near]
    term = tn.copy()
    total = tn.copy()
    for k in range(1, 200):
        term = term * tn * tn / (2 * k + 1)
        total = total + term
    out[near] = 0.5 + pdf[near] * total
    far = ~near
    a = np.abs(t[far])
    frac = np.zeros_like(a)
    for k in range(120, 0, -1):  # phi(a)/(a + 1/(a + 2/(a + ...)))
        frac = k / (a + frac)
    tail = pdf[far] / (a + frac)
    out[far] = np.where(t[far] < 0, tail, 1.0 - tail)
    return out


class MonotoneTable:
    """A monotone non-decreasing function tabulated on ``[lo, hi]`` with step ``2**-log2_steps``,
    evaluated by linear interpolation with clamping outside the range.

    Evaluation is deterministic (IEEE basic ops, one torch op at a time) and monotone in ``t``:
    within a cell ``T[i] + w*(T[i+1]-T[i])`` is monotone in ``w`` and never exceeds ``T[i+1]``
    (adjacent entries differ by an exactly representable amount for the smooth functions used here,
    which :meth:`__init__` checks).
    """

    def __init__(self, values: np.ndarray, lo: float, log2_steps: int):
        values = np.asarray(values, dtype=np.float64)
        if np.any(np.diff(values) < 0):
            raise ValueError("table is not monotone")
        self.lo = float(lo)
        self.scale = float(2 ** log2_steps)
        self.size = values.size
        deltas = np.diff(values, append=values[-1])
        if not np.array_equal(values[:-1] + deltas[:-1], values[1:]):
            raise ValueError("table deltas are not exact")
        self._pairs = torch.from_numpy(np.stack([values, deltas], 1).copy())  # (value, delta) rows
        self._cache = {}

    def _on(self, device):
        key = str(device)
        if key not in self._cache:
            pairs = self._pairs.to(device)
            self._cache[key] = (pairs[:, 0].contiguous(), pairs[:, 1].contiguous())
        return self._cache[key]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.at_coordinate((t - self.lo) * self.scale)

    def coordinate_map(self, scale: torch.Tensor, offset: torch.Tensor):
        """For ``t = x * scale + offset``, the (slope, intercept) of the table coordinate
        ``(t - lo) * 2**log2_steps`` as a function of ``x``; evaluate with
        ``at_coordinate(x * slope + intercept)`` (one multiply-add fewer per call)."""
        slope = scale * self.scale
        return slope, (offset - self.lo) * self.scale

    def at_coordinate(self, u: torch.Tensor) -> torch.Tensor:
        """The function at table coordinate ``u`` (index units, clamped to the table)."""
        values, deltas = self._on(u.device)
        u = torch.clamp(u, 0.0, float(self.size - 1))
        cell = torch.floor(u)
        idx = cell.to(torch.int64)
        return torch.take(values, idx) + (u - cell) * torch.take(deltas, idx)


@functools.lru_cache(maxsize=None)
def sigmoid_table() -> MonotoneTable:
    """Logistic sigmoid on [-20, 20] at step 2**-9 (320 KB: stays in cache; interpolation error
    below 5e-8, and sigmoid(-20) ~ 2e-9 is far below the coder's resolution)."""
    k = 9
    t = np.arange(-20 * 2**k, 20 * 2**k + 1, dtype=np.float64) / 2**k
    neg = 1.0 / (1.0 + _exp_np(-np.abs(t)))
    values = np.where(t >= 0, neg, 1.0 - neg)
    # 1 - x is exact for x in [0.5, 1], so the left half is as accurate as the right
    values = np.where(t < 0, _exp_np(t) / (1.0 + _exp_np(t)), values)
    values = np.maximum.accumulate(values)
    return MonotoneTable(values, -20.0, k)


@functools.lru_cache(maxsize=None)
def normal_cdf_table() -> MonotoneTable:
    """Standard normal CDF on [-12, 12] at step 2**-11."""
    k = 11
    t = np.arange(-12 * 2**k, 12 * 2**k + 1, dtype=np.float64) / 2**k
    values = np.maximum.accumulate(_normal_cdf_np(t))
    return MonotoneTable(values, -12.0, k)


@functools.lru_cache(maxsize=None)
def exp_neg_table() -> MonotoneTable:
    """exp(t) on [-60, 0] at step 2**-9 (for softmax weights)."""
    k = 9
    t = np.arange(-60 * 2**k, 1, dtype=np.float64) / 2**k
    return MonotoneTable(np.maximum.accumulate(_exp_np(t)), -60.0, k)


@functools.lru_cache(maxsize=None)
def exp_table() -> MonotoneTable:
    """exp(t) on [-16, 16] at step 2**-11 (relative error below 1e-7; for scales)."""
    k = 11
    t = np.arange(-16 * 2**k, 16 * 2**k + 1, dtype=np.float64) / 2**k
    return MonotoneTable(np.maximum.accumulate(_exp_np(t)), -16.0, k)


def exp_scale(t: torch.Tensor) -> torch.Tensor:
    """Deterministic exp of float64 values in [-16, 16] (clamped), by table: for scales."""
    return exp_table()(t)


def sigmoid(t: torch.Tensor) -> torch.Tensor:
    """Deterministic logistic sigmoid of a float64 tensor."""
    return sigmoid_table()(t)


def normal_cdf(t: torch.Tensor) -> torch.Tensor:
    """Deterministic standard normal CDF of a float64 tensor."""
    return normal_cdf_table()(t)


def exp_nonpositive(t: torch.Tensor) -> torch.Tensor:
    """Deterministic exp of a float64 tensor of values <= 0 (values below -60 give ~0)."""
    return exp_neg_table()(torch.clamp(t, max=0.0))


def exp(t: torch.Tensor) -> torch.Tensor:
    """Deterministic exp of a float64 tensor (basic-op polynomial; not a table)."""
    y = t * (1.0 / _LN2)
    n = torch.floor(y + 0.5)
    f = (y - n) * _LN2
    p = torch.ones_like(f)
    for k in range(17, 0, -1):
        p = p * f / k + 1.0
    n = torch.clamp(n, -1022, 1023).to(torch.int64)
    return p * ((n + 1023) << 52).view(torch.float64)


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Deterministic softmax: max-shifted table exp, then a sequential sum in index order."""
    logits = logits.to(torch.float64)
    shifted = logits - logits.amax(dim=dim, keepdim=True)
    e = exp_nonpositive(shifted)
    moved = e.movedim(dim, 0)
    total = moved[0].clone()
    for i in range(1, moved.shape[0]):
        total = total + moved[i]
    return e / total.unsqueeze(dim)


@functools.lru_cache(maxsize=None)
def _normal_quantiles(count: int) -> np.ndarray:
    """``Phi^-1(i / count)`` for ``i = 1..count-1`` under the tabulated CDF, by bisection."""
    table = normal_cdf_table()
    target = np.arange(1, count, dtype=np.float64) / count
    lo = np.full(count - 1, -12.0)
    hi = np.full(count - 1, 12.0)
    values = table._pairs[:, 0].numpy()
    deltas = table._pairs[:, 1].numpy()

    def cdf(t):
        u = np.clip((t - table.lo) * table.scale, 0.0, table.size - 1.0)
        cell = np.floor(u)
        idx = cell.astype(np.int64)
        return values[idx] + (u - cell) * deltas[idx]

    for _ in range(80):
        mid = (lo + hi) * 0.5
        below = cdf(mid) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return hi


@functools.lru_cache(maxsize=None)
def _max_entropy_bins(bits: int):
    k = 1 << bits
    edges = _normal_quantiles(k)  # interior edges, k-1 of them
    centres = _normal_quantiles(2 * k)[0::2]  # Phi^-1((2i+1)/(2k))
    return torch.from_numpy(edges.copy()), torch.from_numpy(centres.copy())


def max_entropy_bins(bits: int, device=None):
    """Edges (``2**bits - 1`` interior ones) and centres (``2**bits``) of the bins that split the
    standard normal into equal-mass parts, as float64 tensors on ``device``."""
    edges, centres = _max_entropy_bins(bits)
    return edges.to(device), centres.to(device)
