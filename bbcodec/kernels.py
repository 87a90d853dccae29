"""Compiled CPU kernels for the entropy models' hot loops (numba), bit-identical to torch.

The torch implementations in :mod:`bbcodec.entropy_models` and :mod:`bbcodec.ans` are the
reference: they run on every device and define the integers a file's code depends on. For CPU
tensors the per-symbol work runs here instead, as compiled loops over the lanes rather than a dozen
torch calls per symbol or bisection round: the logistic mixture's constructor, the quantised CDFs
and their searches (mixture, Gaussian on bins, uniform, Bernoulli, packed Bernoulli, categorical),
and whole runs of rANS pushes and pops (:func:`push_rounds`, :func:`pop_rounds`: every round of an
``EntropyCodec`` in one loop, words emitted and read in the reference's order).

Why the results are identical, not just close: every kernel issues the reference's IEEE-754
float64 operations (multiply, add, subtract, floor, comparisons) on the same operands in the same
order, and numba compiles without fast-math, so nothing is reassociated or fused into FMAs; the
rest is int64 arithmetic. ``tests/test_kernels.py`` checks equality against the torch path on
random and extreme parameters, and the golden files check it against files written before the
kernels existed.

Set ``BBCODEC_KERNELS=torch`` to use the torch reference everywhere (slower, same output).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

from .threads import blocks_for, run_blocks

try:  # numba is a dependency; without it (or when disabled) the torch reference runs
    import numba
    import numba.extending
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None


def _on() -> bool:
    if numba is None or os.environ.get("BBCODEC_KERNELS", "") == "torch":
        return False
    if not _READY:
        _READY.append(True)
        if not _load_cached_without_registries():
            _load_registries()
    return True


_READY: list = []  # set once the kernels may run (cache loader installed, or registries loaded)


def _load_registries() -> None:
    """Load numba's lowering registries (once per process, before the first compilation), without
    the ``scipy.linalg`` import that numba makes there only to learn whether its ``np.correlate``
    may call BLAS: 0.3 s of a 0.6 s start-up here. No kernel uses it; numba then gives that
    function its plain loop, and ``np.dot`` still imports ``scipy.linalg`` when it is first
    compiled."""
    from numba.core.registry import cpu_target

    if _REGISTRIES_LOADED:
        return
    hide = "scipy.linalg" not in sys.modules
    if hide:
        sys.modules["scipy.linalg"] = None  # an import of it raises ImportError
    try:
        cpu_target.target_context.refresh()
    finally:
        if hide and sys.modules.get("scipy.linalg", False) is None:
            del sys.modules["scipy.linalg"]
    _REGISTRIES_LOADED.append(True)


_REGISTRIES_LOADED: list = []


def _load_cached_without_registries() -> bool:
    """Let this module's kernels load from numba's on-disk cache without first loading every
    lowering registry, which numba does before each cache load although rebuilding compiled code
    needs only its runtime: 0.25-0.4 s of each process's first coding call here. On a cache miss
    the registries are loaded (:func:`_load_registries`) and numba compiles as usual. Returns
    False, changing nothing, where numba's cache internals are not as expected."""
    from numba.core.dispatcher import Dispatcher
    from numba.core.runtime import rtsys

    caches = [d._cache for d in globals().values() if isinstance(d, Dispatcher)]
    if not caches or not all(hasattr(c, "_load_overload") and hasattr(c, "_guard_against_spurious_io_errors")
                             for c in caches):
        return False

    def loader(cache):
        def load_overload(sig, target_context):
            rtsys.initialize(target_context)
            with cache._guard_against_spurious_io_errors():
                compiled = cache._load_overload(sig, target_context)
                if compiled is not None:
                    return compiled
            _load_registries()  # numba compiles next
            return None
        return load_overload

    for cache in caches:
        cache.load_overload = loader(cache)
    return True


def enabled(*tensors: torch.Tensor) -> bool:
    """Whether the kernels serve these tensors: numba present, not disabled, all on the CPU."""
    return _on() and all(t.device.type == "cpu" for t in tensors)


def _array(t: torch.Tensor, dtype) -> np.ndarray:
    """A C-contiguous numpy view (or copy) of a CPU tensor."""
    return np.ascontiguousarray(t.detach().to(dtype).numpy())


