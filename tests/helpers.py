"""Tiny models and sample data for fast tests."""
from pathlib import Path

import numpy as np
import torch

from bbcodec.models.context_vae import ContextVAE, ContextVAEConfig
from bbcodec.zoo import save_model

SAMPLES = Path(__file__).resolve().parents[1] / "bbcodec" / "samples"
SAMPLE_IDX = SAMPLES / "mnist-test-500-idx3-ubyte.gz"
SAMPLE_BINARY = SAMPLES / "mnist-test-500-binarized.npy"


def tiny_config(pixels="uint8", **kw):
    cfg = dict(pixels=pixels, latent_dim=4, hidden=32, channels=4, features=4, head_hidden=8, components=2,
               likelihood="bernoulli" if pixels == "binary" else "logistic_mixture", latent_bits=8)
    cfg.update(kw)
    return ContextVAEConfig(**cfg)


def tiny_model(pixels="uint8", seed=0, **kw):
    torch.manual_seed(seed)
    return ContextVAE(tiny_config(pixels, **kw)).eval()


def save_tiny(path_stem, pixels="uint8", seed=0, coding=None, **kw):
    model = tiny_model(pixels, seed, **kw)
    meta = {"dataset": "none (random init, for tests)", "coding": coding or {"bits_per_image": 2000.0 if pixels == "uint8" else 300.0}}
    save_model(model, Path(path_stem), meta)
    return str(path_stem)


def sample_images(n=40):
    from bbcodec.datasets import load_images

    return load_images(SAMPLE_IDX)[:n]


def sample_binary(n=40):
    return torch.from_numpy(np.load(SAMPLE_BINARY)[:n])


def tiny_colour_model(seed=0):
    from bbcodec.models.hierarchical_vae import HierarchicalVAE, HierarchicalVAEConfig

    torch.manual_seed(seed)
    cfg = HierarchicalVAEConfig(patch=8, width=8, z1_channels=2, z2_channels=2, features=4, head_hidden=8,
                                context=3, components=2)
    return HierarchicalVAE(cfg).eval()


def save_tiny_colour(path_stem, seed=0):
    meta = {"dataset": "none (random init, for tests)",
            "coding": {"bits_per_image": 1500.0, "batch": 8, "lanes_per_image": 16, "initial_lanes": 16}}
    save_model(tiny_colour_model(seed), Path(path_stem), meta)
    return str(path_stem)
