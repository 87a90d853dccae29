"""Exact fixed-point evaluation of trained networks.

A codec's encoder and decoder must compute *identical* distribution parameters, but float32
matrix products round differently with the thread count, the batch shape and the device. So at
coding time every network here runs in exact arithmetic: weights are rounded to multiples of
``2**-WEIGHT_BITS``, activations to multiples of ``2**-ACT_BITS``, and both are held as integers
in float64 tensors. A product of two such integers is an integer below ``2**40`` and a layer sums
at most ``2**11`` of them, so every partial sum is an exactly representable integer below
``2**53``: the result does not depend on the summation order, hence not on BLAS blocking,
threads, batch shape or device. Re-quantising after each layer (``floor(y * 2**-WEIGHT_BITS +
1/2)``) is exact too.

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

    def linear(self, layer: nn.Linear, x):
        raise NotImplementedError

    def relu(self, x):
        raise NotImplementedError

    def value(self, x) -> torch.Tensor:
        """The real values of activations (float32 for training, exact float64 for coding)."""
        raise NotImplementedError


class FloatNumerics(Numerics):
    """Training numerics: plain float32 with autograd."""

    def input(self, x):
        return x.float()

    def linear(self, layer, x):
        return F.linear(x, layer.weight, layer.bias)

    def relu(self, x):
        return F.relu(x)

    def value(self, x):
        return x


class ExactNumerics(Numerics):
    """Coding numerics: integer-valued float64, bit-identical on every device and thread count.

    Weights are quantised once per layer and cached (keyed by the parameter tensors' identity and
    version, so a layer changed by training is re-quantised).
    """

    def __init__(self):
        self._cache = {}

    def _weights(self, layer: nn.Linear):
        key = (id(layer), layer.weight._version, layer.weight.device)
        hit = self._cache.get(id(layer))
        if hit is not None and hit[0] == key:
            return hit[1]
        if layer.in_features > MAX_FAN_IN:
            raise ValueError(f"fan-in {layer.in_features} exceeds {MAX_FAN_IN}: exactness not guaranteed")
        w = quantise(layer.weight.detach().double(), WEIGHT_BITS, WEIGHT_LIMIT)
        b = None
        if layer.bias is not None:
            b = quantise(layer.bias.detach().double(), ACT_BITS + WEIGHT_BITS, ACT_LIMIT * WEIGHT_LIMIT)
        self._cache[id(layer)] = (key, (w.t().contiguous(), b))
        return w.t().contiguous(), b

    def input(self, x):
        x = x.to(torch.float64) * float(1 << ACT_BITS)
        if not bool(torch.equal(torch.floor(x), x)):
            raise ValueError("inputs must be multiples of 2**-ACT_BITS")
        return torch.clamp(x, -ACT_LIMIT + 1, ACT_LIMIT - 1)

    def linear(self, layer, x):
        w, b = self._weights(layer)
        # exact: every partial sum is an integer below 2**53
        y = torch.addmm(b, x, w) if b is not None else x @ w
        y.mul_(1.0 / (1 << WEIGHT_BITS)).add_(0.5).floor_()
        return y.clamp_(-ACT_LIMIT + 1, ACT_LIMIT - 1)

    def relu(self, x):
        return x.clamp_(min=0.0)

    def value(self, x):
        return x * (1.0 / (1 << ACT_BITS))


def quantise(t: torch.Tensor, frac_bits: int, limit: float) -> torch.Tensor:
    """Round float64 values to integers in units of ``2**-frac_bits``, clamped to ``|v| < limit``."""
    v = torch.floor(t * float(1 << frac_bits) + 0.5)
    return torch.clamp(v, -limit + 1, limit - 1)


def to_grid(x: torch.Tensor) -> torch.Tensor:
    """Round real values (float64) to the activation grid, returning real values on the grid."""
    return torch.floor(x.to(torch.float64) * float(1 << ACT_BITS) + 0.5) * (1.0 / (1 << ACT_BITS))
