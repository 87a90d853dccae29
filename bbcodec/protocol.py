"""The model protocol: what bbcodec needs of a VAE to code images with it by bits-back.

A model gives, per batch of ``N`` images, the distributions of bits-back coding as bbcodec
entropy models (:mod:`bbcodec.entropy_models`), and its negative ELBO. Latents come in one or
more layers, each quantised to ``2**latent_bits`` bins per dimension; layer 0 is popped first::

    posterior(x, layer, above) -> EntropyModel   # q(z_layer | x, z_above), over bin indices
    prior(n, layer, above)     -> EntropyModel   # p(z_layer | z_above); default: N(0, 1) on its
                                                 # max-entropy bins, i.e. uniform bin indices
    likelihood(latents)        -> EntropyModel or Codec   # p(x | z), over the pixels
    negative_elbo(x, generator) -> {"kl_bits": (N,), "nll_bits": (N,)}  float64 tensors; latent
                                                 # samples drawn from the seeded ``generator``

Optionally, ``posteriors_ahead(units, batch)`` returns a context in which the encoder pushes
``units`` (int64, a run of images) in batches that are views of its rows: a model whose posterior
does not depend on the message may compute it there ahead, in another thread (the built-in
hierarchical model does; see ``bbcodec.image_codecs.hierarchical``).

``x`` is an int64 tensor ``(N, *image_shape)`` of pixel values (0..255, or 0/1 for binary
models); ``above`` is the list of bin-index tensors ``(N, *latent_shapes[k])`` of the layers
before ``layer``; ``latents`` is the list of all of them. Entropy models have batch shape
``(N, *shape)``.

**Exactness.** The decoder must compute the very integers the encoder did, on any machine,
thread count and batch size. bbcodec's entropy models are deterministic given their parameters;
the parameters must be too. Networks evaluated by :func:`bbcodec.exact.exact` (or written against
:class:`~bbcodec.models.fixedpoint.ExactNumerics`) are; a plain float module is not, and its files
may decode only on the machine and batch shape that encoded them.

**Identity.** :meth:`BitsBackModel.identity` is the SHA-256 of everything that shapes the
distributions (by default: the class name, the shapes and bits, and every tensor of every
``nn.Module`` attribute); files record it, and decoding with another model is refused.

:class:`GaussianVAE` implements the protocol for the common case: one diagonal-Gaussian latent
layer with an N(0, 1) prior, and a Bernoulli or discretised-logistic likelihood, around the
user's own encoder and decoder networks.
"""

from __future__ import annotations

import hashlib
import math

import torch

from . import detmath
from . import entropy_models as em


class BitsBackModel:
    """Base class of the model protocol (see the module docstring); subclass it and set the
    attributes below, or pass any object that has them."""

    image_shape: tuple = ()  # one image: (H, W) grey or (3, H, W) colour
    pixels: str = "uint8"  # "uint8" (0..255) or "binary" (0/1)
    latent_shapes: tuple = ()  # per latent layer, the shape of one image's latents
    latent_bits: int = 8  # each latent dimension is one of 2**latent_bits bins
    precision: int = 24  # of the entropy models, in bits
    name: str = "custom"

    def posterior(self, x: torch.Tensor, layer: int, above: list) -> em.EntropyModel:
        raise NotImplementedError

    def prior(self, n: int, layer: int, above: list) -> em.EntropyModel:
        return em.Uniform(1 << self.latent_bits, (n,) + tuple(self.latent_shapes[layer]))

    def likelihood(self, latents: list):
        raise NotImplementedError

    def negative_elbo(self, x: torch.Tensor, generator=None) -> dict:
        raise NotImplementedError

    def fixed_latents(self, n: int) -> list:
        """Latent bins for images coded without bits-back (the start of a file): central bins."""
        centre = 1 << (self.latent_bits - 1)
        return [torch.full((n,) + tuple(s), centre, dtype=torch.int64) for s in self.latent_shapes]

    def identity(self) -> str:
        return model_identity(self)