if numba is not None:
    _jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
    # Inlined into callers in numba's IR. In a per-symbol loop a call that passes arrays, or a
    # parameter tuple unpacked per symbol, costs more than the arithmetic (reference counts):
    # the mixture and Gaussian loops below unpack their parameters once and inline the rest.
    _inline = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")

    @_inline
    def _table(values, deltas, u):
        """``MonotoneTable.at_coordinate``: linear interpolation at table coordinate ``u``."""
        u = min(max(u, 0.0), float(values.shape[0] - 1))
        cell = np.floor(u)
        idx = np.int64(cell)
        return values[idx] + (u - cell) * deltas[idx]

    @_jit
    def _table_map(values, deltas, lo, scale, t, out):
        for i in range(t.shape[0]):
            out[i] = _table(values, deltas, (t[i] - lo) * scale)

    @_inline
    def _mixture_cdf(i, lane, n, precision, slopes, intercepts, weights, low_units, values, deltas):
        """``C(i)`` of lane ``lane``: the operations of ``LogisticMixture.cumulative``, from the
        first eight of the mixture's parameters (:func:`_mixture_params`: n, precision, slopes,
        intercepts, weights, low units, sigmoid table values, deltas), unpacked by the caller."""
        if i <= 0:
            return np.int64(0)
        if i >= n:
            return np.int64(1) << precision
        x = min(max(float(i), 1.0), float(n - 1))
        f = np.int64(0)
        for k in range(slopes.shape[1]):
            s = _table(values, deltas, x * slopes[lane, k] + intercepts[lane, k])
            f += np.int64(np.floor(s * weights[lane, k] * 4294967296.0))
        f = min(max(f + low_units[lane], np.int64(0)), np.int64(1) << 32)
        return ((f * ((np.int64(1) << precision) - n)) >> 32) + i

    def _gaussian_cdf(i, lane, p):
        """``C(i)`` of lane ``lane``: the operations of ``CDFModel.cumulative`` with
        ``GaussianOnBins.edge_cdf``. ``p``: (n, precision, mean, inverse scale, prior mean, prior
        scale, interior bin edges, normal table values, deltas, table origin, table steps per unit)."""
        n, precision, mean, inv_scale, prior_mean, prior_scale, edges, values, deltas, lo, steps = p
        return _gaussian_cdf_at(i, lane, n, precision, mean, inv_scale, prior_mean, prior_scale, edges, values,
                                deltas, lo, steps)

    @_inline
    def _gaussian_cdf_at(i, lane, n, precision, mean, inv_scale, prior_mean, prior_scale, edges, values, deltas, lo,
                         steps):
        """:func:`_gaussian_cdf` with the parameters unpacked."""
        if i <= 0:
            return np.int64(0)
        if i >= n:
            return np.int64(1) << precision
        t = (prior_mean[lane] + prior_scale[lane] * edges[min(max(i, 1), n - 1) - 1] - mean[lane]) * inv_scale[lane]
        f = min(max(_table(values, deltas, (t - lo) * steps), 0.0), 1.0)
        return np.int64(np.floor(f * float((np.int64(1) << precision) - n))) + i

    @_jit
    def _mixture_setup(means, scales, logits, end_masses, tables, lo, hi, slopes, intercepts, weights, low):
        """``LogisticMixture.__init__`` from logits for lanes ``lo..hi-1``, into the last four
        arrays (``low`` zeroed): the table softmax (``detmath.softmax``), the second
        normalisation, the scales from log-scales (``detmath.exp_scale``) where ``scale_values``
        is not empty, and the sigmoid table's coordinate map, operation for operation.
        ``tables``: (exp table values, deltas, origin, steps per unit, sigmoid table origin, steps,
        then the same four of ``exp_scale``'s table)."""
        exp_values, exp_deltas, exp_lo, exp_steps, sig_lo, sig_steps, scale_values, scale_deltas, scale_lo, scale_steps = tables
        log_scales = scale_values.shape[0] > 0
        k = means.shape[1]
        m = logits.shape[1]
        count = hi - lo
        # the weights component-major, so that the normalisations' sums and divisions run down
        # columns of lanes, which vectorise (the same operations on each lane: 33 -> 25 ns a lane)
        e = np.empty((m, count))
        total = np.empty(count)
        for j in range(count):
            top = logits[lo + j, 0]
            for c in range(1, m):
                top = max(top, logits[lo + j, c])
            for c in range(m):
                e[c, j] = _table(exp_values, exp_deltas, (min(logits[lo + j, c] - top, 0.0) - exp_lo) * exp_steps)
        for _ in range(2):  # softmax's normalisation, then the second
            total[:] = e[0]
            for c in range(1, m):
                for j in range(count):
                    total[j] = total[j] + e[c, j]
            for c in range(m):
                for j in range(count):
                    e[c, j] = e[c, j] / total[j]
        if end_masses:
            low[lo:hi] = e[m - 2]
        for j in range(count):
            for c in range(k):
                scale = scales[lo + j, c]
                if log_scales:
                    scale = _table(scale_values, scale_deltas, (scale - scale_lo) * scale_steps)
                inv = 1.0 / scale
                slopes[lo + j, c] = inv * sig_steps
                intercepts[lo + j, c] = ((-0.5 - means[lo + j, c]) * inv - sig_lo) * sig_steps
                weights[lo + j, c] = e[c, j]

    def _uniform_cdf(i, lane, p):
        """``Uniform._cum``: ``floor(i * 2**precision / n)``. ``p``: (n, precision)."""
        n, precision = p
        return (np.int64(i) << precision) // n

    def _bernoulli_cdf(i, lane, p):
        """``Bernoulli``: ``C(1) = 2**precision - freq(1)``. ``p``: (n = 2, precision, freq(1))."""
        n, precision, freq1 = p
        if i <= 0:
            return np.int64(0)
        if i >= 2:
            return np.int64(1) << precision
        return (np.int64(1) << precision) - freq1[lane]

    def _categorical_cdf(i, lane, p):
        """``Categorical._cum``: ``floor(Q_i * (2**precision - n) / Q_n) + i``. ``p``: (n,
        precision, prefix sums Q_1..Q_n per lane, padding)."""
        n, precision, cum_q, _ = p
        if i <= 0:
            return np.int64(0)
        q = np.int64(cum_q[lane, min(i, n) - 1])
        return (q * ((np.int64(1) << precision) - n)) // np.int64(cum_q[lane, n - 1]) + i

    @_jit
    def _check_probs(flat):
        """0 for valid probabilities, else 1 (a NaN anywhere), 2 (a negative value) or 3 (an
        infinity), as ``Categorical`` checks them. Counts, not an early exit, so the loop
        vectorises."""
        nan, negative, infinite = 0, 0, 0
        for i in range(flat.shape[0]):
            v = flat[i]
            nan += v != v
            negative += v < 0
            infinite += v == np.inf
        return 1 if nan else 2 if negative else 3 if infinite else 0

    @_jit
    def _quantised_prefix_sums(rows, scale, out):
        """``Categorical._quantised_prefix_sums`` row by row, for rows already checked.
        ``scale``: :func:`_scale_buffer`, of the rows' dtype, so that the scale and products round
        as the reference's (in float32 for float32 rows)."""
        for r in range(rows.shape[0]):
            if _row_scale(rows, r, scale):
                total = np.int32(0)
                for c in range(rows.shape[1]):
                    total += np.int32(rows[r, c] * scale[0])
                    out[r, c] = total
            else:
                for c in range(rows.shape[1]):
                    out[r, c] = c + 1

    def _row_max(probs, lane, scratch):
        """The row's maximum (compiled only). ``scratch``: a one-element array of its dtype."""
        raise NotImplementedError

    @numba.extending.overload(_row_max, jit_options={"fastmath": False})
    def _row_max_for(probs, lane, scratch):
        # checked rows hold no NaN, so the maximum of their IEEE bit patterns as signed integers
        # is the bits of their maximum (non-negative floats order as their bits do, and a row of
        # zeros of either sign gives a zero); integer maxima vectorise, float ones here do not
        bits = np.int32 if probs.dtype.bitwidth == 32 else np.int64

        def row_max(probs, lane, scratch):
            row = probs[lane].view(bits)
            hi = row[0]
            for c in range(1, row.shape[0]):
                v = row[c]
                hi = v if v > hi else hi
            scratch.view(bits)[0] = hi
            return scratch[0]

        return row_max

    @_jit
    def _row_scale(probs, lane, scale):
        """Sets ``scale[0]`` to ``scale[1] / max`` of the row (``scale[1]``: ``2**bits``; in the
        row's dtype); False for an all-zero row (uniform)."""
        hi = _row_max(probs, lane, scale[:1])
        if hi > 0:
            scale[0] = np.float64(scale[1]) / np.float64(hi)
            return True
        return False

    @_jit
    def _row_prefix(probs, lane, scale, quantised, i):
        """``Q_i`` of the row as the int32 prefix sums hold it (wrapping as they would)."""
        if not quantised:
            return np.int64(min(i, probs.shape[1]))
        q = np.int64(0)
        for c in range(min(i, probs.shape[1])):
            q += np.int64(np.int32(probs[lane, c] * scale[0]))
        return np.int64(np.int32(q))

    def _probs_cdf(i, lane, p):
        """``Categorical._cum`` straight from the probabilities (no prefix-sum table). ``p``:
        (n, precision, probabilities, a one-element scale buffer of their dtype, padding)."""
        n, precision, probs, scale, _ = p
        if i <= 0:
            return np.int64(0)
        quantised = _row_scale(probs, lane, scale)
        q_i = _row_prefix(probs, lane, scale, quantised, i)
        q_n = _row_prefix(probs, lane, scale, quantised, n)
        return (q_i * ((np.int64(1) << precision) - n)) // q_n + i

    def _cdf(i, lane, p):
        """``C(i)`` of lane ``lane`` for the model whose parameters ``p`` are (compiled only)."""
        raise NotImplementedError

    @numba.extending.overload(_cdf, jit_options={"fastmath": False})
    def _cdf_for(i, lane, p):
        # the parameter tuple's type says which model it is (chosen while compiling, and cached:
        # functions passed as arguments would not cache); mixtures' loops call :func:`_mixture_cdf`
        # with their parameters unpacked instead
        return {2: _uniform_cdf, 3: _bernoulli_cdf, 4: _categorical_cdf, 5: _probs_cdf,
                11: _gaussian_cdf}.get(len(p.types))

    def _interval_one(p, q, s):
        """``(C(s), C(s + 1) - C(s))`` of lane ``q`` (compiled only)."""
        raise NotImplementedError

    def _interval_by_cdf(p, q, s):
        lo = _cdf(s, q, p)
        return lo, _cdf(s + 1, q, p) - lo

    @_jit
    def _quantised_sum(probs, lane, scale, lo, hi):
        """The sum of the row's quantised values ``lo..hi-1`` (int64: the int32 prefix sums'
        wrapping is applied by the caller). Integer sums, so the loop vectorises."""
        acc = np.int64(0)
        f = scale[0]
        for c in range(lo, hi):
            acc += np.int64(np.int32(probs[lane, c] * f))
        return acc

    def _interval_from_probs(p, q, s):
        # one pass for the row's maximum, one for Q_s, Q_{s+1} and Q_n together
        n, precision, probs, scale, _ = p
        if _row_scale(probs, q, scale):
            q_s = _quantised_sum(probs, q, scale, 0, s)
            q_next = q_s + np.int64(np.int32(probs[q, s] * scale[0]))
            acc = q_next + _quantised_sum(probs, q, scale, s + 1, n)
        else:
            q_s, q_next, acc = np.int64(s), np.int64(s + 1), np.int64(n)
        q_n = np.int64(np.int32(acc))
        spread = (np.int64(1) << precision) - n
        lo = (np.int64(np.int32(q_s)) * spread) // q_n + s
        hi = (np.int64(np.int32(q_next)) * spread) // q_n + s + 1
        return lo, hi - lo

    @_jit
    def _packed_cut(p0, q, j, k, size):
        """``PackedBernoulli._split``: the part of ``size`` that bit ``j`` being 0 gets."""
        reserve = np.int64(1) << (k - 1 - j)
        cut = np.int64(np.floor(np.float64(size) * p0[q, j]))
        return min(max(cut, reserve), size - reserve)

    def _packed_interval(p, q, s):
        # ``PackedBernoulli.interval``: the range split bit by bit. ``p``: (n, precision, the
        # probabilities of 0 per bit, k, padding, padding)
        n, precision, p0, k, _, _ = p
        lo, size = np.int64(0), np.int64(1) << precision
        for j in range(k):
            cut = _packed_cut(p0, q, j, k, size)
            if (s >> (k - 1 - j)) & 1:
                lo, size = lo + cut, size - cut
            else:
                size = cut
        return lo, size

    @numba.extending.overload(_interval_one, jit_options={"fastmath": False})
    def _interval_one_for(p, q, s):
        return {5: _interval_from_probs, 6: _packed_interval}.get(len(p.types), _interval_by_cdf)

    def _lookup_one(p, j, slot):
        """``(i, C(i), C(i + 1) - C(i))`` for the largest ``i`` with ``C(i) <= slot`` in lane ``j``
        (compiled only; ``C`` is strictly increasing, so ``i`` is unique)."""
        raise NotImplementedError

    _BLOCK = 16  # symbols per block of the categorical search

    def _scan_probs(p, j, slot):
        # the row's quantised weights into a scratch row, their total, then blocks of _BLOCK
        # symbols: the first block whose end has C > slot, then the symbol within it. C(i) > slot
        # is tested without a division as Q_i * spread >= (slot - i + 1) * Q_n. The prefix sums
        # cannot wrap (Categorical's quantisation keeps Q_n below 2**31), so int64 sums equal the
        # reference's int32 ones.
        n, precision, probs, scale, q = p
        q_n = np.int64(0)
        if _row_scale(probs, j, scale):
            f = scale[0]
            for i in range(n):
                q[i] = np.int64(np.int32(probs[j, i] * f))
                q_n += q[i]
        else:
            q[:] = 1
            q_n = np.int64(n)
        spread = (np.int64(1) << precision) - n
        before, i = np.int64(0), 0  # Q_i, with C(i) <= slot
        while i + _BLOCK < n:
            total = np.int64(0)
            for k in range(i, i + _BLOCK):
                total += q[k]
            if (before + total) * spread >= (slot - (i + _BLOCK) + 1) * q_n:
                break
            before += total
            i += _BLOCK
        while True:  # C(n) = 2**precision > slot ends this
            after = before + q[i]
            if after * spread >= (slot - i) * q_n:
                c_lo = (before * spread) // q_n + i
                return i, c_lo, (after * spread) // q_n + i + 1 - c_lo
            before = after
            i += 1

    @numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")  # a call costs 12%
    def _narrow(p, j, slot, lo, c_lo, hi, c_hi):
        """Bisection from ``C(lo) <= slot < C(hi)`` (``c_lo``, ``c_hi``) to adjacent symbols:
        ``(lo, C(lo), C(lo + 1) - C(lo))``."""
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            c = _cdf(mid, j, p)
            if c <= slot:
                lo, c_lo = mid, c
            else:
                hi, c_hi = mid, c
        return lo, c_lo, c_hi - c_lo

    def _bisect(p, j, slot):
        """:func:`_lookup_one` by probing the end symbols (often most of the mass), then
        bisecting."""
        n, precision = p[0], p[1]
        lo, hi = 0, n
        c_lo, c_hi = np.int64(0), np.int64(1) << precision
        c1 = _cdf(1, j, p)
        if slot < c1:
            hi, c_hi = 1, c1
        elif n > 2:
            lo, c_lo = 1, c1
            c_last = _cdf(n - 1, j, p)
            if slot >= c_last:
                lo, c_lo = n - 1, c_last
            else:
                hi, c_hi = n - 1, c_last
        else:
            lo, c_lo = 1, c1
        return _narrow(p, j, slot, lo, c_lo, hi, c_hi)

    def _mixture_lookups(p, slots, first, lo, hi, sym, start, freq):
        # :func:`_lookup_one` for slots ``lo..hi-1`` (lanes ``first + j``), in one loop over
        # unpacked parameters (MNIST decoding: 65 ns per lookup against 173 ns with a call per
        # symbol). A guess, then a search from it: any guess gives the same answer, a good one
        # fewer ``C`` evaluations. The guess inverts the heaviest component's sigmoid at the slot's
        # quantile (exact for 80% of kodim23's sub-pixels); where it or the end masses point at an
        # end symbol, that end is probed first (saturated pixels). The search evaluates
        # ``C(guess)``, then steps of 1, 2, 4, ... away from it until they pass the slot, then
        # bisects between the last two: about twice the log of the distance from the guess. Two
        # Newton steps on the continuous CDF made the guess exact for 99% of kodim23's, but cost
        # more than the evaluations they saved (kodim23 123 against 76 ns per lookup, CIFAR 135
        # against 113; MNIST's non-saturated pixels 152 against 164).
        n, precision, slopes, intercepts, weights, low_units, values, deltas, table_lo, table_scale = p
        top = np.int64(1) << precision
        for j in range(lo, hi):
            q, slot = first + j, slots[j]
            t = (slot + 0.5) / float(top)
            low = low_units[q] / 4294967296.0
            k, mass = 0, 0.0
            for c in range(weights.shape[1]):
                mass += weights[q, c]
                if weights[q, c] > weights[q, k]:
                    k = c
            tt = min(max(t, 1e-9), 1.0 - 1e-9)
            x = ((math.log(tt / (1.0 - tt)) - table_lo) * table_scale - intercepts[q, k]) / slopes[q, k]
            x = min(x, float(n - 1)) if x >= 0.0 else 0.0  # NaN included
            if t < low or x < 1.0:
                c1 = _mixture_cdf(1, q, n, precision, slopes, intercepts, weights, low_units, values, deltas)
                if slot < c1:
                    sym[j], start[j], freq[j] = 0, 0, c1
                    continue
            elif t >= low + mass or x >= n - 2:
                c_last = _mixture_cdf(n - 1, q, n, precision, slopes, intercepts, weights, low_units, values, deltas)
                if slot >= c_last:
                    sym[j], start[j], freq[j] = n - 1, c_last, top - c_last
                    continue
            guess = np.int64(x)
            c = _mixture_cdf(guess, q, n, precision, slopes, intercepts, weights, low_units, values, deltas)
            if c <= slot:
                lo_, c_lo, hi_, c_hi = guess, c, np.int64(n), top
                step = 1
                while lo_ + step < hi_:
                    c = _mixture_cdf(lo_ + step, q, n, precision, slopes, intercepts, weights, low_units, values, deltas)
                    if c > slot:
                        hi_, c_hi = lo_ + step, c
                        break
                    lo_, c_lo = lo_ + step, c
                    step *= 2
            else:
                lo_, c_lo, hi_, c_hi = np.int64(0), np.int64(0), guess, c
                step = 1
                while hi_ - step > lo_:
                    c = _mixture_cdf(hi_ - step, q, n, precision, slopes, intercepts, weights, low_units, values, deltas)
                    if c <= slot:
                        lo_, c_lo = hi_ - step, c
                        break
                    hi_, c_hi = hi_ - step, c
                    step *= 2
            while hi_ - lo_ > 1:  # bisection, as :func:`_narrow`
                mid = (lo_ + hi_) >> 1
                c = _mixture_cdf(mid, q, n, precision, slopes, intercepts, weights, low_units, values, deltas)
                if c <= slot:
                    lo_, c_lo = mid, c
                else:
                    hi_, c_hi = mid, c
            sym[j], start[j], freq[j] = lo_, c_lo, c_hi - c_lo

    def _gaussian_lookups(p, slots, first, lo, hi, sym, start, freq):
        # :func:`_lookup_one` for slots ``lo..hi-1`` (lanes ``first + j``) over parameters unpacked
        # once, as :func:`_mixture_lookups`. The guess: the slot's quantile of N(mean, scale)
        # (its standard-normal quantile read off the bin edges, which are the prior's), in prior
        # units, through the normal table to a bin; kodim23's and CIFAR's latents: within one bin
        # of the symbol 99.9% of the time, so one or two ``C`` evaluations settle it, and the rest
        # go to :func:`_bisect` (kodim23: 49 against 130 ns per lookup by bisection alone).
        n, precision, mean, inv_scale, prior_mean, prior_scale, edges, values, deltas, t_lo, steps = p
        top = np.int64(1) << precision
        for j in range(lo, hi):
            q, slot = first + j, slots[j]
            k = min(max(np.int64((slot + 0.5) / float(top) * n + 0.5), 1), n - 1)
            e = (mean[q] + edges[k - 1] / inv_scale[q] - prior_mean[q]) / prior_scale[q]
            g = min(max(np.int64(n * _table(values, deltas, (e - t_lo) * steps)), 0), n - 1)  # NaN: any g
            c = _gaussian_cdf_at(g, q, n, precision, mean, inv_scale, prior_mean, prior_scale, edges, values, deltas,
                                 t_lo, steps)
            if c <= slot:
                c_next = _gaussian_cdf_at(g + 1, q, n, precision, mean, inv_scale, prior_mean, prior_scale, edges,
                                          values, deltas, t_lo, steps)
                if slot < c_next:
                    sym[j], start[j], freq[j] = g, c, c_next - c
                    continue
            elif g > 0:
                c_prev = _gaussian_cdf_at(g - 1, q, n, precision, mean, inv_scale, prior_mean, prior_scale, edges,
                                          values, deltas, t_lo, steps)
                if c_prev <= slot:
                    sym[j], start[j], freq[j] = g - 1, c_prev, c - c_prev
                    continue
            sym[j], start[j], freq[j] = _lookup_one(p, q, slot)  # by bisection

    def _lookups_by_symbol(p, slots, first, lo, hi, sym, start, freq):
        for j in range(lo, hi):
            sym[j], start[j], freq[j] = _lookup_one(p, first + j, slots[j])

    def _lookups(p, slots, first, lo, hi, sym, start, freq):
        """``(i, C(i), C(i + 1) - C(i))`` of :func:`_lookup_one` into ``sym[j]``, ``start[j]``,
        ``freq[j]`` for slots ``slots[j]`` of lanes ``first + j``, ``j`` in ``lo..hi-1``
        (compiled only)."""
        raise NotImplementedError

    @numba.extending.overload(_lookups, jit_options={"fastmath": False})
    def _lookups_for(p, slots, first, lo, hi, sym, start, freq):
        return {10: _mixture_lookups, 11: _gaussian_lookups}.get(len(p.types), _lookups_by_symbol)

    def _mixture_intervals(p, symbols, lo, hi, start, freq):
        n, precision, slopes, intercepts, weights, low_units, values, deltas, _, _ = p
        for q in range(lo, hi):
            s = symbols[q]
            c = _mixture_cdf(s, q, n, precision, slopes, intercepts, weights, low_units, values, deltas)
            start[q] = c
            freq[q] = _mixture_cdf(s + 1, q, n, precision, slopes, intercepts, weights, low_units, values, deltas) - c

    def _intervals_by_symbol(p, symbols, lo, hi, start, freq):
        for q in range(lo, hi):
            start[q], freq[q] = _interval_one(p, q, symbols[q])

    def _intervals(p, symbols, lo, hi, start, freq):
        """:func:`_interval_one` of symbols ``lo..hi-1`` into ``start`` and ``freq`` (compiled only)."""
        raise NotImplementedError

    @numba.extending.overload(_intervals, jit_options={"fastmath": False})
    def _intervals_for(p, symbols, lo, hi, start, freq):
        # mixtures unpack their parameters once, as :func:`_mixture_lookups` does
        return _mixture_intervals if len(p.types) == 10 else _intervals_by_symbol

    def _packed_lookup(p, j, slot):
        n, precision, p0, k, _, _ = p
        lo, size, sym = np.int64(0), np.int64(1) << precision, np.int64(0)
        for b in range(k):
            cut = _packed_cut(p0, j, b, k, size)
            if slot >= lo + cut:
                sym, lo, size = (sym << 1) | 1, lo + cut, size - cut
            else:
                sym, size = sym << 1, cut
        return sym, lo, size

    def _uniform_lookup(p, j, slot):
        # ``Uniform.lookup``: the symbol straight from the slot, not a bisection (kodim23's
        # uniform pops: 74 -> 10 ns per symbol)
        n, precision = p
        sym = ((slot + 1) * n - 1) >> precision
        start = (sym << precision) // n
        return sym, start, ((sym + 1) << precision) // n - start

    @numba.extending.overload(_lookup_one, jit_options={"fastmath": False})
    def _lookup_one_for(p, j, slot):
        return {2: _uniform_lookup, 5: _scan_probs, 6: _packed_lookup}.get(len(p.types), _bisect)  # mixtures: _mixture_lookups

    @_jit
    def _lookup(p, slots):
        sym = np.empty(slots.shape[0], dtype=np.int64)
        start = np.empty(slots.shape[0], dtype=np.int64)
        freq = np.empty(slots.shape[0], dtype=np.int64)
        _lookups(p, slots, 0, 0, slots.shape[0], sym, start, freq)
        return sym, start, freq

    @_jit
    def _intervals_into(p, symbols, lo, hi, start, freq):
        """``(C(s), C(s + 1) - C(s))`` of symbols ``lo..hi-1`` (symbol ``q`` of lane ``q`` of the
        parameters) into ``start`` and ``freq``."""
        _intervals(p, symbols, lo, hi, start, freq)

    @_jit
    def _push_intervals(start, freq, heads, lanes, words, length, precision):
        """``Message.push`` of every round, last round first, interval ``r * L + j`` on lane
        ``lanes[j]``: the same integers, and the same words in the same order, as one push per
        round. ``words`` has room for one word per symbol; returns the new stream length."""
        count = lanes.shape[0]
        emit_at = np.int64(1) << (63 - precision)
        top = np.int64(1) << precision
        for r in range(start.shape[0] // count - 1, -1, -1):
            for j in range(count):
                q = r * count + j
                h = heads[lanes[j]]
                quot = h // freq[q]
                if quot >= emit_at:
                    words[length] = h & 0xFFFFFFFF
                    length += 1
                    h = h >> 32
                    quot = h // freq[q]
                heads[lanes[j]] = h + quot * (top - freq[q]) + start[q]
        return length

    @_jit
    def _lookup_lanes(p, heads, lanes, precision, first, lo, hi, out, fresh, start, freq):
        """The lookups of lanes ``lo..hi-1`` of one round, whose symbols are ``first + j``: the
        symbols into ``out``, each lane's head after the pop but before renormalisation into
        ``fresh[j]``; ``start`` and ``freq``: scratch of one value per lane. Heads are only read."""
        mask = (np.int64(1) << precision) - 1
        count = lanes.shape[0]
        for j in range(lo, hi):  # the slots, until the lookups are done
            fresh[j] = heads[lanes[j]] & mask
        _lookups(p, fresh, first, lo, hi, out[first:first + count], start, freq)
        for j in range(lo, hi):
            fresh[j] = freq[j] * (heads[lanes[j]] >> precision) + fresh[j] - start[j]

    @_jit
    def _renormalise(heads, lanes, words, length, fresh):
        """The rest of a round's pop: the lanes whose ``fresh`` head fell below 2**31 read one
        word each, in lane order, from the top ``low`` words. Returns the new stream length, or -1
        (heads untouched) when the stream holds fewer words than the round needs."""
        count = lanes.shape[0]
        low = 0
        for j in range(count):
            if fresh[j] < 2147483648:
                low += 1
        if low > length:
            return np.int64(-1)
        k = length - low
        for j in range(count):
            h = fresh[j]
            if h < 2147483648:
                h = (h << 32) | words[k]
                k += 1
            heads[lanes[j]] = h
        return length - low

    @_jit
    def _pop_rounds(p, heads, lanes, words, length, precision, rounds, out):
        """``Message.pop`` of ``rounds`` rounds into ``out``, as one peek, lookup and pop per
        round. Stops before a round that needs more words than the stream holds (the caller's
        reference path draws the seeded words); returns (rounds done, new stream length)."""
        count = lanes.shape[0]
        fresh, start, freq = np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64), np.empty(count, dtype=np.int64)
        for r in range(rounds):
            _lookup_lanes(p, heads, lanes, precision, r * count, 0, count, out, fresh, start, freq)
            left = _renormalise(heads, lanes, words, length, fresh)
            if left < 0:
                return r, length
            length = left
        return rounds, length


