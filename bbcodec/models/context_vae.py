"""A VAE whose likelihood also sees already-decoded neighbouring pixels.

The image's pixels are split into four interleaved groups by the parity of their coordinates,
coded in the order (even, even), (odd, odd), (even, odd), (odd, even). Given the latent ``z``, a
pixel of group ``g`` is modelled from per-pixel decoder features *and* the pixels of groups
``< g`` in a small window around it: the first group relies on ``z`` alone, later groups also
interpolate from their neighbours. Decoding needs only four sequential steps per image.

Architecture (all layers are linear maps and ReLUs, so :mod:`.fixedpoint` evaluates them exactly):

* encoder ``q(z|x)``: MLP on the flattened image -> mean and log-scale of a diagonal Gaussian;
* trunk: MLP from ``z`` to a coarse grid of ``channels`` per ``cell x cell`` cell, then a per-cell
  linear map to ``features`` per pixel (a stride-``cell`` transposed convolution), computed for
  each group's pixels when its head needs them;
* one head per group: an MLP on (features, known neighbours) -> the pixel likelihood's
  parameters (:mod:`.likelihoods`).

Models know nothing of ANS: they map pixels and latents to distribution parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import ModelConfig
from .fixedpoint import ExactNumerics, FloatNumerics, Numerics, to_grid
from .likelihoods import make_likelihood

GROUP_OF_PARITY = {(0, 0): 0, (1, 1): 1, (0, 1): 2, (1, 0): 3}
LOG_SCALE_RANGE = (-8.0, 3.0)


@dataclass
class ContextVAEConfig(ModelConfig):
    ARCH = "context_vae"
    height: int = 28
    width: int = 28
    pixels: str = "uint8"  # "uint8" (0..255) or "binary" (0/1)
    latent_dim: int = 32
    hidden: int = 512
    cell: int = 4
    channels: int = 32
    features: int = 16
    head_hidden: int = 48
    context: int = 5
    likelihood: str = "logistic_mixture"
    components: int = 4
    latent_bits: int = 10



class ContextVAE(nn.Module):
    groups = 4

    def __init__(self, config: ContextVAEConfig):
        super().__init__()
        c = config
        if c.height % c.cell or c.width % c.cell or c.height % 2 or c.width % 2:
            raise ValueError("image size must be a multiple of the cell size and even")
        if c.context % 2 != 1:
            raise ValueError("context window must be odd")
        self.config = c
        self.likelihood = make_likelihood(c.likelihood, c.components)
        npix = c.height * c.width
        self.grid = (c.height // c.cell, c.width // c.cell)
        ncells = self.grid[0] * self.grid[1]
        self.enc1 = nn.Linear(npix, c.hidden)
        self.enc2 = nn.Linear(c.hidden, c.hidden)
        self.enc3 = nn.Linear(c.hidden, 2 * c.latent_dim)
        self.dec1 = nn.Linear(c.latent_dim, c.hidden)
        self.dec2 = nn.Linear(c.hidden, ncells * c.channels)
        self.up = nn.Linear(c.channels, c.cell * c.cell * c.features)
        positions, contexts = self._layout()
        # raster position -> index among the groups' pixels side by side (join_groups)
        self.register_buffer("raster_of_groups", torch.argsort(torch.cat(positions)), persistent=False)
        in_cells = self._cell_major_index()
        for g in range(self.groups):
            # each group's rows go through the heads in cell-major order, the order the trunk
            # gives them; the heads' outputs are put back in the group's raster order
            cell_index, by_cell = torch.sort(in_cells[positions[g]])
            self.register_buffer(f"pos{g}", positions[g], persistent=False)
            self.register_buffer(f"ctx{g}", contexts[g][by_cell], persistent=False)
            self.register_buffer(f"raster{g}", torch.argsort(by_cell), persistent=False)
            if c.cell % 2 == 0:  # every cell holds the same sub-grid of each group: its outputs of `up`
                sub = cell_index[: (c.cell // 2) ** 2]
                self.register_buffer(f"up{g}", (sub[:, None] * c.features + torch.arange(c.features)).reshape(-1),
                                     persistent=False)
            else:
                self.register_buffer(f"fcm{g}", cell_index, persistent=False)
        self.heads = nn.ModuleList(
            nn.ModuleList([nn.Linear(c.features + contexts[g].shape[1], c.head_hidden),
                           nn.Linear(c.head_hidden, c.head_hidden),
                           nn.Linear(c.head_hidden, self.likelihood.nout)])
            for g in range(self.groups)
        )

    # ------------------------------------------------------------------ layout
    def _layout(self):
        """Flat pixel positions of each group, and for each group the flat indices of every
        pixel's known neighbours (``H*W`` for neighbours outside the image: the padding slot)."""
        c = self.config
        r = c.context // 2
        ii, jj = torch.meshgrid(torch.arange(c.height), torch.arange(c.width), indexing="ij")
        group = torch.empty(c.height, c.width, dtype=torch.int64)
        for (pi, pj), g in GROUP_OF_PARITY.items():
            group[pi::2, pj::2] = g
        positions, contexts = [], []
        for g in range(self.groups):
            sel = (group == g).reshape(-1)
            pos = torch.nonzero(sel).squeeze(1)
            pi, pj = [p for p, gg in GROUP_OF_PARITY.items() if gg == g][0]
            offsets = [(di, dj) for di in range(-r, r + 1) for dj in range(-r, r + 1)
                       if (di, dj) != (0, 0) and GROUP_OF_PARITY[((pi + di) % 2, (pj + dj) % 2)] < g]
            i, j = ii.reshape(-1)[pos], jj.reshape(-1)[pos]
            idx = []
            for di, dj in offsets:
                ni, nj = i + di, j + dj
                inside = (ni >= 0) & (ni < c.height) & (nj >= 0) & (nj < c.width)
                idx.append(torch.where(inside, ni * c.width + nj, c.height * c.width))
            contexts.append(torch.stack(idx, 1) if idx else torch.zeros(len(pos), 0, dtype=torch.int64))
            positions.append(pos)
        return positions, contexts

    def _cell_major_index(self) -> torch.Tensor:
        """For each flat pixel position, its index in :meth:`features`' cell-major order."""
        c = self.config
        ii, jj = torch.meshgrid(torch.arange(c.height), torch.arange(c.width), indexing="ij")
        cell = ((ii // c.cell) * self.grid[1] + jj // c.cell) * c.cell * c.cell + (ii % c.cell) * c.cell + jj % c.cell
        return cell.reshape(-1)

    def positions(self, g: int) -> torch.Tensor:
        return getattr(self, f"pos{g}")

    def group_sizes(self):
        return [self.positions(g).numel() for g in range(self.groups)]

    def split_groups(self, x: torch.Tensor):
        """Images ``(B, H, W)`` to a tuple of per-group pixel tensors ``(B, n_g)``."""
        flat = x.reshape(x.shape[0], -1)
        return tuple(flat[:, self.positions(g)] for g in range(self.groups))

    def join_groups(self, groups) -> torch.Tensor:
        """Inverse of :meth:`split_groups`: the groups side by side, then one gather into raster
        order (4x quicker on the CPU than a scatter per group)."""
        c = self.config
        b = groups[0].shape[0]
        joined = torch.cat(groups, 1)
        return torch.gather(joined, 1, self.raster_of_groups.to(joined.device).expand(b, -1)).reshape(b, c.height, c.width)

    # ------------------------------------------------------------------ pieces
    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels to network inputs, exactly representable: ``x/128 - 1`` or the bit itself."""
        if self.config.pixels == "binary":
            return x.to(torch.float64)
        return x.to(torch.float64) / 128.0 - 1.0

    def posterior(self, x: torch.Tensor, num: Numerics):
        """``q(z|x)``: (mean, log_scale) of shape ``(B, latent_dim)`` as real tensors."""
        h = num.input(self.scaled(x).reshape(x.shape[0], -1))
        h = num.linear(self.enc1, h, relu=True)
        h = num.linear(self.enc2, h, relu=True)
        out = num.value(num.linear(self.enc3, h))
        d = self.config.latent_dim
        return out[:, :d], torch.clamp(out[:, d:], *LOG_SCALE_RANGE)

    def features(self, z: torch.Tensor, num: Numerics):
        """The trunk's output for :meth:`head` (numerics-specific activations) from latent values
        ``z`` ``(B, latent_dim)`` (multiples of ``2**-ACT_BITS`` when exact): with an even
        ``cell``, the coarse grid ``(B, cells, channels)``, from which each head computes only its
        group's pixels' features; else every pixel's features ``(B, H*W, features)`` in cell-major
        order (cell by cell, each cell's pixels row by row)."""
        c = self.config
        b = z.shape[0]
        h = num.linear(self.dec1, num.input(z), relu=True)
        h = num.linear(self.dec2, h, relu=True)
        h = h.reshape(b * self.grid[0] * self.grid[1], c.channels)
        if c.cell % 2 == 0:
            return h.reshape(b, -1, c.channels)
        return num.linear(self.up, h, relu=True).reshape(b, c.height * c.width, c.features)

    def _group_features(self, g: int, feats, num: Numerics):
        """Group ``g``'s per-pixel features ``(B * n_g, features)``, rows in cell-major order."""
        c = self.config
        if c.cell % 2 == 0:
            rows = feats.reshape(-1, c.channels)
            return num.linear(self.up, rows, relu=True, outputs=getattr(self, f"up{g}")).reshape(-1, c.features)
        return feats.index_select(1, getattr(self, f"fcm{g}")).reshape(-1, c.features)

    def head(self, g: int, feats, previous, num: Numerics) -> torch.Tensor:
        """Raw likelihood parameters ``(B, n_g, nout)`` of group ``g`` given :meth:`features`'
        output and the pixel tensors of groups ``0..g-1`` (a tuple)."""
        c = self.config
        b = feats.shape[0]
        n_g = self.positions(g).numel()
        inputs = self._group_features(g, feats, num)
        ctx = getattr(self, f"ctx{g}")
        if ctx.shape[1]:
            # known pixels in a flat vector whose last entry is the padding value, as real values,
            # then made activations in one pass
            pad_value = 0.0 if c.pixels == "binary" else -1.0
            known = torch.full((b, c.height * c.width + 1), pad_value, dtype=torch.float64, device=ctx.device)
            for gg, pix in enumerate(previous):
                known[:, self.positions(gg)] = self.scaled(pix)
            known = num.input(known)
            # gather, not index_select along dim 1: 0.7 against 2.7 ns a value on the CPU
            neighbours = torch.gather(known, 1, ctx.reshape(1, -1).expand(b, -1)).reshape(b * n_g, -1)
            inputs = (inputs, neighbours)  # the first layer's input features, without a copy
        l1, l2, l3 = self.heads[g]
        h = num.linear(l1, inputs, relu=True)
        h = num.linear(l2, h, relu=True)
        # back to raster order, gathered parameter by parameter: the exact numerics leave a narrow
        # layer's output transposed, (nout, rows) in memory, where this is a contiguous gather
        raw = num.value(num.linear(l3, h)).reshape(b, n_g, -1).permute(2, 0, 1)
        raster = getattr(self, f"raster{g}").expand(raw.shape)
        return torch.gather(raw, 2, raster).permute(1, 2, 0)

    # ------------------------------------------------------------------ training
    def negative_elbo(self, x: torch.Tensor, num: Numerics | None = None, generator=None) -> dict:
        """Negative ELBO terms in bits per image, ``{"kl_bits": (B,), "nll_bits": (B,)}``: the
        analytic KL and the likelihood's code length given one reparameterised posterior sample.
        The one definition training and coding share: with :class:`FloatNumerics` (the default)
        float32 with autograd and the global random stream; with :class:`ExactNumerics` the exact
        networks in float64, the sample drawn from ``generator`` and put on the activation grid."""
        num = num or FloatNumerics()
        exact = isinstance(num, ExactNumerics)
        mean, log_scale = self.posterior(x, num)
        if not exact:
            mean, log_scale = mean.float(), log_scale.float()
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z = mean + eps * torch.exp(log_scale)
        if exact:
            z = to_grid(z)
        kl = 0.5 * (mean ** 2 + torch.exp(2 * log_scale) - 1 - 2 * log_scale).sum(1)
        feats = self.features(z, num)
        groups = self.split_groups(x)
        nll = torch.zeros_like(kl)
        for g in range(self.groups):
            raw = self.head(g, feats, groups[:g], num)
            nll = nll - self.likelihood.log_prob(groups[g], raw if exact else raw.float()).sum(1)
        return {"kl_bits": kl / math.log(2), "nll_bits": nll / math.log(2)}

    def forward(self, x: torch.Tensor):
        """Training: :meth:`negative_elbo` in float32."""
        return self.negative_elbo(x)

    @property
    def dims(self) -> int:
        return self.config.height * self.config.width
