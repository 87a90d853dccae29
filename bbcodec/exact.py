"""Exact fixed-point evaluation of a user's own float networks.

:func:`exact` turns a plain ``torch.nn.Module`` built from standard layers into an
:class:`ExactModule` that evaluates it in the numerics of :mod:`bbcodec.models.fixedpoint`, so
that the same weights and inputs give **bit-identical** outputs on every machine, thread count,
batch shape and device -- what a bits-back codec needs from its encoder and decoder networks::

    net = MyDecoder().eval()
    exact_net = exact(net)            # traced once with torch.fx
    params = exact_net(z)             # float64 values on the 2**-12 grid, identical everywhere
    exactness_report(net, z)          # {'max_abs_diff': ..., 'mean_abs_diff': ...}

**Numerics.** Every activation is a real number on the grid of multiples of ``2**-ACT_BITS``
(``2**-12``) with ``|a| < 2**12``, held in float64 as an integer count of grid steps ("units",
``|u| <= 2**24 - 1``). Inputs are rounded to the grid (:func:`~bbcodec.models.fixedpoint.to_grid`:
round half to even) and clamped to that range; the result of every operation that computes new
values is rounded to the grid (half to even) and clamped likewise, as
:class:`~bbcodec.models.fixedpoint.ExactNumerics` does. Why each operation is exact, or at least
deterministic (a fixed function of its integer inputs), whatever the machine:

* ``Linear``, ``Conv2d`` and ``ConvTranspose2d`` use weights rounded to multiples of
  ``2**-WEIGHT_BITS`` (``|w| < 16``) and biases on the activation grid, exactly as
  ``ExactNumerics._weights`` quantises them. A product of an activation and a weight is then a
  multiple of ``2**-12`` below ``2**28``; an output sums at most ``MAX_FAN_IN = 2**11`` of them
  (checked when converting: the fan-in of a linear map or convolution; for a transposed
  convolution the input channels per group times the kernel taps that can land on one output),
  so every partial sum has at most 51 significant bits and is exact in float64. The sum then does
  not depend on its order: not on BLAS blocking, threads, batch shape or device. Convolutions are
  torch's float64 convolution on the CPU (a direct sum there) and elsewhere an im2col
  (``F.unfold``, pure data movement) and one matrix product; transposed convolutions
  are one matrix product to columns and ``F.fold``, which adds exact integers (any order).
* Sums and differences of two activations are sums of integers below ``2**25``; a product of two
  activations is an integer below ``2**48`` times ``2**-12``; a product with a parameter tensor
  (rounded to the weight grid) is below ``2**40``: all exact before the final rounding. A
  parameter or buffer added to, subtracted from or concatenated with activations is rounded to
  the activation grid first.
* Multiplication or division by a Python constant, and ``LeakyReLU``'s negative slope, are one
  IEEE-754 multiply or divide each -- correctly rounded by the standard, hence the same everywhere
  -- followed by the rounding to the grid. Adding a constant adds its value in units (one IEEE
  addition) before rounding.
* ``Tanh``, ``Sigmoid``, ``SiLU``, ``Softplus`` and ``ELU`` are **dense lookup tables over the
  grid**: entry ``i`` is ``round_half_even(f(i * 2**-12) * 2**12)``, computed once per function
  (and hyperparameters) with numpy from IEEE basic operations only (+, -, *, /, floor, abs,
  comparisons): ``exp`` is :func:`bbcodec.detmath._exp_np` (range reduction and a Taylor
  polynomial), ``log1p`` the series ``2*atanh(y/(2+y))`` below, ``tanh(x) = (1-e)/(1+e)`` with
  ``e = exp(-2|x|)``, ``sigmoid`` and ``silu = x*sigmoid(x)`` from ``exp(-|x|)``, ``softplus(x) =
  (max(y,0) + log1p(exp(-|y|)))/beta`` with ``y = beta*x``. IEEE-754 requires each of those
  operations to be correctly rounded, and each numpy ufunc call is one such operation per element
  (no fused or reassociated arithmetic across calls), so every table entry is the same number on
  every machine: the table is a pure function of this code. At run time the table is only
  indexed (``torch.take`` of exact integers at an integer index) and compared, so the output is
  a fixed function of the integer input. Beyond the table the function is constant or the
  identity on the grid: the table is extended until its ends are within ``2**-10`` grid steps of
  that limit (checked when it is built) and then trimmed to where the rounded values differ from
  it; outputs are the correctly rounded values everywhere (out there, to within one grid step
  should a constant limit sit within ``2**-10`` steps of a rounding tie: only ELU with an odd
  ``alpha`` could).
* ``ReLU``, ``ReLU6``, ``Hardtanh`` and ``clamp`` (bounds rounded to the grid), max pooling,
  nearest upsampling by integer factors (``repeat_interleave``), padding, concatenation, slicing,
  reshapes and permutations only select or move values: exact.
* ``mean`` is an exact integer sum divided once (IEEE division) by the element count.

**Contract.** :func:`exact` traces the module once with ``torch.fx`` (standard ``torch.nn`` layers
are leaves, anything else -- ``Sequential``, your own modules -- is traced through) and checks
every operation of the graph when converting; the first one it cannot evaluate exactly raises
:class:`UnsupportedOperation` naming it and its fx node. Hyperparameters (strides, slopes,
modes, ...) are read when converting; parameters and buffers are read at every call and
re-quantised when they change (in place or replaced). Every argument of ``forward`` is an input
tensor. ``Dropout`` layers are the identity (eval semantics) whatever the module's training flag.
In-place operations (``inplace=True``, ``x.add_(y)``) are evaluated out of place and the mutated
value replaces its input for later uses (a mutation seen only through an earlier view is not
reproduced).

Outputs are float64 tensors of real values on the grid (exact multiples of ``2**-12``), in the
structure the module returns (a tensor, or tuples, lists and dicts of them); calls run without
autograd and work under ``torch.inference_mode``.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import linecache
import math
import operator
import os
import sys
import traceback
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.node import map_arg

from .detmath import _exp_np
from .errors import BBCodecError
from .models.fixedpoint import ACT_BITS, ACT_LIMIT, MAX_FAN_IN, WEIGHT_BITS, WEIGHT_LIMIT, conv2d_units, quantise

__all__ = ["exact", "ExactModule", "exactness_report", "supported", "UnsupportedOperation", "ExactnessError"]

UNIT = float(1 << ACT_BITS)  # one real unit in grid steps
STEP = 1.0 / UNIT  # the grid step, 2**-12
_LO, _HI = -ACT_LIMIT + 1, ACT_LIMIT - 1  # activation range in units
_WSTEP = 1.0 / (1 << WEIGHT_BITS)
_MAX_SUM_TERMS = 1 << 29  # integers below 2**24: a sum of this many stays below 2**53


class UnsupportedOperation(BBCodecError):
    """The module uses an operation (a layer, function, method or argument) that
    :func:`exact` cannot evaluate exactly, or cannot be traced by ``torch.fx``."""


class ExactnessError(UnsupportedOperation):
    """A supported layer whose size breaks the exactness bounds (fan-in above ``MAX_FAN_IN``)."""


# kinds of values in the traced graph, known when converting
ACT = "activation"  # a tensor of activations, held in units
SEQ = "sequence"  # a tuple of activation tensors (chunk, split, unbind)
META = "meta"  # a Python value computed at run time from shapes (x.shape, x.size(0), ...)
PARAM = "parameter"  # a parameter or buffer of the module (get_attr), a raw float tensor
CONST = "constant"  # a literal in the graph
_TENSORS = (ACT, SEQ, PARAM)


# ---------------------------------------------------------------------------------------------
# exact numerics on units tensors


def _finish(y: torch.Tensor) -> torch.Tensor:
    """Round a fresh float64 tensor of values in units to integers (half to even) and clamp it to
    the activation range, in place."""
    return y.round_().clamp_(_LO, _HI)


def _to_units(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bbcodec.exact: input '{name}' must be a torch.Tensor, not {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"bbcodec.exact: input '{name}' is complex; inputs must be real")
    u = torch.round(x.detach().to(torch.float64) * UNIT).clamp_(_LO, _HI)
    if u.is_floating_point() and bool(torch.isnan(u).any()):
        raise ValueError(f"bbcodec.exact: input '{name}' contains NaN")
    return u


def _const_units(c, what: str) -> float:
    """A Python number as a (possibly fractional) count of grid steps, for additions."""
    c = _number(c, what)
    return c * UNIT


def _number(c, what: str) -> float:
    """A finite Python number (the graph's constants, or shape values computed at run time)."""
    if not isinstance(c, (int, float)):
        raise UnsupportedOperation(f"bbcodec.exact: {what} must be a Python number, not {type(c).__name__}")
    c = float(c)
    if not math.isfinite(c):
        raise UnsupportedOperation(f"bbcodec.exact: {what} must be finite, not {c}")
    return c


def _grid_bound(c) -> float | None:
    """A clamp bound in units: the grid value nearest ``c`` (clamping commutes with the monotone
    rounding, so ``round(clamp(x, c)) = clamp(round(x), round(c))``), within the range."""
    if c is None:
        return None
    return float(min(max(round(_number(c, "a clamp bound") * UNIT), _LO), _HI))


def _linear_units(u, w, b):
    """``u`` (..., in) activations, ``w`` (in, out) real weights, ``b`` (out,) bias in units."""
    shape = u.shape
    x = u.reshape(-1, shape[-1])
    y = torch.addmm(b, x, w) if b is not None else x @ w  # exact: see the module docstring
    return _finish(y).reshape(*shape[:-1], w.shape[1])


def _conv2d_units(u, w, b, kernel, stride, dilation, pads, pad_mode, groups):
    """2-d convolution by im2col and one (batched) matrix product. ``w``: (fan_in, out) real
    weights in im2col order; ``pads``: F.pad order (left, right, top, bottom)."""
    unbatched = u.dim() == 3
    if unbatched:
        u = u.unsqueeze(0)
    if any(pads):
        u = F.pad(u, pads) if pad_mode == "zeros" else F.pad(u, pads, mode=pad_mode)
    n, _, h, wd = u.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    fan_in, out = w.shape
    if u.device.type == "cpu":  # direct sums on the CPU: exact, see fixedpoint.conv2d_units
        y = _finish(conv2d_units(u, w, b, (out, fan_in // (kh * kw), kh, kw), (sh, sw), (0, 0), (dh, dw), groups))
        return y[0] if unbatched else y
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(u, (kh, kw), dilation=(dh, dw), stride=(sh, sw))  # (N, C*kh*kw, L)
    if groups == 1:
        cols = cols.transpose(1, 2).reshape(n * oh * ow, fan_in)
        y = torch.addmm(b, cols, w) if b is not None else cols @ w
    else:
        cols = cols.reshape(n, groups, fan_in, oh * ow).permute(1, 0, 3, 2).reshape(groups, n * oh * ow, fan_in)
        wg = w.reshape(fan_in, groups, out // groups).permute(1, 0, 2)
        y = torch.bmm(cols, wg).permute(1, 0, 2).reshape(n * oh * ow, out)
        if b is not None:
            y = y + b
    # contiguous NCHW, as torch's convolutions return (so that views behave alike)
    y = _finish(y).reshape(n, oh * ow, out).transpose(1, 2).reshape(n, out, oh, ow).contiguous()
    return y[0] if unbatched else y


def _conv_transpose2d_units(u, w, b, stride, padding, output_padding, dilation, groups):
    """Transposed 2-d convolution: one (batched) matrix product from each input position to its
    ``out * kh * kw`` contributions, then ``F.fold`` adds them into place (exact integers, any
    order). ``w``: (C_in, out/groups, kh, kw) real weights."""
    unbatched = u.dim() == 3
    if unbatched:
        u = u.unsqueeze(0)
    n, c, h, wd = u.shape
    cin, og, kh, kw = w.shape
    out = og * groups
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    length = h * wd
    x = u.reshape(n, c, length)
    if groups == 1:
        cols = x.transpose(1, 2).reshape(n * length, c) @ w.reshape(cin, og * kh * kw)
        cols = cols.reshape(n, length, out * kh * kw).transpose(1, 2)
    else:
        cg = cin // groups
        xg = x.reshape(n, groups, cg, length).permute(1, 0, 3, 2).reshape(groups, n * length, cg)
        cols = torch.bmm(xg, w.reshape(groups, cg, og * kh * kw))  # (G, N*L, og*kh*kw)
        cols = cols.reshape(groups, n, length, og * kh * kw).permute(1, 0, 3, 2).reshape(n, out * kh * kw, length)
    # the whole canvas every contribution lands on, then the output window of it
    full_h, full_w = (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1
    y = F.fold(cols, (full_h, full_w), (kh, kw), dilation=(dh, dw), stride=(sh, sw))
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    y = y[:, :, ph:ph + oh, pw:pw + ow]
    if y.shape[2] < oh or y.shape[3] < ow:  # output padding beyond the canvas: no contributions
        y = F.pad(y, (0, ow - y.shape[3], 0, oh - y.shape[2]))
    y = y.contiguous()
    if b is not None:
        y = y + b.view(1, -1, 1, 1)
    y = _finish(y)
    return y[0] if unbatched else y


def _taps(k: int, s: int, d: int) -> int:
    """Most kernel taps of a transposed convolution (kernel ``k``, stride ``s``, dilation ``d``)
    landing on one output position along a dimension: those with ``a*d`` in one class mod ``s``."""
    return min(k, -(-k * math.gcd(s, d) // s))


def _upsample_nearest_units(u, size, scale_factor):
    spatial = u.dim() - 2
    if spatial < 1:
        raise UnsupportedOperation("bbcodec.exact: interpolate needs (N, C, ...) inputs")
    if scale_factor is not None:
        factors = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * spatial
        factors = [_integer_factor(f) for f in factors]
    else:
        sizes = list(size) if isinstance(size, (tuple, list)) else [size] * spatial
        factors = []
        for have, want in zip(u.shape[2:], sizes):
            if want % have:
                raise UnsupportedOperation(
                    f"bbcodec.exact: nearest interpolation from size {have} to {want} is not an integer factor")
            factors.append(want // have)
    if len(factors) != spatial:
        raise UnsupportedOperation("bbcodec.exact: interpolate: scale factors do not match the spatial dimensions")
    for d, f in enumerate(factors):
        if f != 1:
            u = u.repeat_interleave(f, dim=2 + d)
    return u


def _integer_factor(f) -> int:
    if isinstance(f, bool) or not isinstance(f, (int, float)) or f < 1 or float(f) != int(f):
        raise UnsupportedOperation(f"bbcodec.exact: nearest interpolation needs integer scale factors >= 1, not {f!r}")
    return int(f)


def _reduce_units(u, dim, keepdim, mean: bool):
    dims = None if dim is None else ([dim] if isinstance(dim, int) else list(dim))
    count = u.numel() if dims is None else math.prod(u.shape[d] for d in dims)
    if dims is not None and not dims:  # an empty dim list reduces everything
        dims = None
        count = u.numel()
    if count > _MAX_SUM_TERMS:
        raise ExactnessError(f"bbcodec.exact: a sum of {count} activations is not exact in float64 "
                             f"(limit {_MAX_SUM_TERMS})")
    s = u.sum() if dims is None else u.sum(dims, keepdim=keepdim)  # exact: integers below 2**53
    if dims is None and keepdim:
        s = s.reshape([1] * u.dim())
    if mean:
        return _finish(s / float(count))  # one IEEE division
    return torch.clamp(s, _LO, _HI)


# ---------------------------------------------------------------------------------------------
# deterministic tables for the smooth nonlinearities

_CONVERGED = 2.0 ** -10  # table ends within this many grid steps of the limit
_TABLE_START, _TABLE_MAX = 16, 256  # half-widths tried, in real units (2**21 entries at most)


def _log1p_np(y: np.ndarray) -> np.ndarray:
    """log(1 + y) for y in [0, 1] from basic operations: ``2*atanh(s)``, ``s = y/(2+y) <= 1/3``,
    by the odd series ``2*s*(1 + s^2/3 + s^4/5 + ...)`` (24 terms: error below 1e-17)."""
    s = y / (2.0 + y)
    s2 = s * s
    p = np.full_like(s, 1.0 / 47.0)
    for k in range(22, -1, -1):
        p = p * s2 + 1.0 / (2 * k + 1)
    return 2.0 * s * p


def _sigmoid_np(x):
    e = _exp_np(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _tanh_np(x):
    e = _exp_np(-2.0 * np.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return np.where(x < 0, -t, t)


def _softplus_np(x, beta, threshold):
    y = x * beta
    v = (np.maximum(y, 0.0) + _log1p_np(_exp_np(-np.abs(y)))) / beta
    return np.where(y > threshold, x, v)


def _elu_np(x, alpha):
    return np.where(x > 0, x, alpha * (_exp_np(np.minimum(x, 0.0)) - 1.0))


def _table_spec(name: str, params: dict):
    """(f on float64 arrays of reals, left limit, right limit); a limit is ``("identity",)`` or
    ``("const", value)``."""
    if name == "sigmoid":
        return _sigmoid_np, ("const", 0.0), ("const", 1.0)
    if name == "tanh":
        return _tanh_np, ("const", -1.0), ("const", 1.0)
    if name == "silu":
        return (lambda x: x * _sigmoid_np(x)), ("const", 0.0), ("identity",)
    if name == "softplus":
        beta, threshold = params["beta"], params["threshold"]
        return (lambda x: _softplus_np(x, beta, threshold)), ("const", 0.0), ("identity",)
    if name == "elu":
        alpha = params["alpha"]
        return (lambda x: _elu_np(x, alpha)), ("const", -alpha), ("identity",)
    raise KeyError(name)


class _Table:
    """A nonlinearity on the grid: ``values[u - lo]`` for units ``lo <= u <= hi``, the edge values
    (constant limits) or ``u`` itself (identity limits) beyond."""

    def __init__(self, name, values: np.ndarray, lo: int, left: str, right: str):
        self.name = name
        self.values = torch.from_numpy(values.copy())
        self.lo, self.hi = float(lo), float(lo + values.size - 1)
        self.left_identity, self.right_identity = left == "identity", right == "identity"
        self._devices = {}

    def _on(self, device):
        key = str(device)
        if key not in self._devices:
            with torch.inference_mode(False):
                self._devices[key] = self.values.to(device)
        return self._devices[key]

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        values = self._on(u.device)
        idx = (torch.clamp(u, self.lo, self.hi) - self.lo).to(torch.int64)
        out = torch.take(values, idx)
        if self.left_identity:
            out = torch.where(u < self.lo, u, out)
        if self.right_identity:
            out = torch.where(u > self.hi, u, out)
        return out


@functools.lru_cache(maxsize=None)
def _table(name: str, params: tuple) -> _Table:
    """The dense grid table of a nonlinearity (see the module docstring for why it is the same on
    every machine). Raises ValueError when it does not settle within ``[-256, 256]``."""
    f, left, right = _table_spec(name, dict(params))
    half = _TABLE_START
    while True:
        n = half << ACT_BITS
        units = np.arange(-n, n + 1, dtype=np.float64)
        scaled = f(units * STEP) * UNIT  # scaling by powers of two is exact
        edges = []
        for limit, part, at in ((left, scaled[:64], units[:64]), (right, scaled[-64:], units[-64:])):
            target = at if limit[0] == "identity" else limit[1] * UNIT
            edges.append(bool(np.all(np.abs(part - target) < _CONVERGED)))
        if all(edges):
            break
        half *= 2
        if half > _TABLE_MAX:
            raise ValueError(f"{name}{dict(params)} does not settle to its limits within |x| <= {_TABLE_MAX}")
    values = np.round(scaled)  # half to even, like torch.round
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}{dict(params)}: table is not finite")
    values = np.clip(values, _LO, _HI)
    # trim the ends that follow the limits exactly (keeping one entry of each)
    lbad = values != (units if left[0] == "identity" else values[0])
    rbad = values != (units if right[0] == "identity" else values[-1])
    first = int(np.argmax(lbad)) if lbad.any() else values.size // 2
    last = values.size - 1 - int(np.argmax(rbad[::-1])) if rbad.any() else values.size // 2
    first, last = max(first - 1, 0), min(last + 1, values.size - 1)
    if first > last:
        first = last = values.size // 2
    return _Table(name, values[first:last + 1], int(units[first]), left[0], right[0])


def _activation(name: str, **params) -> Callable[[torch.Tensor], torch.Tensor]:
    """The units-to-units function of an elementwise nonlinearity (hyperparameters fixed)."""
    if name == "relu":
        return lambda u: torch.clamp(u, min=0.0)
    if name == "leaky_relu":
        slope = _number(params["negative_slope"], "negative_slope")
        return lambda u: _finish(torch.where(u < 0, u * slope, u))
    if name == "hardtanh":
        lo, hi = _grid_bound(params["min_val"]), _grid_bound(params["max_val"])
        return lambda u: torch.clamp(u, lo, hi)
    if name == "softplus":
        beta = _number(params["beta"], "softplus beta")
        threshold = _number(params["threshold"], "softplus threshold")
        if beta <= 0:
            raise UnsupportedOperation(f"bbcodec.exact: softplus needs beta > 0, not {beta}")
        table = _table("softplus", (("beta", beta), ("threshold", threshold)))
    elif name == "elu":
        table = _table("elu", (("alpha", _number(params["alpha"], "elu alpha")),))
    else:
        table = _table(name, ())
    return table


# ---------------------------------------------------------------------------------------------
# parameters


class _Quantiser:
    """Quantised parameters, cached per node and role; recomputed when the tensor is replaced,
    changed in place (its version), moved or reshaped."""

    def __init__(self):
        self._cache = {}

    def get(self, key, t: torch.Tensor, make):
        try:
            version = t._version
        except RuntimeError:  # an inference tensor keeps no version: recompute every time
            version = None
        stamp = (version, t.device, t.dtype, tuple(t.shape))
        hit = self._cache.get(key)
        if version is not None and hit is not None and hit[0]() is t and hit[1] == stamp:
            return hit[2]
        with torch.inference_mode(False), torch.no_grad():
            value = make(t.detach())
        self._cache[key] = (weakref.ref(t), stamp, value)
        return value

    # as ExactNumerics._weights: real weights on the 2**-WEIGHT_BITS grid, biases in units
    def weight_matrix(self, key, w):
        """(fan_in, out) real weights from an (out, ...) weight (Linear, Conv2d: im2col order)."""
        return self.get(key, w, lambda t: (quantise(t.double().reshape(t.shape[0], -1), WEIGHT_BITS, WEIGHT_LIMIT)
                                           * _WSTEP).t().contiguous())

    def weight_real(self, key, w):
        """Real weights on the weight grid, shape kept (ConvTranspose2d)."""
        return self.get(key, w, lambda t: quantise(t.double(), WEIGHT_BITS, WEIGHT_LIMIT) * _WSTEP)

    def weight_units(self, key, w):
        """Weights in weight-grid units (integers below 2**16), for elementwise products."""
        return self.get(key, w, lambda t: quantise(t.double(), WEIGHT_BITS, WEIGHT_LIMIT))

    def act_units(self, key, t):
        """A parameter used as an activation (added, concatenated): on the activation grid."""
        return self.get(key, t, lambda v: quantise(v.double(), ACT_BITS, ACT_LIMIT))


def _check_range(node, w: torch.Tensor | None, b: torch.Tensor | None):
    """Warn when quantisation will clip parameters (|w| >= 16, |b| >= 4096): exact, but lossy."""
    for t, bits, limit, what in ((w, WEIGHT_BITS, WEIGHT_LIMIT, "weights"), (b, ACT_BITS, ACT_LIMIT, "biases")):
        if t is None:
            continue
        big = float(t.detach().abs().max()) if t.numel() else 0.0
        if round(big * (1 << bits)) > limit - 1:
            warnings.warn(f"bbcodec.exact: node '{node.name}': {what} up to {big:g} are clipped to "
                          f"+-{(limit - 1) / (1 << bits):g} by the fixed-point grid", stacklevel=4)


# ---------------------------------------------------------------------------------------------
# conversion


@dataclass
class _Step:
    node: fx.Node
    impl: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    mutates: fx.Node | None = None  # an in-place operation: its input takes the result too
    drop: tuple = ()  # values no longer needed after this step


class _Kind:
    """A kind in an output template (so literal strings in outputs stay literals)."""
    __slots__ = ("kind",)

    def __init__(self, kind):
        self.kind = kind


def _qualname(target) -> str:
    if isinstance(target, type):
        mod = target.__module__
        if mod.startswith("torch.nn.modules"):
            return f"torch.nn.{target.__name__}"
        return f"{mod}.{target.__qualname__}"
    name = getattr(target, "__name__", None)
    if name:
        for prefix, mod in (("torch.nn.functional", F), ("torch", torch), ("torch.special", torch.special),
                            ("operator", operator), ("builtins", builtins), ("math", math)):
            if getattr(mod, name, None) is target:
                return f"{prefix}.{name}"
        mod = getattr(target, "__module__", None)
        return f"{mod}.{name}" if mod else name
    return repr(target)


_TORCH_DIR = os.path.dirname(torch.__file__)


def _user_frame(frames) -> str | None:
    """'file.py:12: code' of the innermost frame outside torch, from (filename, line, code)."""
    for filename, lineno, code in reversed(list(frames)):
        if filename and not os.path.abspath(filename).startswith(_TORCH_DIR) and os.path.abspath(filename) != __file__:
            code = (code or "").strip()
            return f"{os.path.basename(filename)}:{lineno}" + (f": {code}" if code else "")
    return None


class _Tracer(fx.Tracer):
    """fx's tracer, noting on each node the line of user code that made it (cheaply: fx's own
    ``record_stack_traces`` costs a second on first use)."""

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename != __file__:
            filename, lineno = frame.f_code.co_filename, frame.f_lineno
            code = linecache.getline(filename, lineno).strip()
            node.meta["bbcodec_source"] = f"{os.path.basename(filename)}:{lineno}" + (f": {code}" if code else "")
        return node


def supported() -> dict:
    """What :func:`exact` accepts: ``{"modules": [...], "functions": [...], "methods": [...]}``
    (torch.nn classes, functions by qualified name, tensor methods; in-place forms included)."""
    return {"modules": sorted(_qualname(c) for c in _MODULES),
            "functions": sorted({_qualname(f) for f in _FUNCTIONS}),
            "methods": sorted(_METHODS)}


def _supported_summary() -> str:
    mods = sorted({c.__name__ for c in _MODULES if "Dropout" not in c.__name__ and c is not nn.UpsamplingNearest2d})
    return (f"torch.nn.{{{', '.join(mods)}, Dropout*}} and their functional, torch. and tensor-method forms; "
            "cat, stack, chunk, split, reshapes, views, permutes, slicing, mean/sum; + - * of activations, "
            "* / + - with Python numbers (nn.Sequential and your own modules are traced through; full list: "
            "bbcodec.exact.supported())")


class _Converter:
    def __init__(self, root: nn.Module, graph: fx.Graph):
        self.root = root
        self.graph = graph
        self.kinds: dict[fx.Node, str] = {}
        self.quant = _Quantiser()

    # ----------------------------------------------------------------- errors and kinds
    def where(self, node) -> str:
        parts = [f"node '{node.name}'"]
        if node.op == "call_module" and node.target:
            parts.append(f"module '{node.target}'")
        src = node.meta.get("bbcodec_source")
        if src:
            parts.append(f"at {src}")
        return ", ".join(parts)

    def unsupported(self, node, what: str, detail: str | None = None) -> UnsupportedOperation:
        if detail:
            return UnsupportedOperation(f"bbcodec.exact: unsupported use of {what} ({self.where(node)}): {detail}")
        return UnsupportedOperation(f"bbcodec.exact: unsupported operation {what} ({self.where(node)}); "
                                    f"supported: {_supported_summary()}")

    def kind(self, v):
        if isinstance(v, fx.Node):
            return self.kinds[v]
        if isinstance(v, (list, tuple)):
            return tuple(self.kind(x) for x in v)
        if isinstance(v, dict):
            return tuple(self.kind(x) for x in v.values())
        if isinstance(v, slice):
            return tuple(self.kind(x) for x in (v.start, v.stop, v.step))
        return CONST

    def has(self, v, kinds) -> bool:
        k = self.kind(v)
        if isinstance(k, tuple):
            return any(self.has(x, kinds) for x in (v.values() if isinstance(v, dict) else
                                                   (v.start, v.stop, v.step) if isinstance(v, slice) else v))
        return k in kinds

    def need_act(self, node, v, what, role="input"):
        if self.kind(v) != ACT:
            raise self.unsupported(node, what, f"its {role} must be an activation tensor (the result of "
                                   f"supported operations on the inputs), not a {self._describe(v)}")

    def need_plain(self, node, v, what, role):
        if self.has(v, _TENSORS):
            raise self.unsupported(node, what, f"{role} must not be a tensor")

    def need_const(self, node, v, what, role):
        if self.has(v, _TENSORS + (META,)):
            raise self.unsupported(node, what, f"{role} must be a constant known when converting")

    def need_param(self, node, v, what, role, optional=False):
        if optional and v is None:
            return
        if self.kind(v) != PARAM:
            raise self.unsupported(node, what, f"{role} must be a parameter or buffer of the module, "
                                   f"not a {self._describe(v)}")

    def _describe(self, v):
        k = self.kind(v)
        return "constant" if k == CONST else k if isinstance(k, str) else "structure"

    def bind(self, node, what, signature: Callable, args, kwargs) -> dict:
        try:
            bound = inspect.signature(signature).bind(*args, **kwargs)
        except TypeError as exc:
            raise self.unsupported(node, what, f"unexpected arguments ({exc})") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def param_value(self, node: fx.Node) -> torch.Tensor:
        """The current value of a get_attr node (for checks when converting)."""
        return _get_attr(self.root, node.target)

    # ----------------------------------------------------------------- the pass
    def convert(self) -> tuple[list, list, Any]:
        steps, inputs, output = [], [], None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                self.kinds[node] = ACT
                inputs.append(node)
            elif node.op == "get_attr":
                value = _get_attr(self.root, node.target)
                if not isinstance(value, torch.Tensor):
                    raise self.unsupported(node, f"attribute '{node.target}'", "only tensor attributes are supported")
                self.kinds[node] = PARAM
                target = node.target
                steps.append(_Step(node, lambda target=target: _get_attr(self.root, target)))
            elif node.op == "output":
                output = node.args[0]
            else:
                step, kind = self.convert_call(node)
                self.kinds[node] = kind
                steps.append(step)
        # free each value after its last use
        position = {s.node: i for i, s in enumerate(steps)}
        drops = [[] for _ in steps]
        keep = set()
        if output is not None:
            map_arg(output, keep.add)
        for node in list(self.kinds):
            if node in keep or node.op == "placeholder" and not node.users:
                continue
            uses = [position[u] for u in node.users if u in position]
            if node in position:
                uses.append(position[node])
            if uses:
                drops[max(uses)].append(node)
        for s, d in zip(steps, drops):
            s.drop = tuple(d)
        return steps, inputs, output

    def convert_call(self, node):
        if node.op == "call_module":
            module = self.root.get_submodule(node.target) if node.target else self.root
            builder = _MODULES.get(type(module))
            if builder is None:
                raise self.unsupported(node, _qualname(type(module)))
            return builder(self, node, module)
        if node.op == "call_method":
            builder = _METHODS.get(node.target)
            if builder is None:
                raise self.unsupported(node, f"tensor method .{node.target}()")
            return builder(self, node, node.target)
        if node.op == "call_function":
            builder = _FUNCTIONS.get(node.target)
            if builder is None:
                raise self.unsupported(node, _qualname(node.target))
            return builder(self, node, node.target)
        raise self.unsupported(node, f"fx node kind '{node.op}'")


def _get_attr(root, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------------
# builders: (converter, node, target) -> (_Step, kind)

_MODULES: dict[type, Callable] = {}
_FUNCTIONS: dict[Any, Callable] = {}
_METHODS: dict[str, Callable] = {}


def _register(table, keys):
    def deco(fn):
        for k in keys:
            if k is not None:
                table[k] = fn
        return fn
    return deco


def _opt(name, mod=torch):
    return getattr(mod, name, None)


# ----------------------------------------------------------------- activations


def _act_step(cv, node, what, x, name, params, inplace=False):
    cv.need_act(node, x, what)
    for key, value in params.items():
        cv.need_const(node, value, what, key)
    try:
        fn = _activation(name, **params)
    except ValueError as exc:
        raise cv.unsupported(node, what, str(exc)) from None
    mutated = x if inplace and isinstance(x, fx.Node) else None
    return _Step(node, fn, (x,), mutates=mutated), ACT


_ACT_MODULES = {
    nn.ReLU: ("relu", ()), nn.LeakyReLU: ("leaky_relu", ("negative_slope",)), nn.ELU: ("elu", ("alpha",)),
    nn.SiLU: ("silu", ()), nn.Softplus: ("softplus", ("beta", "threshold")), nn.Tanh: ("tanh", ()),
    nn.Sigmoid: ("sigmoid", ()), nn.Hardtanh: ("hardtanh", ("min_val", "max_val")),
    nn.ReLU6: ("hardtanh", ("min_val", "max_val")),
}


@_register(_MODULES, _ACT_MODULES)
def _build_act_module(cv, node, module):
    what = _qualname(type(module))
    if len(node.args) != 1 or node.kwargs:
        raise cv.unsupported(node, what, "expected one input")
    name, attrs = _ACT_MODULES[type(module)]
    params = {a: getattr(module, a) for a in attrs}
    return _act_step(cv, node, what, node.args[0], name, params, getattr(module, "inplace", False))


def _sig_relu(input, inplace=False): ...
def _sig_relu_(input): ...
def _sig_leaky_relu(input, negative_slope=0.01, inplace=False): ...
def _sig_leaky_relu_(input, negative_slope=0.01): ...
def _sig_elu(input, alpha=1.0, inplace=False): ...
def _sig_elu_(input, alpha=1.0): ...
def _sig_silu(input, inplace=False): ...
def _sig_softplus(input, beta=1.0, threshold=20.0): ...
def _sig_unary(input): ...
def _sig_relu6(input, inplace=False): ...
def _sig_hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False): ...
def _sig_hardtanh_(input, min_val=-1.0, max_val=1.0): ...
def _sig_clamp(input, min=None, max=None): ...


# function -> (signature, activation name, fixed params, in place always)
_ACT_FUNCTIONS = {
    F.relu: (_sig_relu, "relu", {}, False), torch.relu: (_sig_relu_, "relu", {}, False),
    torch.relu_: (_sig_relu_, "relu", {}, True),
    F.leaky_relu: (_sig_leaky_relu, "leaky_relu", {}, False), F.leaky_relu_: (_sig_leaky_relu_, "leaky_relu", {}, True),
    F.elu: (_sig_elu, "elu", {}, False), F.elu_: (_sig_elu_, "elu", {}, True),
    F.silu: (_sig_silu, "silu", {}, False), F.softplus: (_sig_softplus, "softplus", {}, False),
    torch.tanh: (_sig_unary, "tanh", {}, False), F.tanh: (_sig_unary, "tanh", {}, False),
    torch.sigmoid: (_sig_unary, "sigmoid", {}, False), F.sigmoid: (_sig_unary, "sigmoid", {}, False),
    _opt("expit", torch.special): (_sig_unary, "sigmoid", {}, False),
    F.relu6: (_sig_relu6, "hardtanh", {"min_val": 0.0, "max_val": 6.0}, False),
    F.hardtanh: (_sig_hardtanh, "hardtanh", {}, False), F.hardtanh_: (_sig_hardtanh_, "hardtanh", {}, True),
    torch.clamp: (_sig_clamp, "clamp", {}, False), torch.clip: (_sig_clamp, "clamp", {}, False),
    _opt("clamp_"): (_sig_clamp, "clamp", {}, True), _opt("clip_"): (_sig_clamp, "clamp", {}, True),
}
_ACT_FUNCTIONS.pop(None, None)


def _bound_act(cv, node, what, bound, name, fixed, always_inplace):
    x = bound.pop("input")
    inplace = bound.pop("inplace", False) or always_inplace
    cv.need_const(node, inplace, what, "inplace")
    if name == "clamp":
        name, bound = "hardtanh", {"min_val": bound["min"], "max_val": bound["max"]}
    params = {**bound, **fixed}
    return _act_step(cv, node, what, x, name, params, bool(inplace))


@_register(_FUNCTIONS, _ACT_FUNCTIONS)
def _build_act_function(cv, node, fn):
    sig, name, fixed, always = _ACT_FUNCTIONS[fn]
    what = _qualname(fn)
    return _bound_act(cv, node, what, cv.bind(node, what, sig, node.args, node.kwargs), name, fixed, always)


def _m_unary(self): ...
def _m_clamp(self, min=None, max=None): ...


_ACT_METHODS = {
    "relu": (_m_unary, "relu"), "tanh": (_m_unary, "tanh"), "sigmoid": (_m_unary, "sigmoid"),
    "clamp": (_m_clamp, "clamp"), "clip": (_m_clamp, "clamp"),
}
_ACT_METHODS.update({k + "_": v for k, v in list(_ACT_METHODS.items())})


@_register(_METHODS, _ACT_METHODS)
def _build_act_method(cv, node, name):
    sig, act = _ACT_METHODS[name]
    what = f"tensor method .{name}()"
    bound = cv.bind(node, what, sig, node.args, node.kwargs)
    bound["input"] = bound.pop("self")
    return _bound_act(cv, node, what, bound, act, {}, name.endswith("_"))


# ----------------------------------------------------------------- layers


def _linear_step(cv, node, what, x, weight_of, bias_of, w_now, b_now):
    cv.need_act(node, x, what)
    if w_now.dim() != 2:
        raise cv.unsupported(node, what, "the weight must be a matrix")
    fan_in = w_now.shape[1]
    if fan_in > MAX_FAN_IN:
        raise ExactnessError(f"bbcodec.exact: {what} ({cv.where(node)}) has fan-in {fan_in} above "
                             f"{MAX_FAN_IN}: its sums would not be exact in float64")
    _check_range(node, w_now, b_now)
    q, key = cv.quant, node.name

    def run(u):
        b = bias_of()
        return _linear_units(u, q.weight_matrix((key, "w"), weight_of()),
                             None if b is None else q.act_units((key, "b"), b))
    return _Step(node, run, (x,)), ACT


@_register(_MODULES, [nn.Linear])
def _build_linear_module(cv, node, module):
    what = _qualname(type(module))
    if len(node.args) != 1 or node.kwargs:
        raise cv.unsupported(node, what, "expected one input")
    return _linear_step(cv, node, what, node.args[0], lambda: module.weight, lambda: module.bias,
                        module.weight, module.bias)


def _param_getter(cv, v):
    """Reads a get_attr node's tensor from the module at run time (None for no bias)."""
    if v is None:
        return lambda: None
    target = v.target
    return lambda: _get_attr(cv.root, target)


def _sig_linear(input, weight, bias=None): ...


@_register(_FUNCTIONS, [F.linear])
def _build_linear_function(cv, node, fn):
    what = _qualname(fn)
    b = cv.bind(node, what, _sig_linear, node.args, node.kwargs)
    cv.need_param(node, b["weight"], what, "the weight")
    cv.need_param(node, b["bias"], what, "the bias", optional=True)
    w_node, b_node = _direct_param(cv, node, what, b["weight"]), _direct_param(cv, node, what, b["bias"])
    return _linear_step(cv, node, what, b["input"], _param_getter(cv, w_node), _param_getter(cv, b_node),
                        cv.param_value(w_node), None if b_node is None else cv.param_value(b_node))


def _direct_param(cv, node, what, v):
    if v is None:
        return None
    if v.op != "get_attr":
        raise cv.unsupported(node, what, "weights must be parameters or buffers used as they are "
                             "(not sliced or computed in forward)")
    return v


@_register(_FUNCTIONS, [operator.matmul, torch.matmul, torch.mm])
def _build_matmul(cv, node, fn):
    """``x @ W`` with ``W`` a 2-d parameter: a linear map without bias (fan-in ``W.shape[0]``)."""
    what = _qualname(fn)
    if len(node.args) != 2 or node.kwargs:
        raise cv.unsupported(node, what, "expected two operands")
    return _matmul_step(cv, node, what, *node.args)


@_register(_METHODS, ["matmul", "mm"])
def _build_matmul_method(cv, node, name):
    what = f"tensor method .{name}()"
    if len(node.args) != 2 or node.kwargs:
        raise cv.unsupported(node, what, "expected one other operand")
    return _matmul_step(cv, node, what, *node.args)


def _matmul_step(cv, node, what, x, w):
    cv.need_act(node, x, what, "left operand")
    cv.need_param(node, w, what, "the right operand (only activations @ parameter matrices are exact)")
    w_node = _direct_param(cv, node, what, w)
    w_now = cv.param_value(w_node)
    if w_now.dim() != 2:
        raise cv.unsupported(node, what, "the parameter must be a matrix")
    if w_now.shape[0] > MAX_FAN_IN:
        raise ExactnessError(f"bbcodec.exact: {what} ({cv.where(node)}) has fan-in {w_now.shape[0]} above "
                             f"{MAX_FAN_IN}: its sums would not be exact in float64")
    _check_range(node, w_now, None)
    q, key, weight_of = cv.quant, node.name, _param_getter(cv, w_node)

    def run(u):
        w_real = q.get((key, "w"), weight_of(),
                       lambda t: (quantise(t.double(), WEIGHT_BITS, WEIGHT_LIMIT) * _WSTEP).contiguous())
        return _linear_units(u, w_real, None)
    return _Step(node, run, (x,)), ACT


def _pair(v, what="argument"):
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2 or not all(isinstance(x, int) for x in v):
        raise UnsupportedOperation(f"bbcodec.exact: expected an int or a pair for {what}, got {v!r}")
    return v


def _same_pads(kernel, dilation):
    """F.pad order (left, right, top, bottom) of padding='same' (torch: extra on the right)."""
    pads = []
    for k, d in reversed(list(zip(kernel, dilation))):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def _conv_step(cv, node, what, x, weight_of, bias_of, w_now, b_now, stride, padding, dilation, groups,
               pad_mode="zeros", pads=None):
    cv.need_act(node, x, what)
    if w_now.dim() != 4:
        raise cv.unsupported(node, what, "only 2-d convolutions (4-d weights) are supported")
    try:
        stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
        kernel = tuple(w_now.shape[2:])
        if pads is None:
            if isinstance(padding, str):
                if padding == "valid":
                    pads = (0, 0, 0, 0)
                elif padding == "same":
                    pads = _same_pads(kernel, dilation)
                else:
                    raise UnsupportedOperation(f"bbcodec.exact: padding {padding!r}")
            else:
                ph, pw = _pair(padding, "padding")
                pads = (pw, pw, ph, ph)
    except UnsupportedOperation as exc:
        raise cv.unsupported(node, what, str(exc).removeprefix("bbcodec.exact: ")) from None
    if not isinstance(groups, int) or groups < 1:
        raise cv.unsupported(node, what, f"groups {groups!r}")
    if pad_mode not in ("zeros", "reflect", "replicate", "circular"):
        raise cv.unsupported(node, what, f"padding mode {pad_mode!r}")
    fan_in = w_now[0].numel()
    if fan_in > MAX_FAN_IN:
        raise ExactnessError(f"bbcodec.exact: {what} ({cv.where(node)}) has fan-in {fan_in} (in_channels/groups "
                             f"x kernel) above {MAX_FAN_IN}: its sums would not be exact in float64")
    _check_range(node, w_now, b_now)
    q, key = cv.quant, node.name

    def run(u):
        b = bias_of()
        return _conv2d_units(u, q.weight_matrix((key, "w"), weight_of()),
                             None if b is None else q.act_units((key, "b"), b),
                             kernel, stride, dilation, pads, pad_mode, groups)
    return _Step(node, run, (x,)), ACT


@_register(_MODULES, [nn.Conv2d])
def _build_conv_module(cv, node, module):
    what = _qualname(type(module))
    if len(node.args) != 1 or node.kwargs:
        raise cv.unsupported(node, what, "expected one input")
    return _conv_step(cv, node, what, node.args[0], lambda: module.weight, lambda: module.bias, module.weight,
                      module.bias, module.stride, module.padding, module.dilation, module.groups,
                      module.padding_mode, tuple(module._reversed_padding_repeated_twice))


def _sig_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...


@_register(_FUNCTIONS, [F.conv2d])
def _build_conv_function(cv, node, fn):
    what = _qualname(fn)
    b = cv.bind(node, what, _sig_conv2d, node.args, node.kwargs)
    cv.need_param(node, b["weight"], what, "the weight")
    cv.need_param(node, b["bias"], what, "the bias", optional=True)
    for k in ("stride", "padding", "dilation", "groups"):
        cv.need_const(node, b[k], what, k)
    w_node, b_node = _direct_param(cv, node, what, b["weight"]), _direct_param(cv, node, what, b["bias"])
    return _conv_step(cv, node, what, b["input"], _param_getter(cv, w_node), _param_getter(cv, b_node),
                      cv.param_value(w_node), None if b_node is None else cv.param_value(b_node),
                      b["stride"], b["padding"], b["dilation"], b["groups"])


def _deconv_step(cv, node, what, x, weight_of, bias_of, w_now, b_now, stride, padding, output_padding,
                 dilation, groups, output_size=None):
    cv.need_act(node, x, what)
    if w_now.dim() != 4:
        raise cv.unsupported(node, what, "only 2-d transposed convolutions (4-d weights) are supported")
    try:
        stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
        output_padding = _pair(output_padding, "output_padding")
    except UnsupportedOperation as exc:
        raise cv.unsupported(node, what, str(exc).removeprefix("bbcodec.exact: ")) from None
    if not isinstance(groups, int) or groups < 1 or w_now.shape[0] % groups:
        raise cv.unsupported(node, what, f"groups {groups!r}")
    kh, kw = w_now.shape[2:]
    terms = (w_now.shape[0] // groups) * _taps(kh, stride[0], dilation[0]) * _taps(kw, stride[1], dilation[1])
    if terms > MAX_FAN_IN:
        raise ExactnessError(f"bbcodec.exact: {what} ({cv.where(node)}) sums {terms} products per output "
                             f"(in_channels/groups x overlapping kernel taps) above {MAX_FAN_IN}: not exact in float64")
    _check_range(node, w_now, b_now)
    q, key = cv.quant, node.name

    def run(u, output_size=None):
        op = output_padding
        if output_size is not None:
            op = _output_padding_for(u, output_size, stride, padding, dilation, (kh, kw))
        b = bias_of()
        return _conv_transpose2d_units(u, q.weight_real((key, "w"), weight_of()),
                                       None if b is None else q.act_units((key, "b"), b),
                                       stride, padding, op, dilation, groups)
    kwargs = {} if output_size is None else {"output_size": output_size}
    return _Step(node, run, (x,), kwargs), ACT


def _output_padding_for(u, output_size, stride, padding, dilation, kernel):
    """torch's ConvTranspose2d._output_padding: the padding that gives ``output_size``."""
    size = list(output_size)[-2:]
    op = []
    for d in range(2):
        n = u.shape[-2 + d]
        lo = (n - 1) * stride[d] - 2 * padding[d] + dilation[d] * (kernel[d] - 1) + 1
        if not lo <= size[d] < lo + stride[d]:
            raise ValueError(f"requested an output size of {size}, but valid sizes range from {lo} to "
                             f"{lo + stride[d] - 1} (for an input of {n})")
        op.append(size[d] - lo)
    return tuple(op)


@_register(_MODULES, [nn.ConvTranspose2d])
def _build_deconv_module(cv, node, module):
    what = _qualname(type(module))
    def sig(input, output_size=None): ...
    b = cv.bind(node, what, sig, node.args, node.kwargs)
    cv.need_plain(node, b["output_size"], what, "output_size")
    if module.padding_mode != "zeros":
        raise cv.unsupported(node, what, f"padding mode {module.padding_mode!r}")
    return _deconv_step(cv, node, what, b["input"], lambda: module.weight, lambda: module.bias, module.weight,
                        module.bias, module.stride, module.padding, module.output_padding, module.dilation,
                        module.groups, b["output_size"])


def _sig_conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1): ...


@_register(_FUNCTIONS, [F.conv_transpose2d])
def _build_deconv_function(cv, node, fn):
    what = _qualname(fn)
    b = cv.bind(node, what, _sig_conv_transpose2d, node.args, node.kwargs)
    cv.need_param(node, b["weight"], what, "the weight")
    cv.need_param(node, b["bias"], what, "the bias", optional=True)
    for k in ("stride", "padding", "output_padding", "groups", "dilation"):
        cv.need_const(node, b[k], what, k)
    w_node, b_node = _direct_param(cv, node, what, b["weight"]), _direct_param(cv, node, what, b["bias"])
    return _deconv_step(cv, node, what, b["input"], _param_getter(cv, w_node), _param_getter(cv, b_node),
                        cv.param_value(w_node), None if b_node is None else cv.param_value(b_node),
                        b["stride"], b["padding"], b["output_padding"], b["dilation"], b["groups"])


# ----------------------------------------------------------------- other modules


def _identity(u, *args, **kwargs):
    return u


_DROPOUTS = [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
             nn.Identity]


@_register(_MODULES, _DROPOUTS)
def _build_identity_module(cv, node, module):
    what = _qualname(type(module))
    if len(node.args) < 1:
        raise cv.unsupported(node, what, "expected an input")
    cv.need_act(node, node.args[0], what)
    return _Step(node, _identity, (node.args[0],)), ACT


@_register(_MODULES, [nn.Flatten, nn.Unflatten])
def _build_flatten_module(cv, node, module):
    what = _qualname(type(module))
    if len(node.args) != 1 or node.kwargs:
        raise cv.unsupported(node, what, "expected one input")
    cv.need_act(node, node.args[0], what)
    if isinstance(module, nn.Flatten):
        start, end = module.start_dim, module.end_dim
        return _Step(node, lambda u: u.flatten(start, end), (node.args[0],)), ACT
    dim, sizes = module.dim, tuple(module.unflattened_size)
    return _Step(node, lambda u: u.unflatten(dim, sizes), (node.args[0],)), ACT


def _interp_step(cv, node, what, x, size, scale_factor, mode, align_corners, antialias=False):
    cv.need_act(node, x, what)
    cv.need_const(node, mode, what, "mode")
    cv.need_plain(node, size, what, "size")
    cv.need_plain(node, scale_factor, what, "scale_factor")
    if mode not in ("nearest", "nearest-exact"):
        raise cv.unsupported(node, what, f"mode {mode!r}: only 'nearest' (integer scale factors) is exact")
    if align_corners not in (None, False) or antialias:
        raise cv.unsupported(node, what, "align_corners / antialias")
    if (size is None) == (scale_factor is None):
        raise cv.unsupported(node, what, "give exactly one of size and scale_factor")
    if scale_factor is not None and not cv.has(scale_factor, (META,)):
        try:
            for f in (scale_factor if isinstance(scale_factor, (tuple, list)) else [scale_factor]):
                _integer_factor(f)
        except UnsupportedOperation as exc:
            raise cv.unsupported(node, what, str(exc).removeprefix("bbcodec.exact: ")) from None
    return _Step(node, _upsample_nearest_units, (x, size, scale_factor)), ACT


@_register(_MODULES, [nn.Upsample, nn.UpsamplingNearest2d])
def _build_upsample_module(cv, node, module):
    what = _qualname(type(module))
    if len(node.args) != 1 or node.kwargs:
        raise cv.unsupported(node, what, "expected one input")
    return _interp_step(cv, node, what, node.args[0], module.size, module.scale_factor, module.mode,
                        module.align_corners)


def _sig_interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                     recompute_scale_factor=None, antialias=False): ...


@_register(_FUNCTIONS, [F.interpolate, F.upsample_nearest])
def _build_interpolate(cv, node, fn):
    what = _qualname(fn)
    if fn is F.upsample_nearest:
        def sig(input, size=None, scale_factor=None): ...
        b = cv.bind(node, what, sig, node.args, node.kwargs)
        b.update(mode="nearest", align_corners=None, antialias=False)
    else:
        b = cv.bind(node, what, _sig_interpolate, node.args, node.kwargs)
    return _interp_step(cv, node, what, b["input"], b["size"], b["scale_factor"], b["mode"], b["align_corners"],
                        b["antialias"])


def _pool_step(cv, node, what, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    cv.need_act(node, x, what)
    for k, v in (("kernel_size", kernel_size), ("stride", stride), ("padding", padding), ("dilation", dilation),
                 ("ceil_mode", ceil_mode), ("return_indices", return_indices)):
        cv.need_const(node, v, what, k)
    if return_indices:
        raise cv.unsupported(node, what, "return_indices=True")
    # a maximum selects one of its (exact) inputs: any device's kernel gives the same value
    return _Step(node, lambda u: F.max_pool2d(u, kernel_size, stride, padding, dilation, ceil_mode), (x,)), ACT


@_register(_MODULES, [nn.MaxPool2d])
def _build_maxpool_module(cv, node, m):
    what = _qualname(type(m))
    if len(node.args) != 1 or node.kwargs:
        raise cv.unsupported(node, what, "expected one input")
    return _pool_step(cv, node, what, node.args[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                      m.return_indices)


def _sig_max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...


@_register(_FUNCTIONS, [F.max_pool2d])
def _build_maxpool_function(cv, node, fn):
    what = _qualname(fn)
    b = cv.bind(node, what, _sig_max_pool2d, node.args, node.kwargs)
    return _pool_step(cv, node, what, b["input"], b["kernel_size"], b["stride"], b["padding"], b["dilation"],
                      b["ceil_mode"], b["return_indices"])


def _sig_dropout(input, p=0.5, training=True, inplace=False): ...


@_register(_FUNCTIONS, [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                        F.feature_alpha_dropout])
def _build_dropout_function(cv, node, fn):
    what = _qualname(fn)
    b = cv.bind(node, what, _sig_dropout, node.args, node.kwargs)
    cv.need_act(node, b["input"], what)
    return _Step(node, _identity, (b["input"],)), ACT


def _sig_pad(input, pad, mode="constant", value=None): ...


@_register(_FUNCTIONS, [F.pad])
def _build_pad(cv, node, fn):
    what = _qualname(fn)
    b = cv.bind(node, what, _sig_pad, node.args, node.kwargs)
    cv.need_act(node, b["input"], what)
    cv.need_plain(node, b["pad"], what, "pad")
    cv.need_const(node, b["mode"], what, "mode")
    cv.need_const(node, b["value"], what, "value")
    mode = b["mode"]
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise cv.unsupported(node, what, f"mode {mode!r}")
    if mode == "constant":
        fill = _grid_bound(b["value"] or 0.0)
        return _Step(node, lambda u, pad: F.pad(u, pad, value=fill), (b["input"], b["pad"])), ACT
    return _Step(node, lambda u, pad: F.pad(u, pad, mode=mode), (b["input"], b["pad"])), ACT


# ----------------------------------------------------------------- arithmetic


def _binary_impl(cv, node, what, op, a, b):
    """The run-time function and result kind of an elementwise ``op`` (add, sub, mul, div) of
    two arguments, chosen by their kinds when converting."""
    ka, kb = cv.kind(a), cv.kind(b)
    plain = (META, CONST)
    if ka in plain and kb in plain:  # shapes and numbers: plain Python
        return {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}[op], META
    if op in ("add", "mul") and ka != ACT and kb == ACT:  # commutative: the activation first
        impl, kind = _binary_impl(cv, node, what, op, b, a)
        return (lambda x, y: impl(y, x)), kind
    q, key = cv.quant, node.name
    if ka != ACT:
        if op == "sub" and kb == ACT and ka == PARAM:  # p - u
            return (lambda p, u: torch.clamp(q.act_units((key, "p"), p) - u, _LO, _HI)), ACT
        if op == "sub" and kb == ACT:  # c - u
            return (lambda c, u: _finish(_const_units(c, f"the operand of {what}") - u)), ACT
        if op == "div" and kb == ACT:
            raise cv.unsupported(node, what, "only division by a Python number is exact")
        raise cv.unsupported(node, what, "arithmetic on parameters alone is not evaluated exactly")
    if op in ("add", "sub"):
        sign = 1.0 if op == "add" else -1.0
        if kb == ACT:  # integers below 2**25: exact
            return (lambda u, v: torch.clamp(u + v if sign > 0 else u - v, _LO, _HI)), ACT
        if kb == PARAM:  # the parameter on the activation grid
            return (lambda u, p: torch.clamp(u + sign * q.act_units((key, "p"), p), _LO, _HI)), ACT
        return (lambda u, c: _finish(u + sign * _const_units(c, f"the operand of {what}"))), ACT
    if op == "mul":
        if kb == ACT:  # an integer below 2**48, scaled by a power of two: exact
            return (lambda u, v: _finish(u * v * STEP)), ACT
        if kb == PARAM:  # weight-grid units below 2**16: products below 2**40, exact
            return (lambda u, p: _finish(u * q.weight_units((key, "p"), p) * _WSTEP)), ACT
        return (lambda u, c: _finish(u * _number(c, f"the factor of {what}"))), ACT  # one IEEE multiply
    if kb not in plain:
        raise cv.unsupported(node, what, "only division by a Python number is exact")
    if kb == CONST and _number(b, f"the divisor of {what}") == 0:
        raise cv.unsupported(node, what, "division by zero")

    def div(u, c):  # one IEEE division, then the rounding
        c = _number(c, f"the divisor of {what}")
        if c == 0:
            raise UnsupportedOperation(f"bbcodec.exact: division by zero ({cv.where(node)})")
        return _finish(u / c)
    return div, ACT


def _arith_step(cv, node, what, op, a, b, mutated=None):
    for v, role in ((a, "operand"), (b, "operand")):
        if cv.kind(v) == SEQ or isinstance(cv.kind(v), tuple) and cv.has(v, _TENSORS):
            raise cv.unsupported(node, what, f"{role} must be a tensor or a number")
    impl, kind = _binary_impl(cv, node, what, op, a, b)
    return _Step(node, impl, (a, b), mutates=mutated if kind == ACT else None), kind


_OPERATORS = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
              operator.iadd: "add", operator.isub: "sub", operator.imul: "mul", operator.itruediv: "div"}
_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}
_PLAIN_OPERATORS = [operator.floordiv, operator.mod, operator.pow, operator.eq, operator.ne, operator.lt,
                    operator.le, operator.gt, operator.ge, operator.and_, operator.or_, operator.not_,
                    operator.ifloordiv, builtins.min, builtins.max, builtins.len, builtins.int, builtins.float,
                    math.prod, math.ceil, math.floor]


@_register(_FUNCTIONS, _OPERATORS)
def _build_operator(cv, node, fn):
    what = f"operator {_qualname(fn)}"
    if len(node.args) != 2 or node.kwargs:
        raise cv.unsupported(node, what, "expected two operands")
    a, b = node.args
    mutated = a if fn in _INPLACE_OPERATORS and isinstance(a, fx.Node) else None
    return _arith_step(cv, node, what, _OPERATORS[fn], a, b, mutated)


@_register(_FUNCTIONS, _PLAIN_OPERATORS)
def _build_plain(cv, node, fn):
    what = _qualname(fn)
    if cv.has((node.args, node.kwargs), _TENSORS):
        raise cv.unsupported(node, what, "only on shapes and numbers, not on tensors")
    return _Step(node, fn, node.args, dict(node.kwargs)), META


@_register(_FUNCTIONS, [operator.neg, operator.pos, torch.neg, torch.negative])
def _build_neg(cv, node, fn):
    what = _qualname(fn)
    if len(node.args) != 1 or node.kwargs:
        raise cv.unsupported(node, what, "expected one operand")
    x = node.args[0]
    if cv.kind(x) in (META, CONST):
        return _Step(node, fn, (x,)), META
    cv.need_act(node, x, what)
    if fn is operator.pos:
        return _Step(node, _identity, (x,)), ACT
    return _Step(node, torch.neg, (x,)), ACT  # the range is symmetric: exact


def _sig_add(input, other, *, alpha=1, out=None): ...
def _sig_mul(input, other, *, out=None): ...
def _sig_div(input, other, *, rounding_mode=None, out=None): ...
def _m_add(self, other, *, alpha=1): ...
def _m_mul(self, other): ...
def _m_div(self, other, *, rounding_mode=None): ...


_TORCH_ARITH = {torch.add: ("add", _sig_add), torch.sub: ("sub", _sig_add), torch.subtract: ("sub", _sig_add),
                torch.mul: ("mul", _sig_mul), torch.multiply: ("mul", _sig_mul), torch.div: ("div", _sig_div),
                torch.divide: ("div", _sig_div), torch.true_divide: ("div", _sig_mul)}
_METHOD_ARITH = {"add": ("add", _m_add), "sub": ("sub", _m_add), "subtract": ("sub", _m_add),
                 "mul": ("mul", _m_mul), "multiply": ("mul", _m_mul), "div": ("div", _m_div),
                 "divide": ("div", _m_div), "true_divide": ("div", _m_mul)}
_METHOD_ARITH.update({k + "_": v for k, v in list(_METHOD_ARITH.items())})
_METHOD_ARITH.update({"neg": None, "neg_": None, "negative": None})


def _arith_bound(cv, node, what, op, b, first, mutated):
    if b.get("alpha", 1) != 1:
        raise cv.unsupported(node, what, "alpha other than 1")
    if b.get("rounding_mode") is not None:
        raise cv.unsupported(node, what, f"rounding_mode {b['rounding_mode']!r}")
    if b.get("out") is not None:
        raise cv.unsupported(node, what, "out=")
    return _arith_step(cv, node, what, op, b[first], b["other"], mutated)


@_register(_FUNCTIONS, _TORCH_ARITH)
def _build_torch_arith(cv, node, fn):
    what = _qualname(fn)
    op, sig = _TORCH_ARITH[fn]
    return _arith_bound(cv, node, what, op, cv.bind(node, what, sig, node.args, node.kwargs), "input", None)


@_register(_METHODS, _METHOD_ARITH)
def _build_method_arith(cv, node, name):
    what = f"tensor method .{name}()"
    mutated = node.args[0] if name.endswith("_") and node.args and isinstance(node.args[0], fx.Node) else None
    if _METHOD_ARITH[name] is None:  # neg
        if len(node.args) != 1 or node.kwargs:
            raise cv.unsupported(node, what, "expected no arguments")
        cv.need_act(node, node.args[0], what)
        return _Step(node, torch.neg, (node.args[0],), mutates=mutated), ACT
    op, sig = _METHOD_ARITH[name]
    return _arith_bound(cv, node, what, op, cv.bind(node, what, sig, node.args, node.kwargs), "self", mutated)


def _sig_reduce(input, dim=None, keepdim=False, *, dtype=None): ...


@_register(_FUNCTIONS, [torch.mean, torch.sum])
def _build_reduce_function(cv, node, fn):
    what = _qualname(fn)
    b = cv.bind(node, what, _sig_reduce, node.args, node.kwargs)
    return _reduce_step(cv, node, what, b, fn is torch.mean, "input")


def _m_reduce(self, dim=None, keepdim=False, *, dtype=None): ...


@_register(_METHODS, ["mean", "sum"])
def _build_reduce_method(cv, node, name):
    what = f"tensor method .{name}()"
    b = cv.bind(node, what, _m_reduce, node.args, node.kwargs)
    return _reduce_step(cv, node, what, b, name == "mean", "self")


def _reduce_step(cv, node, what, b, mean, first):
    cv.need_act(node, b[first], what)
    cv.need_plain(node, b["dim"], what, "dim")
    cv.need_const(node, b["keepdim"], what, "keepdim")
    keepdim = bool(b["keepdim"])
    return _Step(node, lambda u, dim: _reduce_units(u, dim, keepdim, mean), (b[first], b["dim"])), ACT


# ----------------------------------------------------------------- data movement and shapes

# functions / methods that move or select values: evaluated by torch on the units tensor itself
_MOVE_FUNCTIONS = [torch.reshape, torch.flatten, torch.permute, torch.transpose, torch.swapaxes,
                   torch.swapdims, torch.squeeze, torch.unsqueeze, torch.movedim, torch.moveaxis, torch.flip,
                   torch.roll, torch.narrow, torch.t, torch.clone, torch.unflatten, torch.repeat_interleave,
                   torch.tile, torch.select]
_MOVE_METHODS = ["view", "reshape", "flatten", "unflatten", "permute", "transpose", "swapaxes", "swapdims",
                 "contiguous", "squeeze", "unsqueeze", "expand", "repeat", "repeat_interleave", "tile", "flip",
                 "roll", "movedim", "moveaxis", "narrow", "select", "t", "clone", "detach"]
_SHAPE_LIKE_METHODS = ["view_as", "reshape_as", "expand_as"]  # the other tensor gives only a shape
_CAST_METHODS = ["float", "double", "half", "bfloat16", "to", "type", "type_as", "cpu", "cuda"]
_SEQ_FUNCTIONS = [torch.chunk, torch.split, torch.unbind, torch.tensor_split]
_SEQ_METHODS = ["chunk", "split", "unbind", "tensor_split"]
_JOIN_FUNCTIONS = [torch.cat, _opt("concat"), _opt("concatenate"), torch.stack, torch.hstack, torch.vstack]


@_register(_FUNCTIONS, _MOVE_FUNCTIONS)
def _build_move_function(cv, node, fn):
    what = _qualname(fn)
    if not node.args:
        raise cv.unsupported(node, what, "expected an input")
    cv.need_act(node, node.args[0], what)
    cv.need_plain(node, (node.args[1:], node.kwargs), what, "its other arguments")
    return _Step(node, fn, node.args, dict(node.kwargs)), ACT


@_register(_METHODS, _MOVE_METHODS + _SHAPE_LIKE_METHODS + _CAST_METHODS)
def _build_move_method(cv, node, name):
    what = f"tensor method .{name}()"
    if not node.args:
        raise cv.unsupported(node, what, "expected a tensor")
    cv.need_act(node, node.args[0], what)
    rest = (node.args[1:], node.kwargs)
    if name in _SHAPE_LIKE_METHODS:
        if len(node.args) != 2 or node.kwargs or cv.kind(node.args[1]) not in (ACT, PARAM):
            raise cv.unsupported(node, what, "expected one other tensor")
    elif name in _CAST_METHODS:
        if cv.has(rest, (ACT, SEQ)):
            raise cv.unsupported(node, what, "arguments must not be activations")
        # values stay exact float64 units on their device; a cast is the identity here
        return _Step(node, _identity, (node.args[0],)), ACT
    else:
        cv.need_plain(node, rest, what, "its other arguments")
    return _Step(node, lambda u, *a, **k: getattr(u, name)(*a, **k), node.args, dict(node.kwargs)), ACT


@_register(_FUNCTIONS, _SEQ_FUNCTIONS)
def _build_seq_function(cv, node, fn):
    what = _qualname(fn)
    if not node.args:
        raise cv.unsupported(node, what, "expected an input")
    cv.need_act(node, node.args[0], what)
    cv.need_plain(node, (node.args[1:], node.kwargs), what, "its other arguments")
    return _Step(node, lambda *a, **k: tuple(fn(*a, **k)), node.args, dict(node.kwargs)), SEQ


@_register(_METHODS, _SEQ_METHODS)
def _build_seq_method(cv, node, name):
    what = f"tensor method .{name}()"
    cv.need_act(node, node.args[0], what)
    cv.need_plain(node, (node.args[1:], node.kwargs), what, "its other arguments")
    return _Step(node, lambda u, *a, **k: tuple(getattr(u, name)(*a, **k)), node.args, dict(node.kwargs)), SEQ


@_register(_FUNCTIONS, _JOIN_FUNCTIONS)
def _build_join(cv, node, fn):
    what = _qualname(fn)
    if not node.args:
        raise cv.unsupported(node, what, "expected a sequence of tensors")
    tensors, rest = node.args[0], (node.args[1:], node.kwargs)
    cv.need_plain(node, rest, what, "its other arguments")
    if isinstance(tensors, fx.Node):
        if cv.kind(tensors) != SEQ:
            raise cv.unsupported(node, what, "expected a sequence of activation tensors")
        return _Step(node, fn, node.args, dict(node.kwargs)), ACT
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise cv.unsupported(node, what, "expected a sequence of tensors")
    kinds = [cv.kind(t) for t in tensors]
    if any(k not in (ACT, PARAM) for k in kinds) or ACT not in kinds:
        raise cv.unsupported(node, what, "expected activation tensors (parameters are put on the activation grid)")
    q, key = cv.quant, node.name

    def join(ts, *a, **k):
        ts = [q.act_units((key, i), t) if kind == PARAM else t for i, (t, kind) in enumerate(zip(ts, kinds))]
        return fn(ts, *a, **k)
    return _Step(node, join, node.args, dict(node.kwargs)), ACT


@_register(_FUNCTIONS, [operator.getitem])
def _build_getitem(cv, node, fn):
    what = "indexing []"
    obj, index = node.args
    k = cv.kind(obj)
    if cv.has(index, (ACT, SEQ)):
        raise cv.unsupported(node, what, "an index must not be an activation (only numbers, slices and "
                             "integer or boolean parameter/buffer tensors)")
    if k in (META, CONST):
        return _Step(node, operator.getitem, node.args), META
    if k == SEQ:
        if isinstance(index, slice):
            return _Step(node, operator.getitem, node.args), SEQ
        return _Step(node, operator.getitem, node.args), ACT
    if k == PARAM:
        raise cv.unsupported(node, what, "indexing a parameter (a computed weight) is not supported")
    cv.need_act(node, obj, what, "indexed value")
    # selection of exact values; index tensors (buffers) are used as they are
    return _Step(node, operator.getitem, node.args), ACT


_TENSOR_ATTRS = {"shape": META, "ndim": META, "device": META, "dtype": META, "is_cuda": META, "T": ACT, "mT": ACT}


@_register(_FUNCTIONS, [builtins.getattr])
def _build_getattr(cv, node, fn):
    obj, name = node.args[0], node.args[1]
    k = cv.kind(obj)
    what = f"attribute .{name}"
    if not isinstance(name, str):
        raise cv.unsupported(node, "getattr", "the attribute name must be a constant")
    if k in (META, CONST):
        return _Step(node, getattr, node.args), META
    if k == SEQ or name not in _TENSOR_ATTRS:
        raise cv.unsupported(node, what)
    kind = _TENSOR_ATTRS[name]
    if kind == ACT and k != ACT:
        raise cv.unsupported(node, what, "only on activations")
    return _Step(node, getattr, node.args), kind


@_register(_METHODS, ["size", "dim", "numel", "nelement", "ndimension"])
def _build_shape_method(cv, node, name):
    what = f"tensor method .{name}()"
    if cv.kind(node.args[0]) not in (ACT, PARAM):
        raise cv.unsupported(node, what, "expected a tensor")
    cv.need_plain(node, (node.args[1:], node.kwargs), what, "its arguments")
    return _Step(node, lambda t, *a, **k: getattr(t, name)(*a, **k), node.args, dict(node.kwargs)), META


# ---------------------------------------------------------------------------------------------
# the public API


class ExactModule:
    """A module evaluated in exact fixed-point numerics (see the module docstring).

    ``exact_module(*inputs)``: one real-valued tensor per argument of the float module's
    ``forward`` (any float dtype, any device the module's parameters are on); returns float64
    tensors of real values on the ``2**-12`` grid, bit-identical on every machine, thread count,
    batch shape and device, in the structure the float module returns.
    """

    def __init__(self, module: nn.Module, graph: fx.Graph, steps, inputs, output, kinds):
        self._module = module
        self.graph = graph  #: the torch.fx graph that is evaluated
        self._steps = steps
        self._inputs = inputs
        self._output = output
        self._template = map_arg(output, lambda n: _Kind(kinds[n])) if output is not None else None

    @property
    def float_module(self) -> nn.Module:
        """The original float module (its parameters are read at every call)."""
        return self._module

    @property
    def input_names(self) -> list[str]:
        return [n.target for n in self._inputs]

    def __repr__(self):
        return f"ExactModule({type(self._module).__name__}, {len(self._steps)} steps)"

    def __call__(self, *inputs: torch.Tensor):
        if len(inputs) != len(self._inputs):
            raise TypeError(f"bbcodec.exact: expected {len(self._inputs)} input tensor(s) "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        with torch.no_grad():
            env = {node: _to_units(x, node.target) for node, x in zip(self._inputs, inputs)}
            lookup = env.__getitem__
            for step in self._steps:
                value = step.impl(*map_arg(step.args, lookup), **map_arg(step.kwargs, lookup))
                env[step.node] = value
                if step.mutates is not None:
                    env[step.mutates] = value
                for n in step.drop:
                    env.pop(n, None)
            if self._output is None:
                return None
            return _real(map_arg(self._output, lookup), self._template)


def _real(value, template):
    """Units to real values (an exact scaling by 2**-12) following the output's kinds."""
    if isinstance(template, _Kind):
        if template.kind == ACT:
            return value * STEP
        if template.kind == SEQ:
            return tuple(v * STEP for v in value)
        return value
    if isinstance(template, tuple):
        return tuple(_real(v, t) for v, t in zip(value, template))
    if isinstance(template, list):
        return [_real(v, t) for v, t in zip(value, template)]
    if isinstance(template, dict):
        return {k: _real(value[k], t) for k, t in template.items()}
    return value


def _trace(module: nn.Module) -> fx.Graph:
    """The module's fx graph. A root that fx would treat as a leaf (a standard layer) becomes a
    one-node graph, so that ``exact(nn.Conv2d(...))`` is the same as inside a network."""
    tracer = _Tracer()
    if tracer.is_leaf_module(module, ""):
        graph = fx.Graph()
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        args = tuple(graph.placeholder(p.name) for p in params[:1] or [inspect.Parameter("input", 1)])
        out = graph.call_module("", args)
        out.name = type(module).__name__.lower()
        graph.output(out)
        return graph
    try:
        return tracer.trace(module)
    except Exception as exc:  # noqa: BLE001 - any tracing failure becomes one clear error
        frames = [(f.filename, f.lineno, f.line) for f in traceback.extract_tb(exc.__traceback__)]
        at = _user_frame(frames)
        where = f" at {at}" if at else ""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, fx.proxy.TraceError) or "Proxy" in message:
            reason = ("its forward uses tensor values or shapes in Python control flow (if/while/for, "
                      "bool(), int(), len() of a tensor: data-dependent control flow), which one traced "
                      "graph cannot express; compute both branches with tensor operations, or move the "
                      "decision out of forward")
        else:
            reason = "torch.fx could not trace its forward"
        raise UnsupportedOperation(f"bbcodec.exact: cannot trace {type(module).__name__}{where}: {reason} "
                                   f"(torch.fx: {type(exc).__name__}: {message})") from exc


def exact(module: nn.Module) -> ExactModule:
    """Convert a float module to an :class:`ExactModule` evaluated in exact fixed-point numerics.

    The module is traced once with ``torch.fx`` and every operation is checked: the first one
    that cannot be evaluated exactly raises :class:`UnsupportedOperation`, naming the module class,
    function or method and its fx node (and source line); a forward with data-dependent control
    flow raises it too. A layer whose sums could exceed float64's exact range (fan-in above
    ``MAX_FAN_IN = 2048``) raises :class:`ExactnessError` (a subclass). Parameters that the grid
    clips (``|w| >= 16``, ``|bias| >= 4096``) give a warning.

    Supported: ``nn.Linear``, ``nn.Conv2d`` (any kernel, stride, padding incl. 'same', dilation,
    groups, padding modes), ``nn.ConvTranspose2d`` (stride, padding, output_padding / output_size,
    dilation, groups), their functional forms with parameters as weights; ``ReLU``, ``ReLU6``,
    ``Hardtanh``, ``LeakyReLU``, ``ELU``, ``SiLU``, ``Softplus``, ``Tanh``, ``Sigmoid`` and their
    functional, ``torch.`` and method forms, ``clamp``; ``+``/``-`` of activations (residuals),
    ``*`` of activations, ``* / + -`` with Python numbers, ``+ - *`` with parameters and buffers
    (added ones on the activation grid, multiplied ones on the weight grid); ``torch.cat``,
    ``stack``, ``chunk``, ``split``, ``unbind``, reshapes, views, ``flatten``/``nn.Flatten``,
    ``nn.Unflatten``, ``permute``, ``transpose``, ``contiguous``, indexing and slicing;
    ``nn.Upsample`` / ``F.interpolate`` with mode 'nearest' and integer factors; ``F.pad``;
    ``nn.MaxPool2d``; ``mean``/``sum``; ``x @ W`` with a parameter matrix ``W``; ``nn.Identity``,
    dropout (identity); ``nn.Sequential``
    and your own modules (traced through).
    """
    if isinstance(module, ExactModule):
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(f"bbcodec.exact: expected a torch.nn.Module, not {type(module).__name__}")
    graph = _trace(module)
    converter = _Converter(module, graph)
    steps, inputs, output = converter.convert()
    return ExactModule(module, graph, steps, inputs, output, converter.kinds)


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def exactness_report(module, *inputs: torch.Tensor) -> dict:
    """What exactness costs on these inputs: the float module's outputs against the exact ones.

    ``module`` is a float ``nn.Module`` (converted with :func:`exact`) or an :class:`ExactModule`
    (compared with its ``float_module``). The float module runs as it is (its own dtype, with the
    inputs as given); the exact one rounds inputs to the grid. Returns ``max_abs_diff`` and
    ``mean_abs_diff`` over all output elements, ``max_abs_float`` (the largest float output, for
    scale), ``max_rel_diff`` (``max_abs_diff / max_abs_float``), ``elements`` and ``per_output``
    (the same figures per output tensor, in output order).
    """
    em = module if isinstance(module, ExactModule) else exact(module)
    with torch.no_grad():
        ref = _tensors(em.float_module(*inputs))
    got = _tensors(em(*inputs))
    if len(ref) != len(got):
        raise ValueError("bbcodec.exact: the float and exact modules return different structures")
    per, total, count, worst, scale = [], 0.0, 0, 0.0, 0.0
    for r, g in zip(ref, got):
        r = r.detach().to(torch.float64).to(g.device)
        d = (g - r).abs()
        n = d.numel()
        mx = float(d.max()) if n else 0.0
        sm = float(d.sum()) if n else 0.0
        big = float(r.abs().max()) if n else 0.0
        per.append({"max_abs_diff": mx, "mean_abs_diff": sm / n if n else 0.0, "max_abs_float": big,
                    "elements": n})
        total, count, worst, scale = total + sm, count + n, max(worst, mx), max(scale, big)
    return {"max_abs_diff": worst, "mean_abs_diff": total / count if count else 0.0, "max_abs_float": scale,
            "max_rel_diff": worst / scale if scale else 0.0, "elements": count, "per_output": per}