def _flat(t: torch.Tensor, shape, dtype=torch.float64) -> np.ndarray:
    """A parameter broadcast to the batch shape, flattened to one value per lane."""
    return _array(t.expand(shape).reshape(-1), dtype)


def _mixture_params(model) -> tuple:
    from . import detmath

    k = model.slopes.shape[-1]
    table = detmath.sigmoid_table()
    values, deltas = table._on(torch.device("cpu"))
    return (int(model.n), int(model.precision), _array(model.slopes.reshape(-1, k), torch.float64),
            _array(model.intercepts.reshape(-1, k), torch.float64), _array(model.weights.reshape(-1, k), torch.float64),
            _array(model._low_units.reshape(-1), torch.int64), values.numpy(), deltas.numpy(), table.lo, table.scale)


def _gaussian_params(model) -> tuple:
    from . import detmath

    table = detmath.normal_cdf_table()
    values, deltas = table._on(torch.device("cpu"))
    shape = model.shape
    return (int(model.n), int(model.precision), _flat(model.mean, shape), _flat(model.inv_scale, shape),
            _flat(model.prior_mean, shape), _flat(model.prior_scale, shape), _array(model._edges, torch.float64),
            values.numpy(), deltas.numpy(), float(table.lo), float(table.scale))


def _uniform_params(model) -> tuple:
    return (int(model.n), int(model.precision))


