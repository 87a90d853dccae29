"""Coding whole greyscale images with a :class:`~bbcodec.models.context_vae.ContextVAE`: per batch,
pop the latents with the posterior, push the four pixel groups with the grouped autoregressive
likelihood, push the latents with the N(0, 1) prior on its max-entropy bins."""

from __future__ import annotations

import math

import torch

from .. import codecs as C
from .. import detmath
from .. import entropy_models as em
from ..coding_params import CodingParams
from ..models.fixedpoint import to_grid
from ..models.likelihoods import BernoulliLikelihood
from ..segments import ELBO_SEED
from .base import BatchedImageCodec


class ContextVAECodec(BatchedImageCodec):
    """Codes uint8 image tensors ``(N, H, W)`` with a ContextVAE."""

    def __init__(self, model, params: CodingParams | None = None):
        super().__init__(model, params)
        self.bits = self.cfg.latent_bits
        self.binary = isinstance(model.likelihood, BernoulliLikelihood)
        if self.binary:
            for n in model.group_sizes():
                if n % self.params.pack:
                    raise ValueError(f"pack={self.params.pack} does not divide the group size {n}")

    def image_shape(self):
        return (self.cfg.height, self.cfg.width)

    # ------------------------------------------------------------------ pieces of one batch
    def _split(self, x):
        return self.model.split_groups(x)

    def _join(self, parts):
        return self.model.join_groups(parts)

    def _fixed_latents(self, size):
        return torch.full((size, self.cfg.latent_dim), 1 << (self.bits - 1), dtype=torch.int64)

    def _posterior(self, x):
        mean, log_scale = self.model.posterior(x, self.num)
        return C.Spread(em.GaussianOnBins(mean, detmath.exp_scale(log_scale), self.bits, precision=self.params.precision))

    def _prior(self, size):
        return C.Spread(em.Uniform(1 << self.bits, (size, self.cfg.latent_dim)))

    def _group_codec(self, g, feats, previous):
        raw = self.model.head(g, feats, previous, self.num)
        if self.binary:
            pack = self.params.pack
            model = self.model.likelihood.packed_model(raw, pack)
            return C.Transform(C.Spread(model), lambda x: em.PackedBernoulli.pack(x.reshape(x.shape[0], -1, pack)),
                               lambda s: em.PackedBernoulli.unpack(s, pack).reshape(s.shape[0], -1))
        return C.Spread(self.model.likelihood.entropy_model(raw, self.params.precision))

    def _likelihood(self, z, given=None):
        if given is not None:
            raise ValueError("this codec cannot use known pixels")
        values = to_grid(em.bin_centres(z, self.bits))
        feats = self.model.features(values, self.num)
        return C.AutoregressiveGroups(lambda g, prev: self._group_codec(g, feats, prev), self.model.groups)

    # ------------------------------------------------------------------ the model's rate
    def negative_elbo(self, images: torch.Tensor, batch: int = 500, seed: int = ELBO_SEED) -> dict:
        """The model's negative ELBO in bits (exact networks, analytic KL, one latent sample per
        image from a seeded generator), summed over images."""
        gen = torch.Generator().manual_seed(seed)
        kl_bits = nll_bits = 0.0
        lik = self.model.likelihood
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = images[i: i + batch].to(torch.int64)
                mean, log_scale = self.model.posterior(x, self.num)
                kl = 0.5 * (mean ** 2 + torch.exp(2 * log_scale) - 1 - 2 * log_scale).sum()
                eps = torch.randn(mean.shape, generator=gen, dtype=torch.float64)
                z = to_grid(mean + eps * torch.exp(log_scale))
                feats = self.model.features(z, self.num)
                groups = self.model.split_groups(x)
                for g in range(self.model.groups):
                    raw = self.model.head(g, feats, groups[:g], self.num)
                    nll_bits -= lik.log_prob(groups[g], raw).sum().item() / math.log(2)
                kl_bits += kl.item() / math.log(2)
        return {"kl_bits": kl_bits, "nll_bits": nll_bits, "bits": kl_bits + nll_bits}
