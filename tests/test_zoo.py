"""The embedded models: present, documented, within size, and coding real samples exactly."""
import json

import pytest
import torch

from bbcodec import api
from bbcodec.layout import make_codec
from bbcodec.zoo import ZOO_DIR, embedded_models, load_model

from helpers import SAMPLES, sample_binary, sample_images

EXPECTED = {"mnist-uint8", "mnist-uint8-v2", "mnist-binary", "mnist-binary-v2", "cifar10-rgb", "photo-rgb", "photo-rgb-v2", "photo-grey"}


def test_expected_models_are_embedded_with_cards():
    names = set(embedded_models())
    assert EXPECTED <= names
    for name in names:
        assert (ZOO_DIR / f"{name}.safetensors").stat().st_size < 25e6
        card = (ZOO_DIR / f"{name}.md").read_text()
        meta = json.loads((ZOO_DIR / f"{name}.json").read_text())["meta"]
        for key in ("dataset", "training_command", "training_seconds", "hardware", "test_bits_per_dim", "coding"):
            assert key in meta, (name, key)
        assert "training command" in card and "test code length" in card


@pytest.mark.parametrize("kind", ["uint8", "binary"])
def test_default_models_roundtrip_and_rate(kind):
    x = sample_images(60) if kind == "uint8" else sample_binary(60)
    data = api.compress_images(x)
    assert torch.equal(api.decompress_images(data), x)
    loaded = load_model(api.MNIST_MODELS[kind])
    # the coding loss beyond the itemised overheads stays small even on a few images
    codec = make_codec(loaded)
    elbo = codec.negative_elbo(x)["bits"]
    bits, stats = codec.encode(x)
    fixed = stats.initial_bits + 5 * stats.lanes + stats.extra.get("plan_bits", 0)
    assert abs((8 * len(bits) - fixed) / elbo - 1) < 0.03
    assert 8 * len(data) / x.numel() < (1.35 if kind == "uint8" else 0.25)


def test_colour_model_on_cifar_sample(tmp_path):
    """The default colour model restores a CIFAR-10 batch file byte for byte, at a rate below
    what PNG gets on these images (about 5.9 bits/dim)."""
    src = SAMPLES / "cifar10-test-20.bin"
    summary = api.compress(src, tmp_path / "c.bbc")
    assert summary["model"] == api.COLOUR_MODEL
    api.decompress(tmp_path / "c.bbc", tmp_path / "restored.bin")
    assert (tmp_path / "restored.bin").read_bytes() == src.read_bytes()
    assert 8 * (tmp_path / "c.bbc").stat().st_size / (20 * 3072) < 5.0


def test_photographs_get_the_photo_model_and_thumbnails_the_cifar_one():
    assert api.default_model(torch.zeros((1, 3, 64, 96), dtype=torch.uint8), "uint8") == "photo-rgb-v2"
    assert api.default_model(torch.zeros((1, 100, 64), dtype=torch.uint8), "uint8") == "photo-grey"
    assert api.default_model(torch.zeros((5, 3, 32, 32), dtype=torch.uint8), "uint8") == "cifar10-rgb"
