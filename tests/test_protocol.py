"""Any VAE through the model protocol: user model objects compress, decode exactly, evaluate."""
import math

import pytest
import torch
import torch.nn as nn

import bbcodec
from bbcodec import BBCodecError, api
from bbcodec import entropy_models as em
from bbcodec.container import Container
from bbcodec.protocol import BitsBackModel, GaussianVAE, measure_coding

from helpers import sample_images


def tiny_vae(likelihood="bernoulli", seed=0, latent_dim=4):
    torch.manual_seed(seed)
    out = 1 if likelihood == "bernoulli" else 2
    enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 2 * latent_dim))
    dec = nn.Sequential(nn.Linear(latent_dim, 16), nn.ReLU(), nn.Linear(16, out * 784),
                        nn.Unflatten(1, (28, 28) if out == 1 else (2, 28, 28)))
    return GaussianVAE(enc.eval(), dec.eval(), (28, 28), latent_dim, likelihood=likelihood)


class TwoLayers(BitsBackModel):
    """A toy hierarchical model: z0 (top) from x, z1 from x and z0 with a conditional prior on
    z1 whose equal-mass bins the posterior uses (HiLLoC's dynamic discretisation)."""

    image_shape, pixels, latent_shapes, latent_bits = (6, 5), "uint8", ((3,), (2,)), 6

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.a = torch.randn(30, 3, generator=g, dtype=torch.float64) * 0.01
        self.b = torch.randn(30, 2, generator=g, dtype=torch.float64) * 0.01
        self.c = torch.randn(5, 30, generator=g, dtype=torch.float64)

    def _z0(self, bins):
        return em.bin_centres(bins, self.latent_bits)

    def _prior1(self, z0_bins):
        z0 = self._z0(z0_bins)
        return z0[:, :2] * 0.5, torch.full((len(z0), 2), 0.8, dtype=torch.float64)

    def posterior(self, x, layer, above):
        flat = x.reshape(len(x), -1).to(torch.float64) / 255
        if layer == 0:
            return em.GaussianOnBins(flat @ self.a, torch.full((len(x), 3), 0.3, dtype=torch.float64), self.latent_bits)
        pm, ps = self._prior1(above[0])
        return em.GaussianOnBins(flat @ self.b, torch.full((len(x), 2), 0.4, dtype=torch.float64), self.latent_bits, pm, ps)

    def likelihood(self, latents):
        z = torch.cat([self._z0(latents[0]), em.bin_centres(latents[1], self.latent_bits)], 1)
        mean = 128 + 20 * (z @ self.c).reshape(-1, 6, 5)
        return em.DiscretizedLogistic(mean, torch.full(mean.shape, 30.0, dtype=torch.float64))

    def negative_elbo(self, x, generator=None):
        n = len(x)
        z = [self.fixed_latents(n)[0], self.fixed_latents(n)[1]]
        return {"kl_bits": torch.zeros(n, dtype=torch.float64),
                "nll_bits": self.likelihood(z).information(x.to(torch.int64)).reshape(n, -1).sum(1)}


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_gaussian_vae_round_trip_and_report(likelihood):
    model = tiny_vae(likelihood)
    x = sample_images(24)
    if likelihood == "bernoulli":
        x = (x > 127).to(torch.uint8)
    data = bbcodec.compress_images(x, model=model, fallback=False)
    box = Container.from_bytes(data)
    assert box.model_sha256 == model.identity() and box.coding["stored_plan"] is True
    assert box.coding["bits_per_image"] == math.ceil(measure_coding(model, x)["bits_per_image"])  # measured
    assert torch.equal(bbcodec.decompress_images(data, model=model), x)
    report = bbcodec.evaluate(model, x)
    assert report["images"] == 24 and report["negative_elbo_bits_per_dim"] > 0
    assert report["code_length_bits_per_dim"] >= report["negative_elbo_bits_per_dim"] * 0.9
    assert set(report["overhead_bits"]) >= {"container_header_bits", "initial_bits", "head_length_field_bits"}
    assert report["encode_images_per_s"] > 0 and report["decode_images_per_s"] > 0


def test_other_weights_are_refused():
    x = (sample_images(8) > 127).to(torch.uint8)
    data = bbcodec.compress_images(x, model=tiny_vae(seed=0), fallback=False)
    with pytest.raises(BBCodecError, match="other weights"):
        bbcodec.decompress_images(data, model=tiny_vae(seed=1))


def test_several_latent_layers_round_trip():
    model = TwoLayers()
    x = torch.randint(0, 256, (40, 6, 5), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    data = api.compress_images(x, model=model, fallback=False, coding={"batch": 8})
    assert torch.equal(api.decompress_images(data, model=model), x)


def test_wrong_image_shape_is_a_clear_error():
    with pytest.raises(api.UsageError, match="codes images of shape"):
        api.compress_images(torch.zeros((2, 14, 14), dtype=torch.uint8), model=tiny_vae())
