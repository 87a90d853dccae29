"""Compiled CPU kernels for the entropy models' hot loops (numba), bit-identical to torch.

The torch implementations in :mod:`bbcodec.entropy_models` are the reference: they run on every
device and define the integers a file's code depends on. For CPU tensors, the per-symbol work of
the costliest models (a logistic mixture's quantised CDF at two points per encoded symbol, and a
search of it per decoded symbol) runs here instead, as one compiled loop over the lanes rather
than a dozen torch calls per bisection round.

Why the results are identical, not just close: every kernel issues the reference's IEEE-754
float64 operations (multiply, add, subtract, floor, comparisons) on the same operands in the same
order, and numba compiles without fast-math, so nothing is reassociated or fused into FMAs; the
rest is int64 arithmetic. ``tests/test_kernels.py`` checks equality against the torch path on
random and extreme parameters, and the golden files check it against files written before the
kernels existed.

Set ``BBCODEC_KERNELS=torch`` to use the torch reference everywhere (slower, same output).
"""

from __future__ import annotations

import os

import numpy as np
import torch

try:  # numba is a dependency; without it (or when disabled) the torch reference runs
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None


def enabled(*tensors: torch.Tensor) -> bool:
    """Whether the kernels serve these tensors: numba present, not disabled, all on the CPU."""
    return (numba is not None and os.environ.get("BBCODEC_KERNELS", "") != "torch"
            and all(t.device.type == "cpu" for t in tensors))


def _array(t: torch.Tensor, dtype) -> np.ndarray:
    """A C-contiguous numpy view (or copy) of a CPU tensor."""
    return np.ascontiguousarray(t.detach().to(dtype).numpy())


if numba is not None:
    _jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")

    @_jit
    def _mixture_cdf(i, slopes, intercepts, weights, low_units, values, deltas, n, precision, lane):
        """``C(i)`` of lane ``lane``: the same operations as ``LogisticMixture.cumulative``."""
        if i <= 0:
            return np.int64(0)
        if i >= n:
            return np.int64(1) << precision
        x = float(i)
        x = min(max(x, 1.0), float(n - 1))
        top = float(values.shape[0] - 1)
        f = np.int64(0)
        for k in range(slopes.shape[1]):
            u = x * slopes[lane, k] + intercepts[lane, k]
            u = min(max(u, 0.0), top)
            cell = np.floor(u)
            idx = np.int64(cell)
            s = values[idx] + (u - cell) * deltas[idx]
            f += np.int64(np.floor(s * weights[lane, k] * 4294967296.0))
        f = f + low_units[lane]
        f = min(max(f, np.int64(0)), np.int64(1) << 32)
        return ((f * ((np.int64(1) << precision) - n)) >> 32) + i

    @_jit
    def _mixture_interval(symbols, slopes, intercepts, weights, low_units, values, deltas, n, precision):
        lanes = symbols.shape[0]
        start = np.empty(lanes, dtype=np.int64)
        freq = np.empty(lanes, dtype=np.int64)
        for j in range(lanes):
            s = symbols[j]
            lo = _mixture_cdf(s, slopes, intercepts, weights, low_units, values, deltas, n, precision, j)
            hi = _mixture_cdf(s + 1, slopes, intercepts, weights, low_units, values, deltas, n, precision, j)
            start[j] = lo
            freq[j] = hi - lo
        return start, freq

    @_jit
    def _mixture_lookup(slots, slopes, intercepts, weights, low_units, values, deltas, n, precision):
        """Per lane, the largest ``i`` with ``C(i) <= slot`` (``C`` strictly increasing, so
        unique), by probing the end symbols (often most of the mass) and then bisecting."""
        lanes = slots.shape[0]
        sym = np.empty(lanes, dtype=np.int64)
        start = np.empty(lanes, dtype=np.int64)
        freq = np.empty(lanes, dtype=np.int64)
        for j in range(lanes):
            slot = slots[j]
            lo, hi = 0, n
            c_lo, c_hi = np.int64(0), np.int64(1) << precision
            c1 = _mixture_cdf(1, slopes, intercepts, weights, low_units, values, deltas, n, precision, j)
            if slot < c1:
                hi, c_hi = 1, c1
            else:
                lo, c_lo = 1, c1
                c_last = _mixture_cdf(n - 1, slopes, intercepts, weights, low_units, values, deltas, n, precision, j)
                if slot >= c_last:
                    lo, c_lo = n - 1, c_last
                else:
                    hi, c_hi = n - 1, c_last
            while hi - lo > 1:
                mid = (lo + hi) >> 1
                c = _mixture_cdf(mid, slopes, intercepts, weights, low_units, values, deltas, n, precision, j)
                if c <= slot:
                    lo, c_lo = mid, c
                else:
                    hi, c_hi = mid, c
            sym[j] = lo
            start[j] = c_lo
            freq[j] = c_hi - c_lo
        return sym, start, freq


class MixtureArrays:
    """A logistic mixture's parameters flattened to ``(lanes, components)`` numpy arrays, with the
    sigmoid table, as the kernels take them."""

    def __init__(self, model):
        from . import detmath

        k = model.slopes.shape[-1]
        self.slopes = _array(model.slopes.reshape(-1, k), torch.float64)
        self.intercepts = _array(model.intercepts.reshape(-1, k), torch.float64)
        self.weights = _array(model.weights.reshape(-1, k), torch.float64)
        self.low_units = _array(model._low_units.reshape(-1), torch.int64)
        values, deltas = detmath.sigmoid_table()._on(torch.device("cpu"))
        self.values, self.deltas = values.numpy(), deltas.numpy()
        self.n, self.precision = int(model.n), int(model.precision)

    def _args(self):
        return (self.slopes, self.intercepts, self.weights, self.low_units, self.values, self.deltas,
                self.n, self.precision)


def mixture_interval(model, symbols: torch.Tensor):
    """``(start, freq)`` of ``symbols`` (the model's batch shape) under a ``LogisticMixture``."""
    arrays = MixtureArrays(model)
    start, freq = _mixture_interval(_array(symbols.reshape(-1), torch.int64), *arrays._args())
    return torch.from_numpy(start).reshape(symbols.shape), torch.from_numpy(freq).reshape(symbols.shape)


def mixture_lookup(model, slots: torch.Tensor):
    """``(symbols, start, freq)`` for ``slots`` (the model's batch shape) under a ``LogisticMixture``."""
    arrays = MixtureArrays(model)
    sym, start, freq = _mixture_lookup(_array(slots.reshape(-1), torch.int64), *arrays._args())
    shape = slots.shape
    return (torch.from_numpy(sym).reshape(shape), torch.from_numpy(start).reshape(shape),
            torch.from_numpy(freq).reshape(shape))
