"""Coding whole greyscale images with a :class:`~bbcodec.models.context_vae.ContextVAE`, as a
model of the protocol (:mod:`bbcodec.protocol`): per batch, pop the latents with the posterior,
push the four pixel groups with the grouped autoregressive likelihood, push the latents with the
N(0, 1) prior on its max-entropy bins."""

from __future__ import annotations

import torch

from .. import codecs as C
from .. import detmath
from .. import entropy_models as em
from ..coding_params import CodingParams
from ..models.fixedpoint import ExactNumerics, to_grid
from ..models.likelihoods import BernoulliLikelihood
from ..protocol import BitsBackModel
from .generic import ProtocolCodec


class ContextVAEBitsBack(BitsBackModel):
    """A :class:`~bbcodec.models.context_vae.ContextVAE` network as a protocol model, evaluated in
    exact numerics: one latent layer ``(latent_dim,)``; the likelihood codes the pixel groups in
    turn (binary pixels packed ``pack`` to a symbol)."""

    elbo_batch = 500

    def __init__(self, net, precision: int = 24, pack: int = 14):
        cfg = net.config
        self.net, self.num = net, ExactNumerics()
        self.image_shape, self.pixels = (cfg.height, cfg.width), cfg.pixels
        self.latent_shapes, self.latent_bits = ((cfg.latent_dim,),), cfg.latent_bits
        self.precision, self.pack = precision, pack
        self.binary = isinstance(net.likelihood, BernoulliLikelihood)
        if self.binary:
            for n in net.group_sizes():
                if n % pack:
                    raise ValueError(f"pack={pack} does not divide the group size {n}")

    def posterior(self, x, layer, above):
        mean, log_scale = self.num.by_rows(lambda rows: self.net.posterior(rows, self.num), x)
        return em.GaussianOnBins(mean, detmath.exp_scale(log_scale), self.latent_bits, precision=self.precision)

    def _group_codec(self, g, feats, previous):
        likelihood, pack = self.net.likelihood, self.pack

        def entropy_model(f, prev):  # built per block of rows, where the head's output is in cache
            raw = self.net.head(g, f, prev, self.num)
            return likelihood.packed_model(raw, pack) if self.binary else likelihood.entropy_model(raw, self.precision)

        model = self.num.by_rows(entropy_model, feats, tuple(previous))
        if self.binary:
            return C.Transform(C.Spread(model), lambda x: em.PackedBernoulli.pack(x.reshape(x.shape[0], -1, pack)),
                               lambda s: em.PackedBernoulli.unpack(s, pack).reshape(s.shape[0], -1))
        return C.Spread(model)

    def likelihood(self, latents):
        z = to_grid(em.bin_centres(latents[0], self.latent_bits))
        feats = self.num.by_rows(lambda rows: self.net.features(rows, self.num), z)
        groups = C.AutoregressiveGroups(lambda g, prev: self._group_codec(g, feats, prev), self.net.groups)
        return C.Transform(groups, self.net.split_groups, self.net.join_groups)

    def negative_elbo(self, x, generator=None):
        return self.net.negative_elbo(x, self.num, generator)


class ContextVAECodec(ProtocolCodec):
    """Codes uint8 image tensors ``(N, H, W)`` with a ContextVAE (through :class:`ContextVAEBitsBack`)."""

    def __init__(self, model, params: CodingParams | None = None):
        params = params or CodingParams()
        super().__init__(ContextVAEBitsBack(model, params.precision, params.pack), params)
