"""A hierarchical, fully convolutional VAE for colour images with a local-context likelihood.

Two latent layers, ``z1`` at ``H/2 x W/2`` and ``z2`` at ``H/4 x W/4``, with the generative
chain ``p(z2) p(z1|z2) p(x|z1)`` and a bottom-up posterior ``q(z1|x) q(z2|x)`` sharing one
encoder trunk. Each conditional is a small convolutional network with ResNet blocks. Coding goes
top-down (HiLLoC): ``z2`` is discretised on the max-entropy bins of N(0, 1), and ``z1`` on bins of
equal mass under ``p(z1|z2)`` (dynamic discretisation), so both priors are exactly uniform over
bin indices.

``p(x|z1)`` is a discretised logistic mixture (with point masses at 0 and 255) per sub-pixel,
predicted from per-pixel decoder features *and* already-decoded neighbours. Pixels are decoded
coarse to fine in five levels (:func:`level_of`): every fourth pixel of every fourth row, then the
centres of those 4x4 cells, then the remaining even-even pixels, then the odd-odd pixels, then the
rest; within a level the channels go R, G, B, so there are fifteen steps. Each step sees, within
a 5x5 window, all channels of earlier levels and the earlier channels of its own level, through a
small MLP plus a direct linear path from that context to the mixture means (linear prediction,
which the MLP then corrects). Only linear maps, convolutions, ReLUs, nearest-neighbour upsampling
and additions appear, so :mod:`.fixedpoint` evaluates everything exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn

from .context_vae import LOG_SCALE_RANGE
from .config import ModelConfig
from .fixedpoint import ExactNumerics, FloatNumerics, Numerics, to_grid, upsample2
from .likelihoods import make_likelihood


@dataclass
class HierarchicalVAEConfig(ModelConfig):
    ARCH = "hierarchical_vae"
    channels: int = 3
    patch: int = 32  # training and default coding tile size (a multiple of 4)
    width: int = 48
    z1_channels: int = 8
    z2_channels: int = 8
    features: int = 16
    head_hidden: int = 32
    context: int = 5
    components: int = 4
    latent_bits: int = 8
    pixels: str = "uint8"
    likelihood: str = "logistic_mixture"



class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions; the second starts near zero."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        with torch.no_grad():
            self.c2.weight.mul_(0.1)
            self.c2.bias.zero_()

    def run(self, x, num: Numerics):
        return num.add(x, num.conv(self.c2, num.conv(self.c1, x, relu=True)))

    def run_upsampled(self, x, num: Numerics):
        """``run(upsample2(x))``, its first convolution through :meth:`Numerics.upsample_conv`."""
        return num.add(upsample2(x), num.conv(self.c2, num.upsample_conv(self.c1, x, relu=True)))


LEVELS = 5
INITIAL_LOG_SCALE = -4.0  # raw log-scale: exp(-4) * 127.5 ~ 2.3 pixel levels


def level_of(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Decoding level of pixel (i, j): 0 for (0, 0) mod 4, 1 for (2, 2) mod 4, 2 for the other
    even-even pixels, 3 for odd-odd, 4 for the rest. Within a 5x5 window, every pixel of a level
    has the same relative positions of earlier-level neighbours."""
    even_even = (i % 2 == 0) & (j % 2 == 0)
    lvl = torch.full_like(i, 4)
    lvl = torch.where((i % 2 == 1) & (j % 2 == 1), 3, lvl)
    lvl = torch.where(even_even, 2, lvl)
    lvl = torch.where(even_even & (i % 4 == 2) & (j % 4 == 2), 1, lvl)
    return torch.where(even_even & (i % 4 == 0) & (j % 4 == 0), 0, lvl)


