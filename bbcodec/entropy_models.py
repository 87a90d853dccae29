"""Entropy models: batches of distributions quantised to exact integer intervals.

An :class:`EntropyModel` describes, for every position of a batch (any shape), a distribution over
the symbols ``0..n-1`` quantised to integer frequencies that sum to ``2**precision``, every symbol
getting at least 1. It answers two questions, both exactly and deterministically:

* :meth:`~EntropyModel.interval`: the ``(start, freq)`` of given symbols (for pushing);
* :meth:`~EntropyModel.lookup`: which symbol a slot in ``[0, 2**precision)`` falls in, with its
  ``(start, freq)`` (for popping).

Entropy models know nothing of ANS messages; codecs (``bbcodec.codecs``) connect the two.

Quantisation rule
-----------------
Most models are defined by a cumulative distribution ``F`` at the ``n-1`` interior bin edges, and
quantise it as ``C(i) = floor(F(i) * (2**precision - n)) + i`` with ``C(0) = 0`` and
``C(n) = 2**precision``: monotone ``F`` (clamped to [0, 1]) gives every symbol a frequency of at
least 1 and the frequencies sum exactly to ``2**precision``, whatever the parameters (probabilities
of exactly 0 or 1, extreme logits or scales). ``F`` is evaluated with :mod:`bbcodec.detmath`, so
the integers are identical on every device and thread count. Categorical models quantise
probabilities to integers first and work in exact integer arithmetic throughout.
"""

from __future__ import annotations

import copy
from typing import Tuple

import torch

from . import detmath, kernels
from .ans import MAX_PRECISION
from .errors import BBCodecError

Interval = Tuple[torch.Tensor, torch.Tensor]


class ModelError(BBCodecError, ValueError):
    """Raised for invalid distribution parameters (NaN, wrong shapes, out-of-range values)."""


def _as_float64(name: str, value, device=None) -> torch.Tensor:
    t = torch.as_tensor(value, device=device)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.uint8, torch.int16)):
        raise ModelError(f"{name} must be a real tensor, got dtype {t.dtype}")
    t = t.to(torch.float64)
    # one cheap pass: a NaN makes the sum NaN (so can +inf and -inf together: then look closer)
    if t.numel() and bool(torch.isnan(t.sum())) and bool(torch.isnan(t).any()):
        raise ModelError(f"{name} contains NaN")
    return t


def _sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """:func:`bbcodec.detmath.sigmoid` of checked float64 logits (compiled on the CPU)."""
    if kernels.enabled(logits):
        return kernels.table(detmath.sigmoid_table(), logits)
    return detmath.sigmoid(logits)


def _check_precision(precision: int, n: int) -> None:
    if not 1 <= precision <= MAX_PRECISION:
        raise ModelError(f"precision must be in [1, {MAX_PRECISION}], got {precision}")
    if n > (1 << precision):
        raise ModelError(f"{n} symbols do not fit in {precision} bits of precision")


def _check_symbols(symbols: torch.Tensor, shape, n: int) -> torch.Tensor:
    symbols = torch.as_tensor(symbols)
    if symbols.is_floating_point() or symbols.is_complex() or symbols.dtype == torch.bool:
        if symbols.dtype == torch.bool:
            symbols = symbols.to(torch.int64)
        else:
            raise ModelError(f"symbols must be integers, got dtype {symbols.dtype}")
    if tuple(symbols.shape) != tuple(shape):
        raise ModelError(f"symbols have shape {tuple(symbols.shape)}, model expects {tuple(shape)}")
    symbols = symbols.to(torch.int64)
    if bool(((symbols < 0) | (symbols >= n)).any()):
        raise ModelError(f"symbols out of range 0..{n - 1}")
    return symbols