def _bernoulli_params(model) -> tuple:
    return (2, int(model.precision), _array(model._freq1.reshape(-1), torch.int64))


def _scale_buffer(n: int, dtype) -> np.ndarray:
    """``[row scale, 2**bits]`` for :func:`_row_scale` (the bits of ``Categorical`` quantisation)."""
    from .entropy_models import _cat_bits

    return np.array([0.0, float(1 << _cat_bits(int(n)))], dtype=dtype)


def _categorical_params(model) -> tuple:
    probs = model.__dict__.get("_probs")
    if probs is not None and "_cum_q" not in model.__dict__:  # straight from the probabilities
        rows = _array(probs.reshape(-1, probs.shape[-1]), probs.dtype)
        # the scale buffer in the rows' dtype, and a scratch row for the quantised weights
        return (int(model.n), int(model.precision), rows, _scale_buffer(model.n, rows.dtype),
                np.zeros(int(model.n), dtype=np.int64))
    cum_q = model._cum_q
    return (int(model.n), int(model.precision), _array(cum_q.reshape(-1, cum_q.shape[-1]), torch.int32), 0)


def _packed_params(model) -> tuple:
    return (int(model.n), int(model.precision), _array(model._p0.reshape(-1, model.k), torch.float64), int(model.k), 0, 0)


