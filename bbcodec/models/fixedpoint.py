"""Exact fixed-point evaluation of trained networks.

A codec's encoder and decoder must compute *identical* distribution parameters, but float32
matrix products round differently with the thread count, the batch shape and the device. So at
coding time every network here runs in exact arithmetic: weights are rounded to multiples of
``2**-WEIGHT_BITS`` (``|w| < 16``) and activations are integers in units of ``2**-ACT_BITS``
(``|a| < 2**24`` units), all in float64. A product is then a multiple of ``2**-WEIGHT_BITS``
below ``2**28`` and a layer sums at most ``2**11`` of them, so every partial sum is a multiple of
``2**-12`` below ``2**39``: it has at most 51 significant bits and is exactly representable. The
result does not depend on the summation order, hence not on BLAS blocking, threads, batch shape
or device. Rounding to the activation grid after each layer (round half to even) is exact too.

Networks are written once against :class:`Numerics`: :class:`FloatNumerics` (training, float32,
autograd) and :class:`ExactNumerics` (coding) implement the same few operations.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ACT_BITS = 12  # activations are multiples of 2**-12
WEIGHT_BITS = 12  # weights are multiples of 2**-12
ACT_LIMIT = float(1 << 24)  # |activation| < 2**12 (in units: < 2**24)
WEIGHT_LIMIT = float(1 << 16)  # |weight| < 16 (in units: < 2**16)
MAX_FAN_IN = 1 << 11


class Numerics:
    """The operations networks are written in. ``x`` values are opaque activations."""

    def input(self, x: torch.Tensor):
        """Wrap a float tensor whose values are exact multiples of ``2**-ACT_BITS``."""
        raise NotImplementedError

    def linear(self, layer: nn.Linear, x, relu: bool = False):
        """``layer(x)``, followed by a ReLU when ``relu``."""
        raise NotImplementedError

    def conv(self, layer: nn.Conv2d, x, relu: bool = False):
        """``layer(x)`` for a 2-d convolution (any kernel, stride, zero padding), then ReLU."""
        raise NotImplementedError

    def add(self, x, y):
        """Elementwise sum of two activations (residual connections)."""
        raise NotImplementedError

    def value(self, x) -> torch.Tensor:
        """The real values of activations (float32 for training, exact float64 for coding)."""
        raise NotImplementedError


class FloatNumerics(Numerics):
    """Training numerics: plain float32 with autograd."""

    def input(self, x):
        return x.float()

    def linear(self, layer, x, relu=False):
        y = F.linear(x, layer.weight, layer.bias)
        return F.relu(y) if relu else y

    def conv(self, layer, x, relu=False):
        y = layer(x)
        return F.relu(y) if relu else y

    def add(self, x, y):
        return x + y

    def value(self, x):
        return x


class ExactNumerics(Numerics):
    """Coding numerics: integer-valued float64, bit-identical on every device and thread count.

    Weights are quantised once per layer and cached (keyed by the parameter tensors' identity and
    version, so a layer changed by training is re-quantised).
    """

    def __init__(self):
        self._cache = {}

    def _weights(self, layer):
        """(weights as a ``(fan_in, out)`` matrix of multiples of 2**-WEIGHT_BITS, bias in activation
        units), for a Linear or a Conv2d (im2col order), cached."""
        key = (id(layer), layer.weight._version, layer.weight.device)
        hit = self._cache.get(id(layer))
        if hit is not None and hit[0] == key:
            return hit[1]
        w = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
        if w.shape[1] > MAX_FAN_IN:
            raise ValueError(f"fan-in {w.shape[1]} exceeds {MAX_FAN_IN}: exactness not guaranteed")
        # real weights on the 2**-WEIGHT_BITS grid; the bias on the activation grid (in units)
        w = quantise(w, WEIGHT_BITS, WEIGHT_LIMIT) * (1.0 / (1 << WEIGHT_BITS))
        b = None
        if layer.bias is not None:
            b = quantise(layer.bias.detach().double(), ACT_BITS, ACT_LIMIT)
        entry = (w.t().contiguous(), b)
        self._cache[id(layer)] = (key, entry)
        return entry

    def input(self, x):
        """Real inputs, which must be multiples of ``2**-ACT_BITS`` (pixels scaled by powers of
        two, latents from :func:`to_grid`), to activation units."""
        return torch.clamp(x.to(torch.float64) * float(1 << ACT_BITS), -ACT_LIMIT + 1, ACT_LIMIT - 1)

    def linear(self, layer, x, relu=False):
        w, b = self._weights(layer)
        y = torch.addmm(b, x, w) if b is not None else x @ w  # exact (see module docstring)
        return y.round_().clamp_(0.0 if relu else -ACT_LIMIT + 1, ACT_LIMIT - 1)

    def conv(self, layer, x, relu=False):
        # im2col + one matrix product: exact, unlike library convolutions that may use
        # Winograd or FFT transforms
        w, b = self._weights(layer)
        n, _, h, wd = x.shape
        kh, kw = layer.kernel_size
        sh, sw = layer.stride
        ph, pw = layer.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (N, C*kh*kw, L)
        cols = cols.transpose(1, 2).reshape(n * oh * ow, -1)
        y = torch.addmm(b, cols, w) if b is not None else cols @ w
        y = y.round_().clamp_(0.0 if relu else -ACT_LIMIT + 1, ACT_LIMIT - 1)
        return y.reshape(n, oh * ow, -1).transpose(1, 2).reshape(n, -1, oh, ow)

    def add(self, x, y):
        return torch.clamp(x + y, -ACT_LIMIT + 1, ACT_LIMIT - 1)

    def value(self, x):
        return x * (1.0 / (1 << ACT_BITS))


def quantise(t: torch.Tensor, frac_bits: int, limit: float) -> torch.Tensor:
    """Round float64 values to integers in units of ``2**-frac_bits``, clamped to ``|v| < limit``."""
    v = torch.round(t * float(1 << frac_bits))
    return torch.clamp(v, -limit + 1, limit - 1)


def to_grid(x: torch.Tensor) -> torch.Tensor:
    """Round real values (float64) to the activation grid, returning real values on the grid."""
    return torch.round(x.to(torch.float64) * float(1 << ACT_BITS)) * (1.0 / (1 << ACT_BITS))
