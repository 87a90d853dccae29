"""Training: a few steps of a tiny model, checkpoint and resume, and DDP under torchrun (gloo)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bbcodec.training import TrainSettings, run
from bbcodec.zoo import load_model

from helpers import SAMPLE_IDX

TINY = {"arch": "context_vae", "pixels": "uint8", "hidden": 32, "latent_dim": 4, "channels": 4, "features": 4,
        "head_hidden": 8, "components": 2}


def settings(out, **kw):
    base = dict(train=[str(SAMPLE_IDX)], out=str(out), config=dict(TINY), test=[str(SAMPLE_IDX)], epochs=2,
                batch_size=50, max_train=200, max_test=50, progress=False)
    base.update(kw)
    return TrainSettings(**base)


def test_train_checkpoint_resume_and_export(tmp_path):
    first = run(settings(tmp_path / "m", stop_after=1))
    assert not first["finished"] and (tmp_path / "m.ckpt").exists() and not (tmp_path / "m.safetensors").exists()
    second = run(settings(tmp_path / "m"))
    assert second["finished"] and [h["epoch"] for h in second["history"]] == [1, 2]
    assert "test_bits_per_dim" in second["history"][-1]
    loaded = load_model(tmp_path / "m")
    assert loaded.meta["epochs"] == 2 and loaded.sha256
    coding = loaded.meta["coding"]  # measured from the trained model, used by its files
    assert coding["bits_per_image"] > 100 and coding["pop_bits_per_image"] > 0 and coding["stored_plan"]
    from bbcodec import api
    from bbcodec.container import Container
    from helpers import sample_images

    box = Container.from_bytes(api.compress_images(sample_images(8), tmp_path / "m", fallback=False))
    assert box.coding["bits_per_image"] == coding["bits_per_image"]
    assert box.coding["lanes_per_image"] == coding["lanes_per_image"]


def test_resume_refuses_other_config(tmp_path):
    run(settings(tmp_path / "m", stop_after=1))
    other = settings(tmp_path / "m")
    other.config["hidden"] = 16
    with pytest.raises(ValueError, match="another model configuration"):
        run(other)


def test_binary_training_and_colour_model(tmp_path):
    cfg = dict(TINY, pixels="binary", likelihood="bernoulli")
    assert run(settings(tmp_path / "b", config=cfg, epochs=1))["finished"]
    rgb = {"arch": "hierarchical_vae", "patch": 8, "width": 8, "z1_channels": 2, "z2_channels": 2, "features": 4,
           "head_hidden": 8, "context": 3, "components": 2}
    import numpy as np

    imgs = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", imgs)
    s = settings(tmp_path / "c", config=rgb, train=[str(tmp_path / "rgb.npy")], test=[], epochs=1, batch_size=32)
    assert run(s)["finished"]
    assert load_model(tmp_path / "c").meta["coding"]["pyramid"] == 256
    assert load_model(tmp_path / "b").meta["coding"]["bits_per_image"] > 0


def test_ddp_two_processes_gloo(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not available")
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("arch", "pixels")]
    cmd = [torchrun, "--nproc-per-node", "2", "--master-port", "29561", "-m", "bbcodec.cli", "train", str(SAMPLE_IDX),
           "-o", str(tmp_path / "ddp"), "--epochs", "1", "--batch-size", "50", "--max-train", "200", "-q"] + sets
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp.json").read_text())["meta"]
    assert "2 processes" in meta["hardware"]


def test_fine_tuning_starts_from_the_given_model(tmp_path):
    import torch

    from bbcodec.training import train

    run(settings(tmp_path / "base", epochs=1))
    train([str(SAMPLE_IDX)], tmp_path / "tuned", init=str(tmp_path / "base"), epochs=1, lr=1e-12, batch_size=50,
          max_train=100, progress=False)
    base, tuned = load_model(tmp_path / "base"), load_model(tmp_path / "tuned")
    assert tuned.config == base.config and tuned.meta["initialised_from"] == str(tmp_path / "base")
    for (name, a), b in zip(base.model.state_dict().items(), tuned.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
