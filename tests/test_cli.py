"""The command line: round trips, exact restoration, and one-line errors with no partial outputs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bbcodec import zoo
from bbcodec.cli import main

from helpers import SAMPLE_BINARY, SAMPLE_IDX, save_tiny


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"uint8": save_tiny(d / "tiny8", "uint8", seed=1,
                               coding={"bits_per_image": 2000.0, "batch": 8, "lanes_per_image": 49, "initial_lanes": 16}),
            "binary": save_tiny(d / "tinybin", "binary", seed=2,
                                coding={"bits_per_image": 300.0, "batch": 8, "lanes_per_image": 14, "initial_lanes": 16}),
            "dir": d}


def run(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def small_idx(tmp_path, n=12):
    import gzip

    raw = gzip.decompress(SAMPLE_IDX.read_bytes())
    content = raw[:4] + n.to_bytes(4, "big") + raw[8:16] + raw[16:16 + n * 784]
    path = tmp_path / "digits-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(content, compresslevel=9, mtime=0))
    return path


def test_compress_decompress_idx_gz_byte_identical(tmp_path, models):
    src = small_idx(tmp_path)
    run("compress", src, "-m", models["uint8"], "-q")
    packed = Path(str(src) + ".bbc")
    assert packed.exists() and src.exists()  # the input is kept
    out = tmp_path / "restored.gz"
    run("decompress", packed, "-o", out, "-m", models["uint8"], "-q")
    assert out.read_bytes() == src.read_bytes()


def test_binary_npy_and_png(tmp_path, models):
    npy = tmp_path / "bits.npy"
    np.save(npy, np.load(SAMPLE_BINARY)[:10])
    run("compress", npy, "-m", models["binary"], "-q")
    run("decompress", str(npy) + ".bbc", "-o", tmp_path / "bits2.npy", "-m", models["binary"], "-q")
    assert (tmp_path / "bits2.npy").read_bytes() == npy.read_bytes()
    from PIL import Image

    png = tmp_path / "d.png"
    Image.fromarray(np.load(SAMPLE_BINARY)[0] * 200 + 17).save(png)
    run("compress", png, "-m", models["uint8"], "-q")
    run("decompress", str(png) + ".bbc", "-o", tmp_path / "d2.png", "-m", models["uint8"], "-q")
    a, b = Image.open(png), Image.open(tmp_path / "d2.png")
    assert a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_existing_output_refused_then_forced(tmp_path, models):
    src = small_idx(tmp_path, 3)
    run("compress", src, "-m", models["uint8"], "-q")
    before = Path(str(src) + ".bbc").read_bytes()
    r = run("compress", src, "-m", models["uint8"], "-q", ok=False)
    assert r.exit_code == 1 and "already exists" in r.output and r.output.count("\n") == 1
    assert Path(str(src) + ".bbc").read_bytes() == before
    run("compress", src, "-m", models["uint8"], "-q", "-f")


def test_refuses_to_overwrite_input(tmp_path, models):
    src = small_idx(tmp_path, 2)
    r = run("compress", src, "-o", src, "-m", models["uint8"], "-f", ok=False)
    assert r.exit_code == 1 and "overwrite the input" in r.output


@pytest.mark.parametrize("damage", ["truncate", "flip_header", "flip_body", "magic", "version"])
def test_damaged_bbc_files_fail_cleanly(tmp_path, models, damage):
    src = small_idx(tmp_path, 6)
    run("compress", src, "-m", models["uint8"], "-q")
    packed = Path(str(src) + ".bbc")
    data = bytearray(packed.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 7]
    elif damage == "flip_header":
        data[80] ^= 0xFF
    elif damage == "flip_body":
        data[len(data) // 2] ^= 0x10
    elif damage == "magic":
        data[:3] = b"XYZ"
    else:
        data[3] = 99
    bad = tmp_path / "bad.bbc"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.gz"
    r = run("decompress", bad, "-o", out, "-m", models["uint8"], "-q", ok=False)
    assert r.exit_code == 1, r.output
    assert r.output.startswith("bbcodec: error:") and r.output.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".out.gz.*"))


def test_wrong_model_weights_and_missing_model(tmp_path, models):
    src = small_idx(tmp_path, 4)
    run("compress", src, "-m", models["uint8"], "-q", "--no-fallback")
    other = save_tiny(models["dir"] / "other", "uint8", seed=42)
    r = run("decompress", str(src) + ".bbc", "-o", tmp_path / "o.gz", "-m", other, ok=False)
    assert r.exit_code == 1 and "other weights" in r.output
    r = run("decompress", str(src) + ".bbc", "-o", tmp_path / "o.gz", ok=False)
    assert r.exit_code == 1 and "not installed" in r.output


def test_unsupported_and_unreadable_inputs(tmp_path, models):
    junk = tmp_path / "junk.txt"
    junk.write_text("not an image")
    for path in (junk, tmp_path / "missing.idx"):
        r = run("compress", path, "-m", models["uint8"], ok=False)
        assert r.exit_code == 1 and r.output.count("\n") == 1 and not Path(str(path) + ".bbc").exists()
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((2, 32, 32), np.uint8))
    r = run("compress", big, "-m", models["uint8"], ok=False)
    assert r.exit_code == 1 and "28x28" in r.output
    r = run("compress", SAMPLE_IDX, "-m", models["binary"], "-o", tmp_path / "x.bbc", ok=False)
    assert r.exit_code == 1 and "binary" in r.output


def test_chunks_are_independent(tmp_path, models):
    from bbcodec.container import Container
    from bbcodec.layout import make_codec
    from bbcodec.zoo import load_model

    src = small_idx(tmp_path, 11)
    run("compress", src, "-m", models["uint8"], "--chunk", "4", "-q", "--no-fallback")
    box = Container.from_bytes(Path(str(src) + ".bbc").read_bytes())
    assert box.chunk_images == [4, 4, 3]
    loaded = load_model(models["uint8"])
    codec = make_codec(loaded, box.coding)
    last = codec.decode(box.chunks[2], 3, chunk=2)  # decodes on its own
    if box.coding.get("units_reversed"):  # a gzip-wrapped file: its chunks' images are coded last first
        last = last.flip(0)
    from bbcodec.datasets import load_images

    assert (last.numpy() == load_images(src)[8:11].numpy()).all()


def test_info_eval_models(tmp_path, models):
    src = small_idx(tmp_path, 16)
    run("compress", src, "-m", models["uint8"], "-q", "--no-fallback")
    info = json.loads(run("info", str(src) + ".bbc", "--json").output)
    assert info["images"] == 16 and info["kind"] == "idx" and info["model"] == "tiny8"
    rep = json.loads(run("eval", src, "-m", models["uint8"], "--json").output)
    assert rep["images"] == 16 and rep["code_length_bits_per_dim"] > 0
    assert set(rep["overhead_bits"]) == {"container_header_bits", "ans_framing_and_padding_bits", "initial_bits",
                                         "head_length_field_bits", "coding_plan_bits"}
    listing = run("models").output.splitlines()
    embedded = [line for line in listing if line.split(" ", 1)[0] in zoo.embedded_models()]
    # names longer than the usual column still leave the descriptions in one column
    assert len(embedded) == len(zoo.embedded_models())
    assert len({len(line) - len(line[len(line.split(" ", 1)[0]):].lstrip()) for line in embedded}) == 1


def test_closed_standard_output_stops_quietly(tmp_path):
    """``bbcodec info F | head -1`` and the like: a reader that closes the pipe ends the command
    with SIGPIPE's status (141) and nothing on standard error, not an "internal error"."""
    exe = Path(sys.executable).with_name("bbcodec")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    src = small_idx(tmp_path, 4)
    run("compress", src, "-q")
    p = subprocess.Popen([str(exe), "info", str(src) + ".bbc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the command writes anything
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == ""


def test_console_script_error_has_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("bbcodec")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([str(exe), "decompress", str(tmp_path / "nothing.bbc")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
