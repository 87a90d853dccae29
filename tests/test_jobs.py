"""``jobs`` / ``--jobs N``: chunks coded in worker processes give the very bytes of ``jobs=1``,
decode exactly, report progress, and fail with the same one-line error on a corrupt chunk."""
import gzip
import subprocess
import sys

import pytest
import torch

import bbcodec
from bbcodec import api
from bbcodec.container import Container
from bbcodec.errors import BBCodecError
from bbcodec.parallel import resolve_jobs

from conftest import shared_data
from helpers import save_tiny, save_tiny_colour


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobs-models")
    return {"uint8": save_tiny(d / "tiny8", "uint8", seed=1,
                               coding={"bits_per_image": 2000.0, "batch": 8, "lanes_per_image": 49, "initial_lanes": 16}),
            "colour": save_tiny_colour(d / "tinyrgb")}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread here as in the workers (the machine may have other work; results do not
    depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The first 120 digits of the real MNIST test set, as a gzipped IDX file."""
    raw = gzip.decompress(shared_data("mnist", "t10k-images-idx3-ubyte.gz").read_bytes())
    n = 120
    path = tmp_path_factory.mktemp("jobs-data") / "digits-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:4] + n.to_bytes(4, "big") + raw[8:16] + raw[16:16 + n * 784],
                                   compresslevel=9, mtime=0))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits, models):
    """``digits`` compressed in chunks of 40 with jobs=1."""
    out = tmp_path_factory.mktemp("jobs-ref") / "ref.bbc"
    api.compress(digits, out, model=models["uint8"], chunk=40, fallback=False, jobs=1)
    assert Container.from_bytes(out.read_bytes()).chunk_images == [40, 40, 40]
    return out


def _cifar(n):
    """The first ``n`` real CIFAR-10 test images, (n, 3, 32, 32) uint8."""
    from bbcodec.formats import read_image_file

    return read_image_file(shared_data("cifar10", "test_batch_first1000.bin.gz")).images[:n].contiguous()


def test_cli_jobs_same_bytes_and_parallel_decode(tmp_path, digits, reference, models):
    from click.testing import CliRunner

    from bbcodec.cli import main

    two = tmp_path / "two.bbc"
    r = CliRunner().invoke(main, ["compress", str(digits), "-o", str(two), "-m", models["uint8"], "--chunk", "40",
                                  "--no-fallback", "-q", "--jobs", "2"])
    assert r.exit_code == 0, r.output
    assert two.read_bytes() == reference.read_bytes()
    ticks = []
    out = tmp_path / "restored.gz"
    api.decompress(reference, out, model=models["uint8"], jobs=2, progress=lambda n, total: ticks.append((n, total)))
    assert out.read_bytes() == digits.read_bytes()
    assert sum(n for n, _ in ticks) == 120 and {t for _, t in ticks} == {120}


def test_evaluate_with_jobs_matches_and_reports_progress(digits, models):
    a = api.evaluate(digits, model=models["uint8"], chunk=40)
    ticks = []
    b = api.evaluate(digits, model=models["uint8"], chunk=40, jobs=2, progress=lambda n, total: ticks.append(n))
    assert b["total_bits"] == a["total_bits"] and b["overhead_bits"] == a["overhead_bits"]
    assert a["jobs"] == 1 and b["jobs"] == 2 and sum(ticks) == 2 * 120  # encode, then decode


def test_tiles_in_runs_and_pyramid_pieces(models):
    images = _cifar(3)  # 8x8 tiles: 16 per image
    for coding, decode in ((None, False), ({"pyramid": 16}, True)):  # runs of tiles; whole images of two levels
        ref = bbcodec.compress_images(images, model=models["colour"], coding=coding, chunk=16, fallback=False)
        assert len(Container.from_bytes(ref).chunks) == 3
        assert bbcodec.compress_images(images, model=models["colour"], coding=coding, chunk=16,
                                       fallback=False, jobs=2) == ref
        if decode:
            assert torch.equal(bbcodec.decompress_images(ref, model=models["colour"], jobs=2), images)


def test_edge_tiles_same_bytes_in_workers_and_threads(models):
    from bbcodec import threads

    x = torch.randint(0, 256, (3, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    coding = {"pyramid": 16, "tile": 16}  # 8-pixel patch: 16x16 tiles, a column and a band of 8x8
    ref = bbcodec.compress_images(x, model=models["colour"], coding=coding, chunk=1, fallback=False)
    assert Container.from_bytes(ref).coding["edge_tiles"] is True and len(Container.from_bytes(ref).chunks) == 3
    assert bbcodec.compress_images(x, model=models["colour"], coding=coding, chunk=1, fallback=False, jobs=2) == ref
    before = threads.coding_threads()
    try:
        threads.configure(1)
        assert bbcodec.compress_images(x, model=models["colour"], coding=coding, chunk=1, fallback=False) == ref
    finally:
        threads.configure(before)
    assert torch.equal(bbcodec.decompress_images(ref, model=models["colour"], jobs=2), x)


def _corrupt(data: bytes, index: int) -> bytes:
    box = Container.from_bytes(data)
    body = bytearray(box.chunks[index])
    for i in range(len(body) // 3, len(body) // 3 + 8):
        body[i] ^= 0x5A
    box.chunks[index] = bytes(body)
    return box.to_bytes()


def test_corrupt_chunk_same_clean_error(tmp_path, reference, models):
    bad = tmp_path / "bad.bbc"
    bad.write_bytes(_corrupt(reference.read_bytes(), 1))
    errors = []
    for jobs in (1, 2):
        with pytest.raises(BBCodecError) as info:
            api.decompress(bad, tmp_path / f"out{jobs}.gz", model=models["uint8"], jobs=jobs)
        errors.append(str(info.value))
        assert not (tmp_path / f"out{jobs}.gz").exists()
    assert errors[0] == errors[1] and "corrupt" in errors[0], errors
    r = subprocess.run([sys.executable, "-m", "bbcodec.cli", "decompress", "--jobs", "2", "-m", models["uint8"],
                        str(bad), "-o", str(tmp_path / "cli.gz")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and errors[0] in r.stderr
    assert not (tmp_path / "cli.gz").exists()


def test_jobs_option_help_and_range():
    from click.testing import CliRunner

    from bbcodec.cli import main

    for command in ("compress", "decompress", "eval"):
        assert "--jobs" in CliRunner().invoke(main, [command, "--help"]).output
    assert CliRunner().invoke(main, ["compress", "x", "--jobs", "-1"]).exit_code == 2


def test_jobs_argument():
    from bbcodec.threads import available_cpus

    assert resolve_jobs(0) == available_cpus() and resolve_jobs(3) == 3
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(BBCodecError):
            resolve_jobs(bad)


def test_model_objects_code_in_process():
    from bbcodec.parallel import workers_for
    from bbcodec.zoo import LoadedModel

    obj = LoadedModel("custom", object(), {"arch": "protocol"}, {}, "")
    assert workers_for(2, obj) is None and workers_for(1, obj) is None
