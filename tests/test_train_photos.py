"""Training on photographs of different sizes: random crops, grid-crop validation, resume, grey."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bbcodec.cli import main
from bbcodec.datasets import DataError, grid_crops, load_images, load_photos, luminance, plan_crops, random_crops
from bbcodec.training import TrainingError, TrainSettings, run
from bbcodec.zoo import file_sha256, load_model

TINY_RGB = {"arch": "hierarchical_vae", "patch": 8, "width": 8, "z1_channels": 2, "z2_channels": 2, "features": 4,
            "head_hidden": 8, "context": 3, "components": 2}
SIZES = [(40, 30), (64, 48), (50, 70)]  # PIL (width, height)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    (root / "train").mkdir()
    (root / "valid").mkdir()
    for i, (w, h) in enumerate(SIZES):
        # smooth-ish content, so that the tiny model has something to learn
        base = rng.integers(0, 256, (h // 2 + 1, w // 2 + 1, 3)).repeat(2, 0).repeat(2, 1)[:h, :w]
        Image.fromarray(base.astype(np.uint8)).save(root / "train" / f"p{i}.png")
    Image.fromarray(rng.integers(0, 256, (24, 32), dtype=np.uint8), mode="L").save(root / "valid" / "v.png")
    return root


def settings(out, photos, **kw):
    base = dict(train=[str(photos / "train")], out=str(out), config=dict(TINY_RGB), valid=[str(photos / "valid")],
                epochs=2, batch_size=32, crop=8, crops_per_epoch=64, progress=False)
    base.update(kw)
    return TrainSettings(**base)


def test_load_photos_sizes_and_modes(photos):
    with pytest.raises(DataError, match="different"):
        load_images(photos / "train")  # does not stack
    imgs = load_photos(photos / "train")
    assert [tuple(im.shape) for im in imgs] == [(3, h, w) for w, h in SIZES] and imgs[0].dtype == torch.uint8
    (v,) = load_photos(photos / "valid")  # grey converted to RGB
    assert v.shape == (3, 24, 32) and torch.equal(v[0], v[1]) and torch.equal(v[0], v[2])
    grey = load_photos(photos / "train", grey=True)
    from PIL import Image

    with Image.open(photos / "train" / "p1.png") as im:
        want = torch.from_numpy(np.array(im.convert("L")))
    assert grey[1].shape == (1, 48, 64) and torch.equal(grey[1][0], want)
    assert torch.equal(luminance(imgs[1]), grey[1])  # PIL's formula, exactly


def test_random_crops_shapes_flips_determinism():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for w, h in SIZES]
    x = random_crops(imgs, 8, 500, torch.Generator().manual_seed(1))
    assert x.shape == (500, 3, 8, 8) and x.dtype == torch.uint8
    assert torch.equal(x, random_crops(imgs, 8, 500, torch.Generator().manual_seed(1)))
    assert not torch.equal(x, random_crops(imgs, 8, 500, torch.Generator().manual_seed(2)))
    plan = plan_crops(imgs, 8, 500, torch.Generator().manual_seed(1), flips=True, vflips=True)
    y = random_crops(imgs, 8, 500, torch.Generator().manual_seed(1), flips=True, vflips=True)
    assert 150 < int(plan.hflip.sum()) < 350 and 150 < int(plan.vflip.sum()) < 350
    for k in range(500):
        i, t, l = int(plan.index[k]), int(plan.top[k]), int(plan.left[k])
        want = imgs[i][:, t:t + 8, l:l + 8]
        want = want.flip(-1) if plan.hflip[k] else want
        want = want.flip(-2) if plan.vflip[k] else want
        assert torch.equal(y[k], want)
    none = plan_crops(imgs, 8, 200, torch.Generator().manual_seed(1), flips=False)
    assert not none.hflip.any() and not none.vflip.any()
    # an image is chosen in proportion to its area; crops stay inside it
    counts = torch.bincount(plan_crops(imgs, 8, 20000, torch.Generator().manual_seed(3)).index, minlength=3).double()
    areas = torch.tensor([w * h for w, h in SIZES], dtype=torch.float64)
    assert torch.allclose(counts / counts.sum(), areas / areas.sum(), atol=0.02)
    big = plan_crops(imgs, 8, 2000, torch.Generator().manual_seed(4))
    h = torch.tensor([im.shape[1] for im in imgs])[big.index]
    assert int((big.top + 8 - h).max()) <= 0 and int(big.top.min()) >= 0
    assert len(plan_crops(imgs + [torch.zeros(3, 4, 100, dtype=torch.uint8)], 8, 3000).index.unique()) == 3
    with pytest.raises(DataError, match="at least 80x80"):
        random_crops(imgs, 80, 4)


def test_grid_crops_raster_order():
    im = torch.arange(2 * 17 * 20).reshape(2, 17, 20).to(torch.uint8)
    g = grid_crops([im, im[:, :8, :8]], 8)
    assert g.shape == (2 * 2 + 1, 2, 8, 8)
    assert torch.equal(g[1], im[:, :8, 8:16]) and torch.equal(g[2], im[:, 8:16, :8]) and torch.equal(g[4], im[:, :8, :8])
    assert torch.equal(grid_crops([im], (4, 10))[3], im[:, 4:8, 10:20])
    assert len(grid_crops([im], 32)) == 0


def test_photo_training_validation_and_resume(tmp_path, photos):
    whole = run(settings(tmp_path / "whole", photos))
    assert whole["finished"]
    hist = whole["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and all(h["valid_bits_per_dim"] > 0 for h in hist)
    meta = load_model(tmp_path / "whole").meta
    assert meta["crop"] == 8 and meta["crops_per_epoch"] == 64 and meta["grey"] is False
    assert meta["valid_bits_per_dim"] == [h["valid_bits_per_dim"] for h in hist] and meta["validation_crops"] == 12
    first = run(settings(tmp_path / "resumed", photos, stop_after=1))
    assert not first["finished"] and not (tmp_path / "resumed.safetensors").exists()
    second = run(settings(tmp_path / "resumed", photos))
    assert second["finished"] and [h["epoch"] for h in second["history"]] == [1, 2]
    # the same crops, the same noise: the very same weights as the uninterrupted run
    assert file_sha256(tmp_path / "resumed.safetensors") == file_sha256(tmp_path / "whole.safetensors")
    assert second["history"][-1]["valid_bits_per_dim"] == hist[-1]["valid_bits_per_dim"]
    with pytest.raises(TrainingError, match="other crops"):
        run(settings(tmp_path / "resumed", photos, crops_per_epoch=96, epochs=3))


def test_mixed_sizes_default_to_patch_crops_and_errors(tmp_path, photos):
    r = run(settings(tmp_path / "d", photos, crop=0, crops_per_epoch=0, epochs=1, valid=[]))
    assert r["meta"]["crop"] == 8 and r["meta"]["crops_per_epoch"] == 15 + 48 + 48  # the grid crops' count
    with pytest.raises(TrainingError, match="multiple of 4"):
        run(settings(tmp_path / "e", photos, crop=10))
    with pytest.raises(TrainingError, match="fewer than one batch"):
        run(settings(tmp_path / "e", photos, crops_per_epoch=16))


def test_grey_trains_a_one_channel_model(tmp_path, photos):
    r = run(settings(tmp_path / "g", photos, grey=True, epochs=1))
    assert r["finished"] and r["meta"]["grey"] is True and r["history"][0]["valid_bits_per_dim"] > 0
    loaded = load_model(tmp_path / "g")
    assert loaded.config["channels"] == 1 and loaded.meta["coding"]["bits_per_image"] > 0


def test_cli_train_photos(tmp_path, photos):
    out = tmp_path / "cli"
    sets = [f"--set={k}={v}" for k, v in TINY_RGB.items() if k != "arch"]
    args = ["train", str(photos / "train"), "-o", str(out), "--arch", "hierarchical_vae", *sets, "--crop", "8",
            "--crops-per-epoch", "32", "--batch-size", "16", "--epochs", "1", "--valid", str(photos / "valid"), "-q"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "epoch 1/1: train" in r.output and "valid" in r.output and f"wrote {out}.safetensors" in r.output
    meta = json.loads((tmp_path / "cli.json").read_text())["meta"]
    assert meta["crop"] == 8 and meta["crops_per_epoch"] == 32 and len(meta["valid_bits_per_dim"]) == 1
    bad = CliRunner().invoke(main, args[:-1] + ["--crop", "6", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "multiple of 4" in bad.output


def test_luminance_model_starts_as_the_colour_models_grey_mode():
    """``--grey --init COLOUR`` starts from weights that compute the colour model's grey mode: the
    same KL and likelihood on images whose three channels are equal."""
    import torch

    from bbcodec.models.hierarchical_vae import HierarchicalVAE, HierarchicalVAEConfig, luminance_state_dict

    torch.manual_seed(0)
    colour = HierarchicalVAE(HierarchicalVAEConfig(patch=16, width=8, z1_channels=2, z2_channels=2, features=4,
                                                   head_hidden=8)).eval()
    for p in colour.parameters():  # away from the initialisation's symmetries
        p.data.add_(torch.randn_like(p) * 0.05)
    grey = HierarchicalVAE(HierarchicalVAEConfig.from_dict({**colour.config.to_dict(), "channels": 1})).eval()
    grey.load_state_dict(luminance_state_dict(colour))
    x = torch.randint(0, 256, (3, 1, 16, 16))
    with torch.no_grad():
        torch.manual_seed(1)
        a = grey.negative_elbo(x)
        torch.manual_seed(1)
        b = colour.negative_elbo(x.expand(-1, 3, -1, -1), steps=[s for s in range(colour.steps) if s % 3 == 0])
    assert torch.allclose(a["kl_bits"], b["kl_bits"], rtol=1e-5)
    assert torch.allclose(a["nll_bits"], b["nll_bits"], rtol=1e-5)


@pytest.mark.parametrize("channels, start", [(1, 3), (3, 3), (1, 1)])  # (1, 1): from no context at all
def test_a_wider_context_window_starts_as_the_narrower_model(channels, start):
    """``--init MODEL --set context=7`` starts from weights that compute exactly what MODEL does
    (exact numerics: the same bits), every context weight moved to its neighbour's new column."""
    from bbcodec.models.fixedpoint import ExactNumerics
    from bbcodec.models.hierarchical_vae import (HierarchicalVAE, HierarchicalVAEConfig, context_columns,
                                                 widened_context_state_dict)

    torch.manual_seed(0)
    narrow = HierarchicalVAE(HierarchicalVAEConfig(channels=channels, patch=16, width=8, z1_channels=2, z2_channels=2,
                                                   features=4, head_hidden=8, context=start)).eval()
    for p in narrow.parameters():  # away from the initialisation's symmetries
        p.data.add_(torch.randn_like(p) * 0.05)
    wide = HierarchicalVAE(HierarchicalVAEConfig.from_dict({**narrow.config.to_dict(), "context": 7})).eval()
    wide.load_state_dict(widened_context_state_dict(narrow, 7))
    assert sum(map(len, (c for _, _, c in context_columns(channels, 7)))) > sum(map(len, (c for _, _, c in context_columns(channels, start))))
    x = torch.randint(0, 256, (2, channels, 16, 16))
    with torch.no_grad():
        a = narrow.negative_elbo(x, ExactNumerics(), torch.Generator().manual_seed(1))
        b = wide.negative_elbo(x, ExactNumerics(), torch.Generator().manual_seed(1))
    assert torch.equal(a["nll_bits"], b["nll_bits"]) and torch.equal(a["kl_bits"], b["kl_bits"])
    with pytest.raises(ValueError, match="at least"):
        widened_context_state_dict(wide, 5)


def test_training_a_wider_window_from_a_model(tmp_path, photos):
    base = run(settings(tmp_path / "base", photos, epochs=1))
    wide = run(settings(tmp_path / "wide", photos, epochs=1, config={**TINY_RGB, "context": 5},
                        init=str(tmp_path / "base"), lr=0.0))
    assert load_model(tmp_path / "wide").config["context"] == 5
    # no learning: the starting weights, which compute the narrower model's validation loss
    assert wide["history"][0]["valid_bits_per_dim"] == pytest.approx(base["history"][0]["valid_bits_per_dim"], rel=1e-5)
    with pytest.raises(TrainingError, match="wider"):
        run(settings(tmp_path / "narrowed", photos, epochs=1, config={**TINY_RGB, "context": 3},
                     init=str(tmp_path / "wide")))