_PARAMS = {"PackedBernoulli": _packed_params, "LogisticMixture": _mixture_params, "GaussianOnBins": _gaussian_params, "Uniform": _uniform_params,
           "Bernoulli": _bernoulli_params, "Categorical": _categorical_params, "BetaBinomial": _categorical_params}


def codes_rounds(model, message) -> bool:
    """Whether :func:`push_rounds` and :func:`pop_rounds` serve this model and message."""
    return (_on() and message.device.type == "cpu" and type(model).__name__ in _PARAMS
            and math.prod(message.lane_shape) > 0)


def _lanes(message):
    """(root message, flat int64 head indices of the message's lanes in row-major order)."""
    root, idx = (message, None) if not hasattr(message, "root") else (message.root, message.idx)
    root.heads = root.heads.contiguous()
    total = root.heads.numel()
    if idx is None:
        flat = torch.arange(total)
    elif isinstance(idx, slice):
        flat = torch.arange(idx.start, idx.stop)
    else:
        flat = idx.reshape(-1)
    return root, _array(flat, torch.int64)


SPLIT_LANES = 1024  # searched lookups and intervals: work worth a thread wake-up (45-70 us here)
_SEARCHED = {"LogisticMixture", "GaussianOnBins", "PackedBernoulli", "Categorical", "BetaBinomial"}


