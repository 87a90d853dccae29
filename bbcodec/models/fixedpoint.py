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

from ..threads import blocks_for, coding_threads, even_blocks, run_blocks

ACT_BITS = 12  # activations are multiples of 2**-12
WEIGHT_BITS = 12  # weights are multiples of 2**-12
ACT_LIMIT = float(1 << 24)  # |activation| < 2**12 (in units: < 2**24)
WEIGHT_LIMIT = float(1 << 16)  # |weight| < 16 (in units: < 2**16)
MAX_FAN_IN = 1 << 11
NARROW = 32  # linear layers of at most this many outputs are computed transposed on the CPU
SPLIT_MACS = 1 << 22  # products of at least this many multiply-adds are split over the coding threads
CHUNK_BYTES = 1 << 20  # a stride-1 convolution's output chunk, computed through all its taps in cache


class Numerics:
    """The operations networks are written in. ``x`` values are opaque activations."""

    def input(self, x: torch.Tensor):
        """Wrap a float tensor whose values are exact multiples of ``2**-ACT_BITS``."""
        raise NotImplementedError

    def linear(self, layer: nn.Linear, x, relu: bool = False, outputs: torch.Tensor | None = None):
        """``layer(x)``, followed by a ReLU when ``relu``. ``x`` may be a tuple of parts that
        together make the input features, in order (``layer(cat(x, -1))`` without the copy);
        ``outputs``, an index tensor: only those output features, in that order."""
        raise NotImplementedError

    def conv(self, layer: nn.Conv2d, x, relu: bool = False):
        """``layer(x)`` for a 2-d convolution (any kernel, stride, zero padding), then ReLU."""
        raise NotImplementedError

    def upsample_conv(self, layer: nn.Conv2d, x, relu: bool = False):
        """``conv(layer, upsample2(x))``: nearest-neighbour 2x upsampling, then ``layer``."""
        return self.conv(layer, upsample2(x), relu)

    def add(self, x, y):
        """Elementwise sum of two activations (residual connections)."""
        raise NotImplementedError

    def value(self, x) -> torch.Tensor:
        """The real values of activations (float32 for training, exact float64 for coding)."""
        raise NotImplementedError

    def by_rows(self, fn, *args):
        """``fn(*args)`` for a network whose every row (dim 0 of each tensor argument, or of each
        tensor in a tuple argument) is computed independently: here, one call."""
        return fn(*args)