def model_identity(model) -> str:
    """SHA-256 of a protocol model's class, shapes, bits, precision and every tensor of every
    ``torch.nn.Module`` among its attributes (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for key in ("image_shape", "pixels", "latent_shapes", "latent_bits", "precision"):
        h.update(f"|{key}={getattr(model, key, None)!r}".encode())
    for attr, value in sorted(vars(model).items()):
        module = getattr(value, "float_module", value)
        if isinstance(module, torch.nn.Module):
            for name, tensor in module.state_dict().items():
                t = tensor.detach().cpu().contiguous()
                h.update(f"|{attr}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def is_protocol_model(obj) -> bool:
    """Whether ``obj`` is a model object (rather than a model name or path)."""
    return all(hasattr(obj, a) for a in ("posterior", "likelihood", "negative_elbo", "image_shape", "latent_shapes"))


def measure_coding(model, images: torch.Tensor, sample: int = 64) -> dict:
    """A model's per-image costs measured on (up to ``sample`` of) ``images``, by coding them
    (see :meth:`bbcodec.image_codecs.base.BatchedImageCodec.measure`)."""
    from .image_codecs import ProtocolCodec

    return ProtocolCodec(model).measure(images, sample)


def default_coding(model, images: torch.Tensor) -> dict:
    """Coding defaults for a model that has none, measured on ``images`` (see
    :func:`bbcodec.image_codecs.base.coding_defaults`)."""
    from .image_codecs import coding_defaults

    return coding_defaults(measure_coding(model, images))


class GaussianVAE(BitsBackModel):
    """One diagonal-Gaussian latent layer with an N(0, 1) prior, around your own networks.

    * ``encoder(x)``: images as floats ``x / 255`` (binary: 0/1), shape ``(N, *image_shape)``, to
      ``(N, 2 * latent_dim)``: the posterior means, then the log-scales (natural log).
    * ``decoder(z)``: latents ``(N, latent_dim)`` to the likelihood's parameters: for
      ``"bernoulli"`` the logits ``(N, *image_shape)``; for ``"logistic"`` ``(N, 2, *image_shape)``,
      the means (in units of 1/255 of the pixel range) and the log-scales (in pixel units) of a
      logistic discretised to 0..255.

    Pass networks through :func:`bbcodec.exact.exact` for files that decode on any machine
    (``GaussianVAE.exact(...)`` does it); plain modules work, but only where they round alike.
    The negative ELBO is the analytic KL plus the exact code length of ``x`` under the
    quantised likelihood given one seeded posterior sample, per image: the definition that
    coding, evaluation and :func:`measure_coding` use.
    """

    def __init__(self, encoder, decoder, image_shape, latent_dim: int, likelihood: str = "bernoulli",
                 latent_bits: int = 8, precision: int = 24, name: str = "custom-vae"):
        if likelihood not in ("bernoulli", "logistic"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'logistic', got {likelihood!r}")
        self.encoder, self.decoder = encoder, decoder
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.latent_shapes = ((latent_dim,),)
        self.kind = likelihood
        self.pixels = "binary" if likelihood == "bernoulli" else "uint8"
        self.latent_bits, self.precision, self.name = latent_bits, precision, name

    @classmethod
    def exact(cls, encoder, decoder, *args, **kwargs) -> "GaussianVAE":
        """The same, with both networks evaluated in exact fixed-point arithmetic."""
        from .exact import exact

        return cls(exact(encoder), exact(decoder), *args, **kwargs)

    @staticmethod
    def _run(net, t: torch.Tensor) -> torch.Tensor:
        """``net(t)`` in float64 (exact modules take float64; a plain module its own dtype)."""
        params = next(iter(net.parameters()), None) if isinstance(net, torch.nn.Module) else None
        return net(t.to(params.dtype) if params is not None else t).to(torch.float64)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64) if self.pixels == "binary" else x.to(torch.float64) / 255

    def _encode(self, x):
        out = self._run(self.encoder, self._scaled(x))
        mean, log_scale = out[:, : self.latent_dim], out[:, self.latent_dim:]
        return mean, log_scale.clamp(-12.0, 4.0)

    def posterior(self, x, layer, above):
        mean, log_scale = self._encode(x)
        return em.GaussianOnBins(mean, detmath.exp_scale(log_scale), self.latent_bits, precision=self.precision)

    def _from_values(self, z: torch.Tensor):
        out = self._run(self.decoder, z)
        if self.kind == "bernoulli":
            return em.Bernoulli(logits=out.clamp(-30.0, 30.0), precision=self.precision)
        mean, log_scale = out[:, 0] * 255, out[:, 1].clamp(-4.0, 6.0)
        return em.DiscretizedLogistic(mean, detmath.exp_scale(log_scale), 256, precision=self.precision)

    def likelihood(self, latents):
        from .models.fixedpoint import to_grid

        return self._from_values(to_grid(em.bin_centres(latents[0], self.latent_bits)))

    def negative_elbo(self, x, generator=None):
        from .models.fixedpoint import to_grid

        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        x = x.to(torch.int64)
        mean, log_scale = self._encode(x)
        kl = 0.5 * (mean ** 2 + torch.exp(2 * log_scale) - 1 - 2 * log_scale).sum(1) / math.log(2)
        z = to_grid(mean + torch.randn(mean.shape, generator=gen, dtype=torch.float64) * torch.exp(log_scale))
        nll = self._from_values(z).information(x).reshape(len(x), -1).sum(1)
        return {"kl_bits": kl, "nll_bits": nll}
