"""Coding with any model of the protocol (:mod:`bbcodec.protocol`)."""

from __future__ import annotations

import torch

from .. import codecs as C
from ..segments import ELBO_SEED
from .base import BatchedImageCodec


class ProtocolCodec(BatchedImageCodec):
    """Codes uint8 images ``(N, *model.image_shape)`` with any model of the protocol
    (:class:`bbcodec.protocol.BitsBackModel`): one bits-back step per batch over all its latent
    layers, popped in order with the posterior and pushed with the prior (each layer given the
    ones before it)."""

    def image_shape(self):
        return tuple(self.model.image_shape)

    def _split(self, x):
        return x

    def _join(self, x):
        return x

    def _layers(self, make) -> C.Codec:
        return C.AutoregressiveGroups(lambda k, above: C.Spread(make(k, list(above))), len(self.model.latent_shapes))

    def _prior(self, size):
        return self._layers(lambda k, above: self.model.prior(size, k, above))

    def _posterior(self, x):
        return self._layers(lambda k, above: self.model.posterior(x, k, above))

    def posteriors_ahead(self, units):
        ahead = getattr(self.model, "posteriors_ahead", None)
        return ahead(units, self.params.batch) if ahead is not None else super().posteriors_ahead(units)

    def _likelihood(self, z, given=None):
        if given is None:
            lik = self.model.likelihood(list(z))
        elif getattr(self.model, "takes_given", False):
            lik = self.model.likelihood(list(z), given=given)
        else:
            raise ValueError("this model cannot use known pixels")
        return lik if isinstance(lik, C.Codec) else C.Spread(lik)

    def _fixed_latents(self, size):
        return tuple(self.model.fixed_latents(size))

    def negative_elbo(self, images: torch.Tensor, batch: int | None = None, seed: int = ELBO_SEED, **kwargs) -> dict:
        """The model's negative ELBO in bits, summed over images: its own definition, in batches
        of ``batch`` (default the model's ``elbo_batch``, else 500) with any latent samples drawn
        from one generator seeded with ``seed``. ``kwargs`` go to the model (``given=True``: the
        given pixels do not count)."""
        gen = torch.Generator().manual_seed(seed)
        batch = batch or getattr(self.model, "elbo_batch", 500)
        kl_bits = nll_bits = 0.0
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                part = self.model.negative_elbo(images[i: i + batch].to(torch.int64), generator=gen, **kwargs)
                kl_bits += float(part["kl_bits"].sum())
                nll_bits += float(part["nll_bits"].sum())
        return {"kl_bits": kl_bits, "nll_bits": nll_bits, "bits": kl_bits + nll_bits}