class FloatNumerics(Numerics):
    """Training numerics: plain float32 with autograd."""

    def input(self, x):
        return x.float()

    def linear(self, layer, x, relu=False, outputs=None):
        w, b = layer.weight, layer.bias
        if outputs is not None:
            w, b = w[outputs], None if b is None else b[outputs]
        y = F.linear(torch.cat(x, -1) if isinstance(x, tuple) else x, w, b)
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
        self._polyphase = {}

    def _weights(self, layer, outputs: torch.Tensor | None = None):
        """(weights as a ``(fan_in, out)`` matrix of multiples of 2**-WEIGHT_BITS, bias in activation
        units), for a Linear or a Conv2d (im2col order), cached; ``outputs``: only those columns."""
        # the entry holds the weight and index tensors themselves, so their ids cannot be reused
        key = (layer.weight, outputs, layer.weight._version, layer.weight.device)
        slot = (id(layer), None if outputs is None else id(outputs))
        hit = self._cache.get(slot)
        if hit is not None and hit[0][0] is key[0] and hit[0][1] is key[1] and hit[0][2:] == key[2:]:
            return hit[1]
        if outputs is not None:
            w, b = self._weights(layer)
            entry = (w[:, outputs].contiguous(), None if b is None else b[outputs])
            self._cache[slot] = (key, entry)
            return entry
        w = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
        if w.shape[1] > MAX_FAN_IN:
            raise ValueError(f"fan-in {w.shape[1]} exceeds {MAX_FAN_IN}: exactness not guaranteed")
        # real weights on the 2**-WEIGHT_BITS grid; the bias on the activation grid (in units)
        w = quantise(w, WEIGHT_BITS, WEIGHT_LIMIT) * (1.0 / (1 << WEIGHT_BITS))
        b = None
        if layer.bias is not None:
            b = quantise(layer.bias.detach().double(), ACT_BITS, ACT_LIMIT)
        entry = (w.t().contiguous(), b)
        self._cache[slot] = (key, entry)
        return entry

    def input(self, x):
        """Real inputs, which must be multiples of ``2**-ACT_BITS`` (pixels scaled by powers of
        two, latents from :func:`to_grid`), to activation units."""
        return torch.clamp(x.to(torch.float64) * float(1 << ACT_BITS), -ACT_LIMIT + 1, ACT_LIMIT - 1)

    def linear(self, layer, x, relu=False, outputs=None):
        w, b = self._weights(layer, outputs)
        low = 0.0 if relu else -ACT_LIMIT + 1
        parts = x if isinstance(x, tuple) else (x,)
        # each part's product with its rows of the weights is an exact partial sum, so adding
        # them gives the one product's integers
        cuts = [0]
        for part in parts:
            cuts.append(cuts[-1] + part.shape[-1])
        if cuts[-1] != w.shape[0]:
            raise ValueError(f"inputs of {cuts[-1]} features for a layer of fan-in {w.shape[0]}")
        weights = [w[lo:hi] for lo, hi in zip(cuts, cuts[1:])]
        if parts[0].dim() != 2 or parts[0].device.type != "cpu":
            y = torch.addmm(b, parts[0], weights[0]) if b is not None else parts[0] @ weights[0]
            for part, wk in zip(parts[1:], weights[1:]):
                y.addmm_(part, wk)  # exact (see module docstring)
            return y.round_().clamp_(low, ACT_LIMIT - 1)
        n = parts[0].shape[0]
        narrow = w.shape[1] <= NARROW
        # a narrow layer's transpose, out x rows: BLAS runs this shape about 1.5-2x as fast on the
        # CPU (48 -> 14 outputs: 7 -> 13 GMAC/s; 32 -> 32: 7.5 -> 11.5, and a chain of such layers
        # reads each transposed output contiguously), and the exact sums are the same
        y_t = parts[0].new_empty(w.shape[1], n) if narrow else None
        y = y_t.t() if narrow else parts[0].new_empty(n, w.shape[1])

        def rows(lo, hi):
            for k, (part, wk) in enumerate(zip(parts, weights)):
                if narrow:
                    out, left, right, bias = y_t[:, lo:hi], wk.t(), part[lo:hi].t(), None if b is None else b.reshape(-1, 1)
                else:
                    out, left, right, bias = y[lo:hi], part[lo:hi], wk, b
                if k:
                    out.addmm_(left, right)
                elif bias is not None:
                    torch.addmm(bias, left, right, out=out)
                else:
                    torch.mm(left, right, out=out)
            out.round_().clamp_(low, ACT_LIMIT - 1)

        run_blocks(split(n, n * w.numel()), rows)
        return y

    def conv(self, layer, x, relu=False):
        w, b = self._weights(layer)
        return conv2d_units(x, w, b, layer.weight.shape, layer.stride, layer.padding,
                            clamp=(0.0 if relu else -ACT_LIMIT + 1, ACT_LIMIT - 1))

    def upsample_conv(self, layer, x, relu=False):
        """On the CPU, a 3x3 stride-1 convolution padded by 1 runs as four 2x2 convolutions of ``x``
        itself (:func:`polyphase_taps`): the same integers, 16/36 of the products."""
        if (x.device.type != "cpu" or tuple(layer.kernel_size) != (3, 3) or tuple(layer.stride) != (1, 1)
                or tuple(layer.padding) != (1, 1) or tuple(layer.dilation) != (1, 1) or layer.groups != 1):
            return super().upsample_conv(layer, x, relu)
        w, b = self._weights(layer)
        hit = self._polyphase.get(id(layer))
        if hit is None or hit[0] is not w:  # keyed by the quantised weights, re-made with them
            hit = self._polyphase[id(layer)] = (w, polyphase_taps(w))
        return upsampled_conv3x3_units(x, hit[1], b, w.shape[1], (0.0 if relu else -ACT_LIMIT + 1, ACT_LIMIT - 1))

    def add(self, x, y):
        return torch.clamp(x + y, -ACT_LIMIT + 1, ACT_LIMIT - 1)

    def value(self, x):
        return x * (1.0 / (1 << ACT_BITS))

    def by_rows(self, fn, *args):
        """On the CPU with several coding threads, ``fn`` on one block of rows per thread (one
        wake-up for a whole network instead of one per layer, and its gathers and copies split
        too), the results joined along dim 0 (:func:`_join_rows`). The same
        values: each row's are exact whatever the batch."""
        first = next(a if torch.is_tensor(a) else a[0] for a in args if torch.is_tensor(a) or isinstance(a, tuple))
        parts = coding_threads() if first.device.type == "cpu" else 1
        if parts < 2 or first.shape[0] < 2 * parts:
            return fn(*args)
        blocks = even_blocks(first.shape[0], parts)
        results = [None] * parts

        def rows(k):
            lo, hi = blocks[k]
            cut = [a[lo:hi] if torch.is_tensor(a) else tuple(t[lo:hi] for t in a) if isinstance(a, tuple) else a
                   for a in args]
            results[k] = fn(*cut)

        run_blocks([(k,) for k in range(parts)], rows)
        return _join_rows(results)