def _split_lanes(model, lanes: int) -> list[tuple[int, int]]:
    """Blocks of ``lanes`` symbols for the coding threads (one block for cheap models)."""
    return blocks_for(lanes, lanes, SPLIT_LANES) if type(model).__name__ in _SEARCHED else [(0, lanes)]


def _own_scratch(p: tuple) -> tuple:
    """The parameters with private copies of the buffers that intervals and lookups write
    (categorical from probabilities: the row's scale in ``p[3]``, the quantised row in ``p[4]``),
    so that threads can compute at once."""
    if len(p) == 5 and isinstance(p[4], np.ndarray):
        return p[:3] + (p[3].copy(), np.zeros_like(p[4]))
    return p


def _per_block(p: tuple, blocks: list) -> list[tuple]:
    """One parameter tuple per block of lanes: ``p`` itself for the first, private copies of its
    written buffers (:func:`_own_scratch`) for the others."""
    return [p] + [_own_scratch(p) for _ in blocks[1:]]


def push_rounds(model, message, symbols: torch.Tensor) -> None:
    """Push checked ``symbols`` (the model's batch shape ``(*rounds, *lanes)``) round by round,
    the last first, as ``EntropyCodec.push`` does: the intervals in one compiled pass (split over
    the coding threads), then the pushes in one compiled loop."""
    root, lanes = _lanes(message)
    flat = _array(symbols.reshape(-1), torch.int64)
    p = _PARAMS[type(model).__name__](model)
    start, freq = np.empty_like(flat), np.empty_like(flat)
    blocks = _split_lanes(model, flat.shape[0])
    params = _per_block(p, blocks)
    run_blocks([(k, lo, hi) for k, (lo, hi) in enumerate(blocks)],
               lambda k, lo, hi: _intervals_into(params[k], flat, lo, hi, start, freq))
    root._reserve(flat.shape[0])
    heads = root.heads.view(-1).numpy()
    root._len = int(_push_intervals(start, freq, heads, lanes, root._words.numpy(), root._len, int(model.precision)))


