"""What every architecture's codec shares: units coded batch after batch on one message, one
:class:`~bbcodec.codecs.BBANS` step per batch (pop the batch's latents with the posterior, push
the pixels with the likelihood, push the latents with the prior), and the start-up estimates
measured by coding a sample (:meth:`BatchedImageCodec.measure`, :func:`coding_defaults`).

All networks run in exact fixed-point arithmetic and all distributions in deterministic float64,
so decoding reproduces the encoder's integers on any machine and thread count.
"""

from __future__ import annotations

import contextlib
import math

import torch

from .. import codecs as C
from ..ans import Message
from ..coding_params import CodingParams
from ..models.fixedpoint import ExactNumerics
from ..plan import SAFETY
from ..segments import ELBO_SEED, CodingStats, Segment, chunk_seed, decode_segments, encode_segments


def coding_defaults(measured: dict) -> dict:
    """Coding defaults from :meth:`BatchedImageCodec.measure`: the estimates (rounded up); lanes
    in proportion to the bits an image adds (about one per 20 bits, as the embedded MNIST models
    use, at most 64); the stored plan (robust to estimates that are off); and the plain start
    where its extra cost over the first images (their code length with fixed latents beyond
    their negative ELBO) is below the seeded bits of a first bits-back pop."""
    bits = max(1, math.ceil(measured["bits_per_image"]))
    pop = max(0, math.ceil(measured["pop_bits_per_image"]))
    plain = measured["plain_bits_per_image"]
    plain_images = math.ceil(pop / max(1.0, SAFETY * plain))
    return {"bits_per_image": bits, "pop_bits_per_image": pop, "batch": 64,
            "lanes_per_image": int(min(64, max(1, round(bits / 20)))), "initial_lanes": 16,
            "plain_start": bool(plain_images * (plain - bits) < pop), "stored_plan": True}


class BatchedImageCodec:
    """Shared machinery: images (this codec's units: whole images, or tiles) coded batch after
    batch on one message whose lanes grow as the coded data pays for them. Subclasses provide the
    pieces of one batch (:meth:`_split` and :meth:`_join` between images and the likelihood's
    groups, :meth:`_prior`, :meth:`_posterior`, :meth:`_likelihood`, :meth:`_fixed_latents`),
    :meth:`image_shape` and :meth:`negative_elbo`."""

    def __init__(self, model, params: CodingParams | None = None):
        self.model = model
        self.cfg = getattr(model, "config", None)
        self.params = params or CodingParams()
        self.num = ExactNumerics()

    def image_shape(self) -> tuple:
        raise NotImplementedError

    def _split(self, x):
        raise NotImplementedError

    def _join(self, parts):
        raise NotImplementedError

    def _prior(self, size: int) -> C.Codec:
        raise NotImplementedError

    def _posterior(self, x) -> C.Codec:
        raise NotImplementedError

    def _likelihood(self, z, given=None) -> C.Codec:
        raise NotImplementedError

    def _fixed_latents(self, size: int):
        """Latent bins used for batches coded without bits-back: the prior's central bins."""
        raise NotImplementedError

    def negative_elbo(self, images: torch.Tensor, batch: int = 500, seed: int = ELBO_SEED) -> dict:
        raise NotImplementedError

    def measure(self, images: torch.Tensor, sample: int = 64) -> dict:
        """What one image costs, measured by coding up to ``sample`` of ``images`` (spread over
        them): ``bits_per_image`` (its negative ELBO), ``pop_bits_per_image`` (what its latents'
        bits-back pop takes from a message), ``plain_bits_per_image`` (its code length without
        bits-back, latents fixed). The start-up plan's estimates come from these."""
        x = images[:: max(1, len(images) // sample)][:sample]
        n = len(x)
        with torch.inference_mode():
            bits = self.negative_elbo(x)["bits"] / n
            lanes = (64,)
            msg = Message(lanes, seed=chunk_seed(0), random_heads=True)
            before = msg.content_bits()
            self._posterior(self._join(self._split(x.to(torch.int64)))).pop(msg)
            pop = before - msg.content_bits() + 32 * msg.initial_words
            msg = Message(lanes, seed=chunk_seed(0))
            self._batch_codec(n, bits_back=False).push(msg, x.to(torch.int64))
            plain = msg.content_bits()
        return {"bits_per_image": bits, "pop_bits_per_image": pop / n, "plain_bits_per_image": plain / n}

    def posteriors_ahead(self, units: torch.Tensor):
        """A context while ``units`` (int64, the segment being encoded) are pushed in batches that
        are runs of its rows: codecs whose posterior does not depend on the message may compute it
        ahead there, in another thread. The default computes nothing ahead."""
        return contextlib.nullcontext()

    def _batch_codec(self, size: int, bits_back: bool = True, given=None) -> C.Codec:
        """A codec for a batch of ``size`` images: one bits-back step, or with ``bits_back=False``
        the likelihood alone given :meth:`_fixed_latents`. ``given`` (the batch's images as far as
        the decoder already knows them, or None) is passed on to :meth:`_likelihood`."""
        if bits_back:
            inner = C.BBANS(self._prior(size), lambda z: self._likelihood(z, given),
                            lambda parts: self._posterior(self._join(parts)))
        else:
            inner = self._likelihood(self._fixed_latents(size), given)
        return C.Transform(inner, self._split, self._join)

    # ------------------------------------------------------------------ whole datasets
    def encode(self, images: torch.Tensor, progress=None, given=None, chunk: int = 0) -> tuple[bytes, CodingStats]:
        """Encode ``(N, *image_shape)`` uint8 images as chunk ``chunk`` (one segment, see
        :func:`~bbcodec.segments.encode_segments`)."""
        return encode_segments([Segment(self, images, given)], chunk=chunk, progress=progress)

    def decode(self, data: bytes, n_images: int, progress=None, given=None, chunk: int = 0) -> torch.Tensor:
        """Decode ``n_images`` images of chunk ``chunk``; verifies the message returns to its
        seeded start state."""
        return decode_segments(data, [self], [n_images], None if given is None else (lambda k, d: given),
                               chunk=chunk, progress=progress)[0]