class EntropyModel:
    """Base class. Subclasses set ``n`` (alphabet size), ``precision`` and ``shape`` (batch shape),
    list their parameter tensors in ``_params`` as ``(attribute, trailing_dims)`` (the dims after
    the batch dims), and implement :meth:`interval` and :meth:`lookup`."""

    n: int
    precision: int
    shape: tuple
    _params: tuple = ()

    def interval(self, symbols: torch.Tensor) -> Interval:
        raise NotImplementedError

    def lookup(self, slot: torch.Tensor):
        """Return ``(symbols, start, freq)`` for slots of the batch shape."""
        raise NotImplementedError

    def _map(self, fn) -> "EntropyModel":
        """A shallow copy with ``fn(tensor, trailing_dims)`` applied to every parameter tensor and
        to the batch shape."""
        if self._params:
            return self._with([fn(getattr(self, name), trailing) for name, trailing in self._params])
        out = copy.copy(self)  # no parameters: apply fn to a zero-stride stand-in of the batch shape
        out.shape = tuple(fn(torch.zeros((), dtype=torch.uint8).expand(self.shape), 0).shape)
        return out

    def _with(self, tensors: list) -> "EntropyModel":
        """A shallow copy with these parameter tensors (in ``_params`` order) and the batch shape
        that the first of them gives."""
        out = copy.copy(self)
        for (name, _), t in zip(self._params, tensors):
            setattr(out, name, t)
        trailing = self._params[0][1]
        out.shape = tuple(tensors[0].shape[: tensors[0].dim() - trailing])
        return out

    @staticmethod
    def cat(models: list) -> "EntropyModel":
        """Freshly built models of one type and alphabet for consecutive rows of a batch (the same
        arguments but dim 0), joined along dim 0: every parameter tensor concatenated. The same
        integers as one model built for all the rows, since models compute lane by lane."""
        first = models[0]
        if not first._params or any(type(m) is not type(first) or m.n != first.n or m.precision != first.precision
                                    for m in models):
            raise ModelError("cat needs models of one type, alphabet and precision, with parameters")
        if len(models) == 1:
            return first
        return first._with([torch.cat([getattr(m, name) for m in models]) for name, _ in first._params])

    def __getitem__(self, index) -> "EntropyModel":
        """The models at ``index`` of the batch (an index of the leading, batch dims only)."""
        return self._map(lambda t, trailing: t[index])

    def reshape(self, shape) -> "EntropyModel":
        """The same models with the batch dims reshaped (row-major)."""
        shape = tuple(shape)
        return self._map(lambda t, trailing: t.reshape(shape + tuple(t.shape[t.dim() - trailing:])))

    def checked_symbols(self, symbols) -> torch.Tensor:
        """``symbols`` as int64 after validating their dtype, shape and range."""
        return _check_symbols(symbols, self.shape, self.n)

    def checked_interval(self, symbols) -> Interval:
        """:meth:`interval` after validating the symbols' dtype, shape and range."""
        return self.interval(_check_symbols(symbols, self.shape, self.n))

    def information(self, symbols) -> torch.Tensor:
        """Exact information content ``-log2(freq / 2**precision)`` of each symbol, in bits."""
        _, freq = self.checked_interval(symbols)
        return self.precision - torch.log2(freq.to(torch.float64))