def pop_rounds(model, message, rounds: int):
    """Pop ``rounds`` rounds as ``EntropyCodec.pop`` does; returns (symbols ``(rounds * lanes,)``,
    rounds done): fewer than asked when the stream ran dry (the rest is the caller's). One compiled
    loop; with several coding threads and many lanes, each round's lookups are split over them
    (they depend on the heads alone) and the words are then read in lane order."""
    root, lanes = _lanes(message)
    count, precision = lanes.shape[0], int(model.precision)
    out = np.zeros(rounds * count, dtype=np.int64)
    heads, words = root.heads.view(-1).numpy(), root._words.numpy()
    p = _PARAMS[type(model).__name__](model)
    blocks = _split_lanes(model, count)
    if len(blocks) == 1:
        done, length = _pop_rounds(p, heads, lanes, words, root._len, precision, rounds, out)
    else:
        params = _per_block(p, blocks)
        fresh, start, freq = (np.empty(count, dtype=np.int64) for _ in range(3))
        done, length = rounds, root._len
        for r in range(rounds):
            run_blocks([(k, lo, hi) for k, (lo, hi) in enumerate(blocks)],
                       lambda k, lo, hi: _lookup_lanes(params[k], heads, lanes, precision, r * count, lo, hi, out,
                                                       fresh, start, freq))
            left = int(_renormalise(heads, lanes, words, length, fresh))
            if left < 0:
                done = r
                break
            length = left
    root._len = int(length)
    return torch.from_numpy(out), int(done)