@lru_cache(maxsize=16)
def context_columns(channels: int, context: int) -> tuple:
    """For each of the ``LEVELS * channels`` steps: (level, channel, and the known sub-pixels of
    its context window as ``(di, dj, channel)`` offsets, in the order of the head's context
    columns). Levels repeat every 4 pixels each way, so one pixel of each residue class stands for
    all; whether a neighbour comes earlier, in the same level or later is checked to be the same
    for every pixel of a level."""
    r = context // 2
    ri, rj = [t.reshape(-1) for t in torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")]
    residue_level = level_of(ri, rj)
    di, dj = [t.reshape(-1) for t in torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")]
    steps = []
    for g in range(LEVELS):
        cls = residue_level == g
        order = torch.sign(level_of(ri[cls, None] + di, rj[cls, None] + dj) - g)
        if not bool((order == order[:1]).all()):
            raise AssertionError("context pattern is not uniform within a level")
        first = order[0].tolist()
        for c in range(channels):
            steps.append((g, c, tuple((int(di[k]), int(dj[k]), cc) for k, o in enumerate(first)
                                      for cc in (range(channels) if o < 0 else range(c) if o == 0 else ()))))
    return tuple(steps)


@lru_cache(maxsize=16)
def _layout(h: int, w: int, channels: int, context: int):
    """For each of the ``LEVELS * channels`` steps: (level, channel, flat spatial positions, and
    for every such pixel the flat indices ``channel * h * w + position`` of the known sub-pixels
    in its context window (:func:`context_columns`), ``channels * h * w`` standing for "outside
    the image")."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    level = level_of(ii, jj)
    steps = []
    for g, c, known in context_columns(channels, context):
        pos = torch.nonzero(level == g).squeeze(1)
        if not known:
            steps.append((g, c, pos, torch.zeros(len(pos), 0, dtype=torch.int64)))
            continue
        di, dj, cc = (torch.tensor(v) for v in zip(*known))
        ni, nj = ii[pos, None] + di, jj[pos, None] + dj
        inside = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
        steps.append((g, c, pos, torch.where(inside, cc * h * w + ni * w + nj, channels * h * w)))
    return steps


def _initial_prediction(step: int, patch: int, channels: int, context: int) -> torch.Tensor:
    """Initial weights of the linear context-to-means path of ``step``: the average of the known
    neighbours in the same channel, or where there are none, of the pixel's earlier channels."""
    _, c, pos, ctx = _layout(patch, patch, channels, context)[step]
    if ctx.shape[1] == 0:
        return torch.zeros(1)
    hw = patch * patch
    centre = int(torch.argmin((pos // patch - patch // 2).abs() + (pos % patch - patch // 2).abs()))
    cols = ctx[centre]
    same = (cols // hw == c).float()
    here = ((cols % hw) == pos[centre]).float()
    pick = same if same.sum() > 0 else here
    return pick / pick.sum()


class HierarchicalVAE(nn.Module):
    def __init__(self, config: HierarchicalVAEConfig):
        super().__init__()
        c = config
        if c.patch % 4:
            raise ValueError("patch size must be a multiple of 4")
        self.config = c
        self.likelihood = make_likelihood(c.likelihood, c.components)
        w = c.width
        # q(z1|x) and q(z2|x), sharing the trunk at H/2
        self.q1_in = nn.Conv2d(c.channels, w, 3, stride=2, padding=1)
        self.q1_res = ResBlock(w)
        self.q1_out = nn.Conv2d(w, 2 * c.z1_channels, 1)
        self.q2_down = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.q2_res = ResBlock(w)
        self.q2_out = nn.Conv2d(w, 2 * c.z2_channels, 1)
        # p(z1|z2)
        self.p1_in = nn.Conv2d(c.z2_channels, w, 3, padding=1)
        self.p1_res = ResBlock(w)
        self.p1_out = nn.Conv2d(w, 2 * c.z1_channels, 1)
        # p(x|z1) trunk
        self.px_in = nn.Conv2d(c.z1_channels, w, 3, padding=1)
        self.px_res = ResBlock(w)
        self.px_out = nn.Conv2d(w, c.features, 3, padding=1)
        steps = _layout(c.patch, c.patch, c.channels, c.context)
        k = self.likelihood.components
        self.heads = nn.ModuleList(
            nn.ModuleList([nn.Linear(c.features + ctx.shape[1], c.head_hidden),
                           nn.Linear(c.head_hidden, c.head_hidden),
                           nn.Linear(c.head_hidden, self.likelihood.nout),
                           nn.Linear(max(1, ctx.shape[1]), k, bias=False)])  # context -> means
            for _, _, _, ctx in steps
        )
        m = self.likelihood.nlogits + k
        for step, head in enumerate(self.heads):
            with torch.no_grad():
                # every component's mean starts as the average of same-channel neighbours (or of
                # the pixel's earlier channels), at scales of a few pixel levels rather than half
                # the range: a sensible predictor from the first step (the model learns far faster)
                head[3].weight.copy_(_initial_prediction(step, c.patch, c.channels, c.context).expand_as(head[3].weight))
                head[2].weight.mul_(0.01)
                head[2].bias.zero_()
                head[2].bias[m:m + k] = INITIAL_LOG_SCALE

    @property
    def steps(self) -> int:
        return LEVELS * self.config.channels

    @property
    def dims(self) -> int:
        return self.config.channels * self.config.patch ** 2

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def scaled(x):
        return x.to(torch.float64) / 128.0 - 1.0

    def _gaussian(self, out, nz):
        return out[:, :nz], torch.clamp(out[:, nz:], *LOG_SCALE_RANGE)

    def posterior(self, x, num: Numerics):
        """``q(z1|x)`` and ``q(z2|x)``: ``((mean1, log_scale1), (mean2, log_scale2))`` with shapes
        ``(B, z1_channels, H/2, W/2)`` and ``(B, z2_channels, H/4, W/4)``."""
        h = num.conv(self.q1_in, num.input(self.scaled(x)), relu=True)
        h = self.q1_res.run(h, num)
        q1 = self._gaussian(num.value(num.conv(self.q1_out, h)), self.config.z1_channels)
        h = num.conv(self.q2_down, h, relu=True)
        h = self.q2_res.run(h, num)
        q2 = self._gaussian(num.value(num.conv(self.q2_out, h)), self.config.z2_channels)
        return q1, q2

    def prior1(self, z2, num: Numerics):
        """p(z1|z2) from z2 values."""
        h = self.p1_res.run_upsampled(num.conv(self.p1_in, num.input(z2), relu=True), num)
        return self._gaussian(num.value(num.conv(self.p1_out, h)), self.config.z1_channels)

    def features(self, z1, num: Numerics):
        """Per-pixel decoder features ``(B, H*W, features)`` from z1 values."""
        h = num.conv(self.px_in, num.input(z1), relu=True)
        f = num.upsample_conv(self.px_out, self.px_res.run(h, num), relu=True)
        b, nf = f.shape[:2]
        # pixel-major in memory: each step's heads gather whole rows of features (a gather of
        # strided columns took ten times as long as this one copy and the row gathers)
        return f.reshape(b, nf, -1).transpose(1, 2).contiguous()

    def layout(self, h, w):
        return _layout(h, w, self.config.channels, self.config.context)

    def split_steps(self, x):
        """Images ``(B, C, H, W)`` to the tuple of per-step sub-pixel tensors ``(B, n_g)``."""
        b, ch, h, w = x.shape
        flat = x.reshape(b, ch, h * w)
        return tuple(flat[:, c, pos] for _, c, pos, _ in self.layout(h, w))

    def join_steps(self, parts, h, w):
        b = parts[0].shape[0]
        ch = self.config.channels
        flat = torch.empty(b, ch, h * w, dtype=parts[0].dtype, device=parts[0].device)
        for (_, c, pos, _), p in zip(self.layout(h, w), parts):
            flat[:, c, pos] = p
        return flat.reshape(b, ch, h, w)

    def known_from_parts(self, parts, h: int, w: int) -> torch.Tensor:
        """Scaled sub-pixels of the steps in ``parts`` (the first ``len(parts)`` steps) as the flat
        ``(B, C*H*W + 1)`` float64 vector that :meth:`head` reads, zero where not yet known; the last
        entry (zero) stands for "outside the image"."""
        ch = self.config.channels
        b = parts[0].shape[0] if parts else 0
        known = torch.zeros((b, ch * h * w + 1), dtype=torch.float64, device=parts[0].device if parts else None)
        return self.fill_known(known, parts, h, w)

    def fill_known(self, known: torch.Tensor, parts, h: int, w: int, start: int = 0) -> torch.Tensor:
        """Write the sub-pixels of steps ``start, start + 1, ...`` (``parts``) into ``known`` (from
        :meth:`known_from_parts`), in place; returns it."""
        for (_, c, p, _), pix in zip(self.layout(h, w)[start:], parts):
            known[:, c * h * w + p] = self.scaled(pix)
        return known

    def known_from_image(self, x) -> torch.Tensor:
        """As :meth:`known_from_parts` with every step known (training and evaluation: the heads only
        read the entries of earlier steps)."""
        flat = self.scaled(x).reshape(x.shape[0], -1)
        return torch.cat([flat, torch.zeros_like(flat[:, :1])], 1)

    def head(self, step: int, feats, known, h: int, w: int, num: Numerics):
        """Raw likelihood parameters ``(B, n, nout)`` of step ``step`` given ``known`` (from
        :meth:`known_from_parts` or :meth:`known_from_image`), of which it reads only earlier steps."""
        _, _, pos, ctx = self.layout(h, w)[step]
        b = feats.shape[0]
        n = pos.numel()
        inputs = feats.index_select(1, pos.to(feats.device)).reshape(b * n, -1)
        l1, l2, l3, skip = self.heads[step]
        if ctx.shape[1]:
            # gather, not index_select along dim 1: about 4x quicker on the CPU
            cols = ctx.to(known.device).reshape(1, -1)
            if known.shape[1] < cols.numel():  # fewer to convert before the gather than after it
                context = torch.gather(num.input(known), 1, cols.expand(b, -1))
            else:
                context = num.input(torch.gather(known, 1, cols.expand(b, -1)))
            context = context.reshape(b * n, -1).to(inputs.dtype)
            inputs = (inputs, context)  # the first layer's input features, without a copy
        hdd = num.linear(l1, inputs, relu=True)
        hdd = num.linear(l2, hdd, relu=True)
        raw = num.linear(l3, hdd)
        if ctx.shape[1]:
            # the linear path adds to the mixture means (after the mixture logits)
            k, m = self.likelihood.components, self.likelihood.nlogits
            raw = torch.cat([raw[:, :m], num.add(raw[:, m: m + k], num.linear(skip, context)),
                             raw[:, m + k:]], -1)
        return num.value(raw).reshape(b, n, -1)

    # ------------------------------------------------------------------ training
    def negative_elbo(self, x, num: Numerics | None = None, generator=None, steps=None, scale_maps=None) -> dict:
        """Negative ELBO terms in bits per image, ``{"kl_bits": (B,), "nll_bits": (B,)}``: analytic
        KLs given one reparameterised sample of ``z2`` then ``z1``, and the likelihood's code length
        of the pixel steps ``steps`` (default all; coding counts only those it codes) with each
        step's scale map (``scale_maps[step]``, default none). The one definition training and
        coding share: with :class:`FloatNumerics` (the default) float32 with autograd and the
        global random stream; with :class:`ExactNumerics` the exact networks in float64, the
        samples drawn from ``generator`` and put on the activation grid."""
        num = num or FloatNumerics()
        exact = isinstance(num, ExactNumerics)
        cast = (lambda t: t) if exact else (lambda t: t.float())
        b, _, h, w = x.shape
        (m1, s1), (m2, s2) = [[cast(t) for t in q] for q in self.posterior(x, num)]

        def sample(m, log_s):
            z = m + torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device) * torch.exp(log_s)
            return to_grid(z) if exact else z

        z2 = sample(m2, s2)
        pm1, ps1 = [cast(t) for t in self.prior1(z2, num)]
        z1 = sample(m1, s1)
        kl = gaussian_kl(m1, s1, pm1, ps1).flatten(1).sum(1) + gaussian_kl(m2, s2, 0.0, 0.0).flatten(1).sum(1)
        feats = self.features(z1, num)
        parts = self.split_steps(x)
        known = self.known_from_image(x)
        nll = torch.zeros(b, dtype=kl.dtype, device=x.device)
        for step in range(self.steps) if steps is None else steps:
            raw = cast(self.head(step, feats, known, h, w, num))
            maps = {} if scale_maps is None else {"scale_map": scale_maps[step]}
            nll = nll - self.likelihood.log_prob(parts[step], raw, **maps).sum(1)
        return {"kl_bits": kl / math.log(2), "nll_bits": nll / math.log(2)}

    def forward(self, x):
        """Training: :meth:`negative_elbo` in float32."""
        return self.negative_elbo(x)


def gaussian_kl(m, log_s, pm, log_ps):
    """KL(N(m, e^{2 log_s}) || N(pm, e^{2 log_ps})) elementwise, in nats."""
    log_ps = torch.as_tensor(log_ps, dtype=m.dtype, device=m.device)
    return log_ps - log_s + 0.5 * (torch.exp(2 * (log_s - log_ps)) + ((m - pm) * torch.exp(-log_ps)) ** 2) - 0.5


def luminance_state_dict(colour: HierarchicalVAE) -> dict:
    """Weights for a one-channel model (same configuration, ``channels=1``) that computes exactly
    what ``colour`` computes in its grey mode, where every pixel's three channels are equal: the
    input convolution and every context weight summed over the channels they read, and the heads
    of channel 0's steps. The starting point for training a luminance model (``--grey --init``)."""
    c = colour.config
    grey = HierarchicalVAE(HierarchicalVAEConfig.from_dict({**c.to_dict(), "channels": 1}))
    state = {k: v.clone() for k, v in colour.state_dict().items()}
    state["q1_in.weight"] = state["q1_in.weight"].sum(1, keepdim=True)
    colour_steps = colour.layout(c.patch, c.patch)
    for step, (_, ch, _, ctx) in enumerate(grey.layout(c.patch, c.patch)):
        source = step * c.channels + ch  # the colour model's step at the same level, channel 0
        _, _, _, cctx = colour_steps[source]
        # channel 0 reads only earlier levels, all channels of each neighbour in turn: colour
        # context column i holds neighbour i // channels, which is grey column i // channels
        if cctx.shape[1] != c.channels * ctx.shape[1]:
            raise AssertionError("context layouts of the colour and grey models do not correspond")
        merge = torch.zeros(cctx.shape[1], ctx.shape[1], dtype=state["q1_in.weight"].dtype)
        merge[torch.arange(cctx.shape[1]), torch.arange(cctx.shape[1]) // c.channels] = 1.0
        prefix = f"heads.{source}."
        for k in range(4):
            w = state[f"{prefix}{k}.weight"]
            if k == 0:  # features, then context columns
                w = torch.cat([w[:, : c.features], w[:, c.features:] @ merge], 1)
            elif k == 3 and ctx.shape[1]:
                w = w @ merge
            state[f"heads.{step}.{k}.weight"] = w
            if f"{prefix}{k}.bias" in state:
                state[f"heads.{step}.{k}.bias"] = state[f"{prefix}{k}.bias"]
    out = grey.state_dict()
    for k in out:
        out[k] = state[k].clone()
    return out


def widened_context_state_dict(narrow: HierarchicalVAE, context: int) -> dict:
    """Weights for ``narrow``'s configuration with the larger window ``context`` that compute
    exactly what ``narrow`` computes: each step's context weights (the first head layer's context
    columns and the linear path to the means) moved to the wider window's columns for the same
    neighbour and channel, the new neighbours' weights zero. The starting point for training a
    wider window (``--init`` with ``context`` set)."""
    c = narrow.config
    if context < c.context or context % 2 != 1:
        raise ValueError(f"context {context} must be odd and at least the model's {c.context}")
    wide = HierarchicalVAE(HierarchicalVAEConfig.from_dict({**c.to_dict(), "context": context}))
    state = {k: v.clone() for k, v in narrow.state_dict().items()}
    old_steps, new_steps = context_columns(c.channels, c.context), context_columns(c.channels, context)
    for step, ((_, _, old), (_, _, new)) in enumerate(zip(old_steps, new_steps)):
        where = {key: n for n, key in enumerate(new)}
        if any(key not in where for key in old):
            raise AssertionError("the wider window does not contain the narrower one")
        moved = torch.tensor([where[key] for key in old], dtype=torch.int64)
        for k, first in ((0, c.features), (3, 0)):  # the head's first layer; the linear path
            if k == 3 and not new:
                continue  # no context either way: the path keeps its placeholder column
            w = state[f"heads.{step}.{k}.weight"]
            grown = w.new_zeros(w.shape[0], first + len(new))
            grown[:, :first] = w[:, :first]
            grown[:, first + moved] = w[:, first: first + len(old)]
            state[f"heads.{step}.{k}.weight"] = grown
    return {k: state[k] for k in wide.state_dict()}