def _join_rows(parts: list):
    """Per-block results (tensors, equally nested tuples of them, or objects whose type has a
    ``cat`` of a list, such as entropy models) joined along dim 0."""
    if torch.is_tensor(parts[0]):
        return torch.cat(parts)
    if isinstance(parts[0], tuple):
        return tuple(_join_rows(list(same)) for same in zip(*parts))
    return type(parts[0]).cat(parts)


def conv2d_units(x: torch.Tensor, w: torch.Tensor, b, weight_shape, stride, padding, dilation=(1, 1),
                 groups: int = 1, clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """2-d convolution of activations ``x`` ``(N, C, H, W)`` (float64, in units) with real weights
    ``w`` ``(C/groups*kh*kw, out)`` (im2col order) and a bias in units (or None), before rounding,
    or, given ``clamp = (low, high)``, rounded (half to even) and clamped; ``groups > 1`` on the
    CPU only.

    Exact either way (see the module docstring), so the two paths give identical results. On the
    CPU, torch's float64 convolution, which is a direct im2col and matrix product there (the
    transform-based algorithms of oneDNN, NNPACK and XNNPACK serve float32 only) and is about twice
    as fast as the explicit path; on other devices, where a library may pick Winograd or FFT
    transforms, an explicit im2col (``F.unfold``) and one matrix product."""
    if x.device.type == "cpu" and tuple(stride) == (1, 1) and groups == 1:
        return _conv2d_taps(x, w, b, weight_shape, padding, dilation, clamp)
    if x.device.type == "cpu":
        y = F.conv2d(x, w.t().reshape(weight_shape), b, stride=stride, padding=padding, dilation=dilation,
                     groups=groups)
    elif groups != 1:
        raise ValueError("grouped convolutions off the CPU: use an explicit per-group product")
    else:
        y = conv2d_im2col(x, w, b, weight_shape, stride, padding, dilation)
    return y if clamp is None else y.round_().clamp_(*clamp)


def _conv2d_taps(x, w, b, weight_shape, padding, dilation, clamp=None):
    """A stride-1 convolution as one matrix product per kernel tap, accumulated in place. The
    padded images are laid out channel-major, ``(C, N * Hp * Wp)``, so a tap's inputs for every
    image at once are one contiguous column slice (outputs are computed on the padded width, and
    the columns between rows and images dropped): the products are wide, and nothing is copied per
    tap. The columns go in chunks of about :data:`CHUNK_BYTES` of output, which stays in cache
    through all the taps and its rounding and clamping (``clamp``); large convolutions are split
    over the coding threads by columns (:func:`split`). Exact like every path here."""
    out = w.shape[1]
    kh, kw = weight_shape[-2:]
    (dh, dw) = dilation
    kernel = w.t().reshape(out, -1, kh, kw)
    taps = [(0, out, kernel[:, :, i, j], (i * dh, j * dw)) for i in range(kh) for j in range(kw)]
    y, (n, oh, ow), (cols, hp, wp) = _accumulate_taps(x, taps, out, b, padding, (dh * (kh - 1), dw * (kw - 1)),
                                                      clamp)
    # output (image k, row r, column q) is column k * hp * wp + r * wp + q: a strided view, copied once
    return y.as_strided((out, n, oh, ow), (cols, hp * wp, wp, 1)).transpose(0, 1)


def _accumulate_taps(x, taps, rows, bias, padding, extent, clamp):
    """The core of :func:`_conv2d_taps`: ``y (rows, cols)``, each tap ``(lo, hi, matrix, (di, dj))``
    adding ``matrix (hi - lo, C)`` times the padded inputs shifted by ``(di, dj)`` to output rows
    ``lo:hi``; ``extent``: the kernel's reach (rows, columns) beyond its first tap. Returns ``y``,
    the output grid ``(n, oh, ow)`` and the flat layout ``(cols, hp, wp)``."""
    n, c, h, wd = x.shape
    (ph, pw), (eh, ew) = padding, extent
    hp, wp = h + 2 * ph, wd + 2 * pw
    oh, ow = hp - eh, wp - ew
    padded = x.new_zeros(c, n, hp, wp) if ph or pw else x.new_empty(c, n, hp, wp)
    padded[:, :, ph: ph + h, pw: pw + wd] = x.transpose(0, 1)
    flat = padded.reshape(c, n * hp * wp)
    cols = n * hp * wp - (eh * wp + ew)
    taps = [(lo, hi, matrix, di * wp + dj) for lo, hi, matrix, (di, dj) in taps]
    y = x.new_empty(rows, cols)
    chunk = max(16, CHUNK_BYTES // (8 * rows))

    def accumulate(lo, hi):
        for start in range(lo, hi, chunk):
            stop = min(hi, start + chunk)
            ys = y[:, start:stop]
            if bias is not None:
                ys.copy_(bias.reshape(rows, 1).expand_as(ys))
            else:
                ys.zero_()
            for r0, r1, matrix, shift in taps:
                ys[r0:r1].addmm_(matrix, flat[:, shift + start: shift + stop])
            if clamp is not None:
                ys.round_().clamp_(*clamp)

    macs = cols * sum((r1 - r0) * matrix.shape[1] for r0, r1, matrix, _ in taps)
    run_blocks(split(cols, macs), accumulate)
    return y, (n, oh, ow), (cols, hp, wp)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling of ``(N, C, H, W)`` to ``(N, C, 2H, 2W)``."""
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


# Which taps of a 3x3 kernel (columns: offsets -1, 0, +1) land on which input offsets (rows: -1, 0,
# +1) for the even (0) and odd (1) outputs of a 2x-upsampled line: u[2i + a + d] = x[i + (a + d) // 2]
_PHASE_TAPS = torch.tensor([[[1, 0, 0], [0, 1, 1], [0, 0, 0]],
                            [[0, 0, 0], [1, 1, 0], [0, 0, 1]]], dtype=torch.float64)


def polyphase_taps(w: torch.Tensor) -> list:
    """A 3x3 convolution (padding 1; ``w``: its ``(C * 9, out)`` im2col weights) of a
    nearest-2x-upsampled input as four 2x2 convolutions of the input itself, one per output phase ``p = 2a + b`` (output rows ``2i + a``, columns ``2j + b``):
    taps ``(lo, hi, matrix, (di, dj))`` for :func:`_accumulate_taps` on the input padded by 1, the
    output rows ``p * out + o``; a tap shared by consecutive phases is one stacked matrix. The
    phase weights are sums of up to four weights: exact, and the sums of products they give
    are the same integers (``|w| < 64``, fan-in ``4 C``: still far inside float64's exact range)."""
    out = w.shape[1]
    kernel = w.t().reshape(out, -1, 3, 3)
    phase = {(a, b): torch.einsum("ik,jl,ockl->ocij", _PHASE_TAPS[a], _PHASE_TAPS[b], kernel)
             for a in (0, 1) for b in (0, 1)}
    taps = []
    for di in range(3):
        for dj in range(3):
            used = [2 * a + b for a in (0, 1) for b in (0, 1) if _PHASE_TAPS[a, di].any() and _PHASE_TAPS[b, dj].any()]
            runs = []
            for p in used:
                if runs and runs[-1][-1] == p - 1:
                    runs[-1].append(p)
                else:
                    runs.append([p])
            for run in runs:
                matrix = torch.cat([phase[divmod(p, 2)][:, :, di, dj] for p in run]).contiguous()
                taps.append((run[0] * out, (run[-1] + 1) * out, matrix, (di, dj)))
    return taps


def upsampled_conv3x3_units(x, taps, b, out: int, clamp) -> torch.Tensor:
    """``conv3x3(upsample2(x))`` (padding 1) in units, from :func:`polyphase_taps`; rounded and
    clamped to ``clamp``. The same values as the direct path, at 16 instead of 36 products per
    input pixel and channel pair."""
    y, (n, oh, ow), (cols, hp, wp) = _accumulate_taps(x, taps, 4 * out, None if b is None else b.repeat(4),
                                                      (1, 1), (2, 2), clamp)
    phases = y.as_strided((2, 2, out, n, oh, ow), (2 * out * cols, out * cols, cols, hp * wp, wp, 1))
    return phases.permute(3, 2, 4, 0, 5, 1).reshape(n, out, 2 * oh, 2 * ow)


def split(length: int, macs: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` blocks of ``range(length)`` for a product of ``macs`` multiply-adds: one per
    coding thread where each gets at least :data:`SPLIT_MACS`, else a single block. The blocks
    change no result: every sum is exact whatever the shapes."""
    return blocks_for(length, macs, SPLIT_MACS)


def conv2d_im2col(x, w, b, weight_shape, stride, padding, dilation=(1, 1)) -> torch.Tensor:
    """:func:`conv2d_units` by an explicit im2col and one matrix product (any device)."""
    out = w.shape[1]
    kh, kw = weight_shape[-2:]
    n, _, h, wd = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))  # (N, C*kh*kw, L)
    cols = cols.transpose(1, 2).reshape(n * oh * ow, -1)
    y = torch.addmm(b, cols, w) if b is not None else cols @ w
    return y.reshape(n, oh * ow, out).transpose(1, 2).reshape(n, out, oh, ow)


def quantise(t: torch.Tensor, frac_bits: int, limit: float) -> torch.Tensor:
    """Round float64 values to integers in units of ``2**-frac_bits``, clamped to ``|v| < limit``."""
    v = torch.round(t * float(1 << frac_bits))
    return torch.clamp(v, -limit + 1, limit - 1)


def to_grid(x: torch.Tensor) -> torch.Tensor:
    """Round real values (float64) to the activation grid, returning real values on the grid."""
    return torch.round(x.to(torch.float64) * float(1 << ACT_BITS)) * (1.0 / (1 << ACT_BITS))