def interval(model, symbols: torch.Tensor):
    """``(start, freq)`` of ``symbols`` (the model's batch shape) under a ``LogisticMixture`` or
    ``GaussianOnBins``, as the reference ``interval`` computes them."""
    flat = _array(symbols.reshape(-1), torch.int64)
    start, freq = np.empty_like(flat), np.empty_like(flat)
    _intervals_into(_PARAMS[type(model).__name__](model), flat, 0, flat.shape[0], start, freq)
    return torch.from_numpy(start).reshape(symbols.shape), torch.from_numpy(freq).reshape(symbols.shape)


def lookup(model, slots: torch.Tensor):
    """``(symbols, start, freq)`` for ``slots`` (the model's batch shape), as the reference
    ``lookup`` computes them."""
    out = _lookup(_PARAMS[type(model).__name__](model), _array(slots.reshape(-1), torch.int64))
    return tuple(torch.from_numpy(t).reshape(slots.shape) for t in out)


def table(table, t: torch.Tensor) -> torch.Tensor:
    """``table(t)`` for a :class:`~bbcodec.detmath.MonotoneTable` and a finite float64 CPU tensor,
    in one loop instead of seven torch passes (the same operations on each value)."""
    values, deltas = table._on(torch.device("cpu"))
    flat = _array(t.reshape(-1), torch.float64)
    out = np.empty_like(flat)
    _table_map(values.numpy(), deltas.numpy(), table.lo, table.scale, flat, out)
    return torch.from_numpy(out).reshape(t.shape)


def mixture_setup(means: torch.Tensor, scales: torch.Tensor, logits: torch.Tensor, end_masses: bool,
                  log_scales: bool = False):
    """``(slopes, intercepts, weights, low_mass)`` of a ``LogisticMixture`` built from finite
    ``logits`` ``(*batch, K [+2])`` and ``means``, ``scales`` ``(*batch, K)`` (float64; finite
    log-scales where ``log_scales``), as its ``__init__`` computes them; many lanes are split over
    the coding threads."""
    from . import detmath

    batch, k = tuple(means.shape[:-1]), means.shape[-1]
    ex, sig, sc = detmath.exp_neg_table(), detmath.sigmoid_table(), detmath.exp_table()
    values, deltas = ex._on(torch.device("cpu"))
    scale_tables = (a.numpy() for a in sc._on(torch.device("cpu"))) if log_scales else (np.empty(0), np.empty(0))
    tables = (values.numpy(), deltas.numpy(), float(ex.lo), float(ex.scale), float(sig.lo), float(sig.scale),
              *scale_tables, float(sc.lo), float(sc.scale))
    m, s, g = (_array(t.reshape(-1, t.shape[-1]), torch.float64) for t in (means, scales, logits))
    lanes = m.shape[0]
    slopes, intercepts, weights, low = np.empty((lanes, k)), np.empty((lanes, k)), np.empty((lanes, k)), np.zeros(lanes)
    run_blocks(blocks_for(lanes, lanes * k, SPLIT_LANES * 4),
               lambda lo, hi: _mixture_setup(m, s, g, end_masses, tables, lo, hi, slopes, intercepts, weights, low))
    slopes, intercepts, weights, low = (torch.from_numpy(t) for t in (slopes, intercepts, weights, low))
    return (slopes.reshape(*batch, k), intercepts.reshape(*batch, k), weights.reshape(*batch, k), low.reshape(batch))


_PROBS_ERRORS = {1: "probs contains NaN", 2: "probs must be non-negative", 3: "probs must be finite"}


def quantised_prefix_sums(probs: torch.Tensor) -> torch.Tensor:
    """``Categorical``'s int32 prefix sums of checked float32 or float64 ``probs`` ``(*batch, n)``."""
    n = probs.shape[-1]
    rows = _array(probs.reshape(-1, n), probs.dtype)
    out = np.empty(rows.shape, dtype=np.int32)
    _quantised_prefix_sums(rows, _scale_buffer(n, rows.dtype), out)
    return torch.from_numpy(out).reshape(probs.shape)


def check_probs(probs: torch.Tensor):
    """The error message for invalid categorical probabilities (float32 or float64), or None."""
    status = _check_probs(_array(probs.reshape(-1), probs.dtype))
    return _PROBS_ERRORS.get(status)