# ---------------------------------------------------------------------------------------------
class CDFModel(EntropyModel):
    """Models defined by a monotone CDF at interior edges, quantised as in the module docstring.

    Subclasses implement :meth:`edge_cdf`: ``F`` at integer edge indices ``i in 1..n-1`` (the
    edge between symbols ``i-1`` and ``i``), for index tensors of the batch shape, or override
    :meth:`cumulative` itself (as :class:`LogisticMixture` does).
    """

    def edge_cdf(self, i: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cumulative(self, i: torch.Tensor) -> torch.Tensor:
        """Quantised ``C(i)`` for index tensors of the batch shape, ``0 <= i <= n``."""
        scale = float((1 << self.precision) - self.n)
        inner = torch.clamp(i, 1, self.n - 1)
        f = torch.clamp(self.edge_cdf(inner), 0.0, 1.0)
        c = torch.floor(f * scale).to(torch.int64) + i
        c = torch.where(i <= 0, torch.zeros_like(c), c)
        return torch.where(i >= self.n, torch.full_like(c, 1 << self.precision), c)

    def interval(self, symbols: torch.Tensor) -> Interval:
        lo = self.cumulative(symbols)
        hi = self.cumulative(symbols + 1)
        return lo, hi - lo

    def lookup(self, slot: torch.Tensor):
        """Largest ``i`` with ``C(i) <= slot``. The end symbols (often most of the mass: image
        backgrounds, saturated pixels) are decided with one probe each; only the remaining lanes
        are searched."""
        if slot.dim() != 1:
            sym, start, freq = self.reshape((-1,)).lookup(slot.reshape(-1))
            return sym.reshape(slot.shape), start.reshape(slot.shape), freq.reshape(slot.shape)
        if self.n <= 4:
            return self._search(slot, 0, self.n)
        ones = torch.ones_like(slot)
        c1 = self.cumulative(ones)
        c_last = self.cumulative(ones * (self.n - 1))
        top = 1 << self.precision
        sym = torch.where(slot < c1, 0, self.n - 1)
        lo = torch.where(slot < c1, 0, c_last)
        hi = torch.where(slot < c1, c1, top)
        inner = torch.nonzero((slot >= c1) & (slot < c_last)).squeeze(1)
        if inner.numel():
            s_in, lo_in, f_in = self[inner]._search(slot[inner], 1, self.n - 1, c_last[inner])
            sym = sym.index_put((inner,), s_in)
            lo = lo.index_put((inner,), lo_in)
            hi = hi.index_put((inner,), lo_in + f_in)
        return sym, lo, hi - lo

    SMALL_SEARCH = 2048  # up to this many lanes, probe 15 candidates per round (overhead-bound)

    def _search(self, slot: torch.Tensor, first: int, stop: int, hi_c: torch.Tensor | None = None):
        """Largest ``i`` in ``[first, stop)`` with ``C(i) <= slot`` for 1-D lanes, given ``C(first)
        <= slot``; ``hi_c``, if given, is ``C(stop)``. Returns ``(i, C(i), C(i + 1) - C(i))``.

        Each round probes ``ways - 1`` evenly spaced candidates in one :meth:`cumulative` call and
        keeps the sub-interval between the last accepted and the first rejected one: bisection for
        many lanes (``ways = 2``), 16-way search for few, where per-call overhead dominates."""
        ways = 16 if slot.numel() <= self.SMALL_SEARCH else 2
        k = ways - 1
        model = self if k == 1 else self[torch.arange(slot.numel(), device=slot.device).repeat(k)]
        offsets = torch.arange(1, ways, device=slot.device).unsqueeze(1)
        sym = torch.full_like(slot, first)
        lo_c = self.cumulative(sym) if first else torch.zeros_like(slot)
        if hi_c is None:
            hi_c = self.cumulative(torch.full_like(slot, stop))
        width = stop - first  # the symbol lies in [sym, min(sym + width, stop))
        while width > 1:
            step = -(-width // ways)
            cand = sym + offsets * step  # (k, lanes), ascending
            ok = cand < torch.clamp(sym + width, max=stop)
            c = model.cumulative(torch.where(ok, cand, sym).reshape(-1)).reshape(k, -1)
            count = (ok & (c <= slot)).sum(0)  # C is monotone: the accepted candidates are a prefix
            lo_c = torch.where(count > 0, c.gather(0, (count - 1).clamp(min=0).unsqueeze(0))[0], lo_c)
            after = count.clamp(max=k - 1).unsqueeze(0)
            # the first rejected candidate, if probed, bounds the symbol's interval from above
            rejected = (count < k) & ok.gather(0, after)[0]
            hi_c = torch.where(rejected, c.gather(0, after)[0], hi_c)
            sym = sym + count * step
            width = step
        return sym, lo_c, hi_c - lo_c


def _broadcast(*tensors):
    try:
        return torch.broadcast_tensors(*tensors)
    except RuntimeError as exc:
        raise ModelError(f"parameter shapes do not broadcast: {[tuple(t.shape) for t in tensors]}") from exc


# ---------------------------------------------------------------------------------------------
class Uniform(EntropyModel):
    """Uniform over ``0..n-1`` (``1 <= n <= 2**31``), quantised as ``C(i) = floor(i * 2**P / n)``."""

    def __init__(self, n: int, shape=(), device=None, precision: int | None = None):
        if not 1 <= n <= (1 << MAX_PRECISION):
            raise ModelError(f"uniform alphabet size must be in [1, 2**31], got {n}")
        self.n = int(n)
        self.precision = precision if precision is not None else max(1, (self.n - 1).bit_length())
        _check_precision(self.precision, self.n)
        self.shape = tuple(shape)
        self.device = device

    def _cum(self, i):
        return (i << self.precision) // self.n

    def interval(self, symbols):
        lo = self._cum(symbols)
        return lo, self._cum(symbols + 1) - lo

    def lookup(self, slot):
        sym = ((slot + 1) * self.n - 1) >> self.precision
        lo = self._cum(sym)
        return sym, lo, self._cum(sym + 1) - lo



# ---------------------------------------------------------------------------------------------
class Bernoulli(EntropyModel):
    """Bernoulli over {0, 1} from the probability of 1 (``probs``) or its logit (``logits``).

    ``freq(1) = floor(p * (2**P - 2)) + 1``.
    """

    _params = (("_freq1", 0),)

    def __init__(self, probs=None, logits=None, precision: int = 24):
        if (probs is None) == (logits is None):
            raise ModelError("give exactly one of probs and logits")
        _check_precision(precision, 2)
        if probs is not None:
            p = torch.as_tensor(probs).to(torch.float64)
            if p.numel():
                lo, hi = torch.aminmax(p)
                if bool(torch.isnan(lo)) or bool(torch.isnan(hi)):
                    raise ModelError("probs contains NaN")
                if not (float(lo) >= 0 and float(hi) <= 1):
                    raise ModelError("probs must lie in [0, 1]")
        else:
            p = _sigmoid(_as_float64("logits", logits))
        self.n = 2
        self.precision = precision
        self.shape = tuple(p.shape)
        self._freq1 = torch.floor(p * float((1 << precision) - 2)).to(torch.int64) + 1

    def interval(self, symbols):
        freq0 = (1 << self.precision) - self._freq1
        one = symbols.to(torch.bool)
        return torch.where(one, freq0, torch.zeros_like(freq0)), torch.where(one, self._freq1, freq0)

    def lookup(self, slot):
        freq0 = (1 << self.precision) - self._freq1
        one = slot >= freq0
        sym = one.to(torch.int64)
        return sym, torch.where(one, freq0, torch.zeros_like(freq0)), torch.where(one, self._freq1, freq0)



class PackedBernoulli(EntropyModel):
    """``k`` independent bits coded as one symbol: the tuple ``(b_0, ..., b_{k-1})`` read as the
    integer ``sum b_j 2**(k-1-j)``, with ``probs`` (or ``logits``) of shape ``(*batch, k)``.

    The interval is found by splitting ``[0, 2**precision)`` bit by bit (binary arithmetic coding
    inside one rANS step): a range of size ``R`` at bit ``j`` gives ``[0, c)`` to 0 and
    ``[c, R)`` to 1 with ``c = floor(R * (1 - p_j))`` clamped so that both halves keep at least
    ``2**(k-1-j)`` (every tuple keeps frequency >= 1). Near-certain bits cost almost nothing, so
    one rANS operation carries up to ``k`` pixels of a binary image.
    """

    _params = (("_p0", 1),)

    def __init__(self, probs=None, logits=None, precision: int = 31):
        if (probs is None) == (logits is None):
            raise ModelError("give exactly one of probs and logits")
        p = _as_float64("probs", probs) if probs is not None else _sigmoid(_as_float64("logits", logits))
        if p.dim() < 1:
            raise ModelError("packed bits need a last axis of bits")
        if probs is not None and bool(((p < 0) | (p > 1)).any()):
            raise ModelError("probs must lie in [0, 1]")
        k = p.shape[-1]
        _check_precision(precision, 1 << k)
        self.k, self.n, self.precision, self.shape = k, 1 << k, precision, tuple(p.shape[:-1])
        self._p0 = 1.0 - p

    def _split(self, size: torch.Tensor, j: int) -> torch.Tensor:
        reserve = 1 << (self.k - 1 - j)
        cut = torch.floor(size.to(torch.float64) * self._p0[..., j]).to(torch.int64)
        return torch.minimum(torch.maximum(cut, torch.full_like(cut, reserve)), size - reserve)

    def interval(self, symbols):
        lo = torch.zeros(self.shape, dtype=torch.int64, device=self._p0.device)
        size = torch.full_like(lo, 1 << self.precision)
        for j in range(self.k):
            bit = ((symbols >> (self.k - 1 - j)) & 1).to(torch.bool)
            cut = self._split(size, j)
            lo = torch.where(bit, lo + cut, lo)
            size = torch.where(bit, size - cut, cut)
        return lo, size

    def lookup(self, slot):
        lo = torch.zeros_like(slot)
        size = torch.full_like(slot, 1 << self.precision)
        sym = torch.zeros_like(slot)
        for j in range(self.k):
            cut = self._split(size, j)
            bit = slot >= lo + cut
            sym = (sym << 1) | bit.to(torch.int64)
            lo = torch.where(bit, lo + cut, lo)
            size = torch.where(bit, size - cut, cut)
        return sym, lo, size


    @staticmethod
    def pack(bits: torch.Tensor) -> torch.Tensor:
        """Bits of shape ``(*batch, k)`` to tuple symbols of shape ``batch``."""
        k = bits.shape[-1]
        weights = 1 << torch.arange(k - 1, -1, -1, device=bits.device)
        return (bits.to(torch.int64) * weights).sum(-1)

    @staticmethod
    def unpack(symbols: torch.Tensor, k: int) -> torch.Tensor:
        """Inverse of :meth:`pack`."""
        shifts = torch.arange(k - 1, -1, -1, device=symbols.device)
        return (symbols.unsqueeze(-1) >> shifts) & 1


# ---------------------------------------------------------------------------------------------
_CAT_BITS = 22  # probabilities are quantised to integers of up to 22 bits relative to the row max


def _cat_bits(n: int) -> int:
    """The quantisation bits of ``n`` symbols: 22 below 512, fewer above, so that their sum, at
    most ``n * 2**bits``, stays below ``2**31`` (the int32 prefix sums)."""
    return max(0, min(_CAT_BITS, 31 - n.bit_length()))


class Categorical(EntropyModel):
    """Categorical over ``0..n-1`` from probabilities or logits along the last axis.

    Probabilities (any non-negative weights; they need not sum to 1) are quantised exactly:
    ``q_i = floor(p_i / max_j p_j * 2**b)`` with ``b = 22`` for ``n < 512`` (fewer bits above, so
    that the prefix sums fit in int32), ``Q`` their integer prefix sums, and
    ``C(i) = floor(Q_i * (2**P - n) / Q_n) + i``. Logits go through :func:`detmath.softmax`-style
    table exponentials first. All integer arithmetic, so identical on every device.
    """

    _params = (("_cum_q", 1), ("_total", 1))

    def __init__(self, probs=None, logits=None, precision: int = 24):
        if (probs is None) == (logits is None):
            raise ModelError("give exactly one of probs and logits")
        src = probs if probs is not None else logits
        t = torch.as_tensor(src)
        if t.dim() < 1 or t.shape[-1] < 1:
            raise ModelError("categorical parameters need a last axis of symbols")
        n = t.shape[-1]
        _check_precision(precision, n)
        if probs is not None:
            if not t.is_floating_point():
                t = t.to(torch.float64)
            if t.dtype in (torch.float32, torch.float64) and kernels.enabled(t) and t.numel():
                # checked now; the prefix sums are made only if the torch path asks for them (the
                # compiled coding loops read the probabilities directly)
                error = kernels.check_probs(t)
                if error:
                    raise ModelError(error)
                self.n, self.precision, self.shape = n, precision, tuple(t.shape[:-1])
                self._probs, self._params = t, (("_probs", 1),)
                return
            lo, hi = torch.aminmax(t, dim=-1) if n > 1 else (t[..., 0], t[..., 0])
            if bool(torch.isnan(hi).any()) or bool(torch.isnan(lo).any()):
                raise ModelError("probs contains NaN")
            if bool((lo < 0).any()):
                raise ModelError("probs must be non-negative")
            if bool(torch.isinf(hi).any()):
                raise ModelError("probs must be finite")
            self._init_from_prefix_sums(self._quantised_prefix_sums(t, hi), precision)
            return
        lg = _as_float64("logits", t)
        if bool(torch.isinf(lg).any()):
            finite = torch.isfinite(lg)
            if bool((~finite & (lg > 0)).any()):
                raise ModelError("logits must not be +inf")
        w = detmath.exp_nonpositive(lg - lg.amax(dim=-1, keepdim=True))
        self._init_from_weights(torch.floor(w * float(1 << _cat_bits(n))).to(torch.int32), precision)

    def __getattr__(self, name):
        # models made from probabilities on the CPU build their prefix sums on first use
        if name in ("_cum_q", "_total") and "_probs" in self.__dict__:
            cum_q = kernels.quantised_prefix_sums(self.__dict__["_probs"])
            self.__dict__["_cum_q"], self.__dict__["_total"] = cum_q, cum_q[..., -1:].to(torch.int64)
            return self.__dict__[name]
        raise AttributeError(name)

    def _map(self, fn):
        out = super()._map(fn)
        if "_probs" in out.__dict__:  # the copy's prefix sums, if needed, come from its own rows
            out.__dict__.pop("_cum_q", None)
            out.__dict__.pop("_total", None)
        return out

    _ROWS_PER_BLOCK = 2048  # keeps a block's temporaries in cache

    @classmethod
    def _quantised_prefix_sums(cls, t: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Prefix sums (int32) of ``floor(p / max(p) * 2**b)`` (all-zero rows: uniform), computed
        block by block of rows so that the quantised temporaries stay in cache: the probabilities
        are read from memory once and the prefix sums written once."""
        n = t.shape[-1]
        rows = t.reshape(-1, n)
        scale = torch.where(hi > 0, float(1 << _cat_bits(n)) / hi.to(torch.float64), torch.zeros_like(hi, dtype=torch.float64))
        scale = scale.reshape(-1, 1).to(t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float64)
        out = torch.empty(rows.shape, dtype=torch.int32, device=t.device)
        step = cls._ROWS_PER_BLOCK
        for lo in range(0, rows.shape[0], step):
            q = (rows[lo: lo + step] * scale[lo: lo + step]).to(torch.int32)  # truncation = floor here
            torch.cumsum(q, dim=-1, dtype=torch.int32, out=out[lo: lo + step])
        zero = hi.reshape(-1) <= 0
        if bool(zero.any()):
            out[zero] = torch.arange(1, n + 1, dtype=torch.int32, device=t.device)
        return out.reshape(t.shape)

    def _init_from_weights(self, q: torch.Tensor, precision: int):
        self._init_from_prefix_sums(torch.cumsum(q, dim=-1, dtype=torch.int32), precision)

    def _init_from_prefix_sums(self, cum_q: torch.Tensor, precision: int):
        self.n = cum_q.shape[-1]
        self.precision = precision
        self.shape = tuple(cum_q.shape[:-1])
        self._cum_q = cum_q  # Q_1..Q_n
        self._total = cum_q[..., -1:].to(torch.int64)

    def _prefix(self, i: torch.Tensor) -> torch.Tensor:
        """Q_i (sum of the first i weights) for index tensors of the batch shape, 0 <= i <= n."""
        g = torch.gather(self._cum_q, -1, (torch.clamp(i, 1, self.n) - 1).unsqueeze(-1)).squeeze(-1)
        return torch.where(i <= 0, torch.zeros_like(g), g).to(torch.int64)

    def _cum(self, i: torch.Tensor) -> torch.Tensor:
        scale = (1 << self.precision) - self.n
        return torch.div(self._prefix(i) * scale, self._total.squeeze(-1), rounding_mode="floor") + i

    def interval(self, symbols):
        lo = self._cum(symbols)
        return lo, self._cum(symbols + 1) - lo

    def lookup(self, slot):
        # Largest i with C(i) <= slot, i.e. Q_i * scale < (slot - i + 1) * Q_n, by bisection.
        scale = (1 << self.precision) - self.n
        total = self._total.squeeze(-1)
        sym = torch.zeros_like(slot)
        for bit in reversed(range(max(1, (self.n - 1).bit_length()))):
            cand = sym + (1 << bit)
            ok = cand < self.n
            cand_safe = torch.where(ok, cand, sym)
            take = ok & (self._prefix(cand_safe) * scale < (slot - cand_safe + 1) * total)
            sym = torch.where(take, cand, sym)
        lo = self._cum(sym)
        return sym, lo, self._cum(sym + 1) - lo



# ---------------------------------------------------------------------------------------------
class DiscretizedLogistic(CDFModel):
    """Logistic with ``mean`` and ``scale`` discretised to the integers ``0..n-1`` with open
    edge bins (PixelCNN++): ``F(i) = sigmoid((i - 0.5 - mean) / scale)``."""

    _params = (("mean", 0), ("inv_scale", 0))

    def __init__(self, mean, scale, n: int = 256, precision: int = 24):
        _check_precision(precision, n)
        mean, scale = _broadcast(_as_float64("mean", mean), _as_float64("scale", scale))
        if bool((scale <= 0).any()):
            raise ModelError("scale must be positive")
        self.n, self.precision, self.shape = int(n), precision, tuple(mean.shape)
        self.mean, self.inv_scale = mean, 1.0 / scale

    def edge_cdf(self, i):
        return detmath.sigmoid((i.to(torch.float64) - 0.5 - self.mean) * self.inv_scale)



class _CompiledOnCPU:
    """For CDF models with compiled kernels: on the CPU, :meth:`interval` and :meth:`lookup` run
    in :mod:`bbcodec.kernels` (the same integers, one loop); ``_anchor`` names the parameter
    tensor whose device decides."""

    _anchor = ""

    def interval(self, symbols):
        if kernels.enabled(symbols, getattr(self, self._anchor)):
            return kernels.interval(self, symbols)
        return super().interval(symbols)

    def lookup(self, slot):
        if kernels.enabled(slot, getattr(self, self._anchor)):
            return kernels.lookup(self, slot)
        return super().lookup(slot)


class LogisticMixture(_CompiledOnCPU, CDFModel):
    """Mixture of discretised logistics over ``0..n-1`` (last axis = components), optionally with
    point masses on the two end symbols.

    ``weights`` are the components' probabilities or ``logits`` their log-weights. The scales are
    given as ``scales`` (positive) or as ``log_scales``, which stand for
    ``detmath.exp_scale(log_scales)`` exactly (computed in the compiled setup on the CPU). With
    ``end_masses=True`` the last two weights (or logits) belong to point masses at ``0`` and
    ``n-1`` rather than to logistics (so ``means``/``scales`` have two fewer components):
    ``F(i) = w_low + sum_k w_k sigmoid((i - 0.5 - mean_k) / scale_k)``. Weights are normalised
    and components summed in index order, so the result is deterministic.
    """

    _params = (("slopes", 1), ("intercepts", 1), ("weights", 1), ("low_mass", 0))
    _anchor = "slopes"

    def __init__(self, means, scales=None, weights=None, logits=None, n: int = 256, precision: int = 24,
                 end_masses: bool = False, log_scales=None):
        _check_precision(precision, n)
        if (weights is None) == (logits is None):
            raise ModelError("give exactly one of weights and logits")
        if (scales is None) == (log_scales is None):
            raise ModelError("give exactly one of scales and log_scales")
        means = _as_float64("means", means)
        if log_scales is not None:
            log_scales = _as_float64("log_scales", log_scales)
            if logits is not None and self._setup_by_kernel(means, log_scales, logits, n, precision, end_masses, True):
                return
            scales = detmath.exp_scale(log_scales)
        scales = _as_float64("scales", scales)
        if logits is not None and self._setup_by_kernel(means, scales, logits, n, precision, end_masses):
            return
        if weights is not None:
            w = _as_float64("weights", weights)
            if bool((w < 0).any()):
                raise ModelError("mixture weights must be non-negative")
        else:
            w = detmath.softmax(_as_float64("logits", logits))
        if means.dim() < 1 or w.dim() < 1:
            raise ModelError("mixture parameters need a last axis of components")
        extra = 2 if end_masses else 0
        if w.shape[-1] != means.shape[-1] + extra:
            raise ModelError(f"{w.shape[-1]} weights for {means.shape[-1]} components"
                             f"{' and 2 end masses' if end_masses else ''}")
        total = w[..., 0].clone()
        for k in range(1, w.shape[-1]):
            total = total + w[..., k]
        if bool((total <= 0).any()):
            raise ModelError("mixture weights sum to zero")
        w = w / total.unsqueeze(-1)
        low = w[..., -2] if end_masses else torch.zeros_like(w[..., 0])
        w = w[..., : means.shape[-1]]
        means, scales, w = _broadcast(means, scales, w)
        low = low.expand(means.shape[:-1])
        if bool((scales <= 0).any()):
            raise ModelError("scales must be positive")
        self.n, self.precision, self.shape = int(n), precision, tuple(means.shape[:-1])
        inv = 1.0 / scales
        # sigmoid((i - 0.5 - mean) / scale) = table(i * slope + intercept), per component
        self.slopes, self.intercepts = detmath.sigmoid_table().coordinate_map(inv, (-0.5 - means) * inv)
        self.weights, self.low_mass = w, low

    def _setup_by_kernel(self, means, scales, logits, n, precision, end_masses, log=False) -> bool:
        """On the CPU, the same parameters from one compiled pass (:func:`kernels.mixture_setup`;
        ``log``: ``scales`` are log-scales), for finite logits (and log-scales) whose shapes need
        no broadcasting; False where the torch code must run."""
        logits = _as_float64("logits", logits)
        extra = 2 if end_masses else 0
        if not (kernels.enabled(means, scales, logits) and means.dim() >= 1 and means.shape == scales.shape
                and logits.shape == means.shape[:-1] + (means.shape[-1] + extra,)
                and bool(torch.isfinite(logits.sum())) and (not log or bool(torch.isfinite(scales.sum())))):
            return False
        if not log and bool((scales <= 0).any()):
            raise ModelError("scales must be positive")
        self.n, self.precision, self.shape = int(n), precision, tuple(means.shape[:-1])
        self.slopes, self.intercepts, self.weights, self.low_mass = kernels.mixture_setup(
            means, scales, logits, end_masses, log_scales=log)
        return True

    _F_BITS = 32  # the mixture CDF is summed as integers in units of 2**-32: exact, so order-free

    def cumulative(self, i):
        """``C(i) = floor(F(i) * (2**P - n) / 2**32) + i`` with ``F`` summed as exact integers over
        the components, all components evaluated in one batched table lookup."""
        x = i.to(torch.float64).clamp(1, self.n - 1).unsqueeze(-1)
        s = detmath.sigmoid_table().at_coordinate(x * self.slopes + self.intercepts)
        f = torch.floor(s * self.weights * float(1 << self._F_BITS)).to(torch.int64).sum(-1)
        f = torch.clamp(f + self._low_units, 0, 1 << self._F_BITS)
        c = ((f * ((1 << self.precision) - self.n)) >> self._F_BITS) + i
        c = torch.where(i <= 0, torch.zeros_like(c), c)
        return torch.where(i >= self.n, torch.full_like(c, 1 << self.precision), c)

    @property
    def _low_units(self):
        return torch.floor(self.low_mass * float(1 << self._F_BITS)).to(torch.int64)



# ---------------------------------------------------------------------------------------------
class BetaBinomial(Categorical):
    """Beta-binomial over ``0..n`` with concentrations ``alpha, beta > 0``.

    The pmf is computed in float64 via ``lgamma`` (deterministic on a given device), then
    quantised exactly like :class:`Categorical` probabilities.
    """

    def __init__(self, n: int, alpha, beta, precision: int = 24):
        alpha, beta = _broadcast(_as_float64("alpha", alpha), _as_float64("beta", beta))
        if bool(((alpha <= 0) | (beta <= 0)).any()) or bool((torch.isinf(alpha) | torch.isinf(beta)).any()):
            raise ModelError("alpha and beta must be positive and finite")
        k = torch.arange(n + 1, dtype=torch.float64, device=alpha.device)
        a, b = alpha.unsqueeze(-1), beta.unsqueeze(-1)
        log_pmf = (
            torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
            + torch.lgamma(k + a) + torch.lgamma(n - k + b) - torch.lgamma(n + a + b)
            - torch.lgamma(a) - torch.lgamma(b) + torch.lgamma(a + b)
        )
        super().__init__(probs=torch.exp(log_pmf - log_pmf.amax(-1, keepdim=True)), precision=precision)


# ---------------------------------------------------------------------------------------------
class GaussianOnBins(_CompiledOnCPU, CDFModel):
    """A Gaussian ``N(mean, scale**2)`` discretised onto ``2**bits`` bins of a standard-normal
    prior's max-entropy grid, transformed by ``prior_mean + prior_scale * u`` (``u`` the standard
    edges). With ``prior_mean=0, prior_scale=1`` the bins are BB-ANS's fixed equal-mass bins of
    N(0, 1); with a conditional prior's parameters they are HiLLoC's dynamic, equal-mass-under-
    the-prior bins. ``F(i) = Phi((prior_mean + prior_scale * u_i - mean) / scale)``.
    """

    _params = (("mean", 0), ("inv_scale", 0), ("prior_mean", 0), ("prior_scale", 0))
    _anchor = "mean"

    def __init__(self, mean, scale, bits: int, prior_mean=0.0, prior_scale=1.0, precision: int = 24):
        n = 1 << bits
        _check_precision(precision, n)
        mean, scale, pm, ps = _broadcast(
            _as_float64("mean", mean), _as_float64("scale", scale),
            _as_float64("prior_mean", prior_mean, None), _as_float64("prior_scale", prior_scale, None),
        )
        if bool((scale <= 0).any()) or bool((ps <= 0).any()):
            raise ModelError("scales must be positive")
        self.n, self.bits, self.precision, self.shape = n, bits, precision, tuple(mean.shape)
        self.mean, self.inv_scale, self.prior_mean, self.prior_scale = mean, 1.0 / scale, pm, ps
        self._edges, _ = detmath.max_entropy_bins(bits, mean.device)

    def edge_cdf(self, i):
        u = self._edges[i - 1]
        return detmath.normal_cdf((self.prior_mean + self.prior_scale * u - self.mean) * self.inv_scale)



def bin_centres(bins: torch.Tensor, bits: int, prior_mean=0.0, prior_scale=1.0) -> torch.Tensor:
    """Latent values of bin indices: ``prior_mean + prior_scale * Phi^-1((i + 1/2) / 2**bits)``."""
    _, centres = detmath.max_entropy_bins(bits, bins.device)
    return prior_mean + prior_scale * centres[bins]
