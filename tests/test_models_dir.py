"""The user's models directory: install, list, and decompression finding a file's model by name or
by the SHA-256 of its weights."""
import gzip
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bbcodec import zoo
from bbcodec.cli import main

from helpers import SAMPLE_IDX, save_tiny


def run(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "my models"
    monkeypatch.setenv("BBCODEC_MODELS", str(d))
    return d


@pytest.fixture
def model(tmp_path):
    """A tiny model outside the models directory, with a card: (stem, weights' SHA-256)."""
    stem = Path(save_tiny(tmp_path / "src" / "mine", "uint8", seed=3))
    stem.with_name("mine.md").write_text("# mine\n")
    return stem, zoo.file_sha256(stem.with_name("mine.safetensors"))


def digits(tmp_path, n=6):
    raw = gzip.decompress(SAMPLE_IDX.read_bytes())
    path = tmp_path / "digits-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:4] + n.to_bytes(4, "big") + raw[8:16] + raw[16:16 + n * 784], 9, mtime=0))
    return path


def test_user_model_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("BBCODEC_MODELS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert zoo.user_model_dirs() == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.delenv("BBCODEC_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert zoo.user_model_dirs() == [tmp_path / "xdg" / "bbcodec" / "models"]
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert zoo.user_model_dirs() == [tmp_path / "home" / ".local" / "share" / "bbcodec" / "models"]
    monkeypatch.delenv("XDG_DATA_HOME")
    assert zoo.user_model_dirs() == [tmp_path / "home" / ".local" / "share" / "bbcodec" / "models"]


def test_install_and_list(models_dir, model):
    stem, sha = model
    r = run("models", "--install", stem.with_name("mine.safetensors"))
    assert "installed in" in r.output and "mine" in r.output
    assert sorted(p.name for p in models_dir.iterdir()) == ["mine.json", "mine.md", "mine.safetensors"]
    assert (models_dir / "mine.safetensors").read_bytes() == stem.with_name("mine.safetensors").read_bytes()
    listing = run("models").output.splitlines()
    assert listing[0].startswith("cifar10-rgb ")  # the embedded models first, as before
    assert f"your models in {models_dir}:" in listing and any(line.startswith("mine ") for line in listing)
    rows = json.loads(run("models", "--json").output)
    mine = [r for r in rows if r["name"] == "mine"]
    assert len(mine) == 1 and mine[0]["where"] == "user" and mine[0]["sha256"] == sha
    assert {r["where"] for r in rows if r["name"] in zoo.embedded_models()} == {"embedded"}
    # the listing names each default model's images; the earlier MNIST models are no default
    defaults = {r["name"]: r.get("default_for") for r in rows}
    assert defaults["mnist-uint8-v2"] == "8-bit 28x28 images" and defaults["mnist-uint8"] is None
    assert defaults["mnist-binary-v2"] == "binary 28x28 images" and defaults["mine"] is None
    assert any(line.startswith("mnist-uint8-v2 ") and line.endswith("the default for 8-bit 28x28 images")
               for line in listing)
    entries = {m.name: m for m in zoo.installed_models()}
    assert entries["mine"].path == models_dir / "mine" and entries["mine"].meta["dataset"].startswith("none")
    assert zoo.find_model_by_sha256(sha) == models_dir / "mine"
    assert zoo.find_model_by_sha256(entries["mnist-uint8"].sha256) == zoo.ZOO_DIR / "mnist-uint8"
    assert zoo.find_model_by_sha256("0" * 64) is None


def test_install_refusals_force_and_name(models_dir, model, tmp_path):
    stem, sha = model
    assert zoo.install_model(stem) == models_dir / "mine"
    assert zoo.install_model(stem.with_name("mine.json")) == models_dir / "mine"  # same weights again: fine
    other = Path(save_tiny(tmp_path / "other" / "mine", "uint8", seed=4))
    r = run("models", "--install", other, ok=False)
    assert r.exit_code == 1 and "another model named 'mine'" in r.output and r.output.count("\n") == 1
    assert zoo.file_sha256(models_dir / "mine.safetensors") == sha
    run("models", "--install", other, "--name", "mine-2")
    assert zoo.load_model("mine-2").sha256 == zoo.file_sha256(other.with_name("mine.safetensors"))
    run("models", "--install", other, "-f")
    assert zoo.file_sha256(models_dir / "mine.safetensors") != sha
    assert not (models_dir / "mine.md").exists()  # the replaced model's card went with it
    r = run("models", "--install", other, "--name", "mnist-uint8", ok=False)
    assert r.exit_code == 1 and "embedded" in r.output
    for bad in ("../x", ".hidden", "a/b"):
        r = run("models", "--install", other, "--name", bad, ok=False)
        assert r.exit_code == 1 and "model name" in r.output
    assert run("models", "--name", "x", ok=False).exit_code == 2
    # weights that do not fit their config are refused, and nothing is written
    broken = tmp_path / "broken"
    save_tiny(broken / "b", "uint8", seed=0)
    doc = json.loads((broken / "b.json").read_text())
    doc["config"]["hidden"] = 16
    (broken / "b.json").write_text(json.dumps(doc))
    r = run("models", "--install", broken / "b", ok=False)
    assert r.exit_code == 1 and "not a usable model" in r.output
    r = run("models", "--install", tmp_path / "nothing", ok=False)
    assert r.exit_code == 1 and "no model there" in r.output
    assert sorted(p.name for p in models_dir.iterdir()) == ["mine-2.json", "mine-2.safetensors", "mine.json",
                                                           "mine.safetensors"]  # no temporary files


def test_compress_by_user_model_name(models_dir, model, tmp_path):
    stem, sha = model
    zoo.install_model(stem, name="by-name")
    src = digits(tmp_path)
    run("compress", src, "-m", "by-name", "-q", "--no-fallback")
    info = json.loads(run("info", str(src) + ".bbc", "--json").output)
    assert info["model"] == "by-name" and info["model_sha256"] == sha


def test_decompress_finds_the_model_by_name_or_hash(models_dir, model, tmp_path, monkeypatch):
    stem, sha = model
    src = digits(tmp_path)
    packed = Path(str(src) + ".bbc")
    run("compress", src, "-m", stem, "-q", "--no-fallback")  # -m PATH: the model is not installed
    assert json.loads(run("info", packed, "--json").output)["model"] == "mine"

    def restores(out):
        run("decompress", packed, "-o", tmp_path / out, "-q")
        return (tmp_path / out).read_bytes() == src.read_bytes()

    # not installed: the error names the model and its weights, and says how to install it
    r = run("decompress", packed, "-o", tmp_path / "o0.gz", ok=False)
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "'mine'" in r.output and sha[:12] in r.output and "bbcodec models --install" in r.output
    assert not (tmp_path / "o0.gz").exists()

    zoo.install_model(stem)
    assert restores("o1.gz")  # by name
    for ext in (".safetensors", ".json", ".md"):  # renamed: found by the weights' hash
        (models_dir / f"mine{ext}").rename(models_dir / f"renamed{ext}")
    assert restores("o2.gz")
    # another model now has the file's model name: still found by the weights' hash
    save_tiny(models_dir / "mine", "uint8", seed=5)
    assert restores("o3.gz")
    # a second directory is searched too
    second = tmp_path / "second"
    second.mkdir()
    for ext in (".safetensors", ".json"):
        (models_dir / f"renamed{ext}").rename(second / f"renamed{ext}")
    monkeypatch.setenv("BBCODEC_MODELS", os.pathsep.join([str(models_dir), str(second)]))
    assert restores("o4.gz")
    # removed: the clear error, which mentions the installed model of that name with other weights
    for ext in (".safetensors", ".json"):
        (second / f"renamed{ext}").unlink()
    r = run("decompress", packed, "-o", tmp_path / "o5.gz", ok=False)
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "not installed" in r.output and sha[:12] in r.output and "other weights" in r.output
    assert "bbcodec models --install" in r.output and not (tmp_path / "o5.gz").exists()
    # -m PATH still works for a model that is nowhere installed
    run("decompress", packed, "-o", tmp_path / "o6.gz", "-m", stem, "-q")
    assert (tmp_path / "o6.gz").read_bytes() == src.read_bytes()


def test_hash_lookups_are_cached(models_dir, model, monkeypatch):
    stem, sha = model
    zoo.install_model(stem)
    calls = []
    real = zoo.file_sha256
    monkeypatch.setattr(zoo, "file_sha256", lambda path: calls.append(Path(path).name) or real(path))
    zoo._SHA_CACHE.clear()
    assert zoo.find_model_by_sha256(sha) == models_dir / "mine"
    assert len(calls) == len(zoo.embedded_models()) + 1  # the embedded models first, then the user's
    calls.clear()
    assert zoo.find_model_by_sha256(sha) == models_dir / "mine" and zoo.find_model_by_sha256("1" * 64) is None
    zoo.installed_models()
    assert calls == []  # every file hashed once
    weights = models_dir / "mine.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # changed: hashed again
    assert zoo.find_model_by_sha256(sha) == models_dir / "mine" and calls == ["mine.safetensors"]
