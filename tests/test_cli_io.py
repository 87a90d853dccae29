"""Files and streams the way gzip handles them: stdin/stdout, special files and symlinks as outputs,
permissions, full disks and Ctrl-C, several inputs, light start-up, gzip files zlib cannot
reproduce, and odd inputs refused with one line."""
import errno
import gzip
import json
import os
import stat
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bbcodec import fileio
from bbcodec.cli import _Progress, main
from bbcodec.datasets import DataError, parse_idx
from bbcodec.formats import read_image_bytes

from helpers import SAMPLE_IDX, save_tiny

CONTENT = gzip.decompress(SAMPLE_IDX.read_bytes())  # 500 MNIST test digits, IDX


def idx_bytes(n):
    return CONTENT[:4] + n.to_bytes(4, "big") + CONTENT[8:16] + CONTENT[16:16 + n * 784]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return save_tiny(d / "tiny8", "uint8", seed=1,
                     coding={"bits_per_image": 2000.0, "batch": 8, "lanes_per_image": 49, "initial_lanes": 16})


def run(*args, ok=True, input=None):
    r = CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


def no_temp_files(directory):
    return not [p for p in Path(directory).iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------- streams
def test_stdin_to_stdout_and_back(tmp_path, model):
    raw = idx_bytes(4)
    r = run("compress", "-", "-m", model, input=raw)
    packed = r.stdout_bytes
    assert packed[:3] == b"BBC" and "<stdin> -> <stdout>" in r.stderr  # the summary is not in the data
    r = run("decompress", "-c", "-m", model, "-", input=packed)
    assert r.stdout_bytes == raw
    out = tmp_path / "restored-idx3-ubyte"
    run("decompress", "-", "-o", out, "-m", model, "-q", input=packed)
    assert out.read_bytes() == raw
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(raw)
    r = run("compress", src, "-c", "-m", model, "-q")  # -c for a named input: nothing written beside it
    assert r.stdout_bytes == packed and not Path(f"{src}.bbc").exists()
    assert run("compress", src, "-o", "-", "-m", model, "-q").stdout_bytes == packed
    r = run("decompress", "-m", model, "-q", "-", "-o", "-", input=packed)
    assert r.stdout_bytes == raw
    r = run("decompress", "-m", model, "-q", "-", "-o", "/dev/stdout", input=packed)  # the descriptor itself
    assert r.stdout_bytes == raw


def test_binary_data_is_never_written_to_a_terminal(tmp_path, model, monkeypatch):
    monkeypatch.setattr(fileio, "_isatty", lambda stream: True)
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(2))
    for args in (["compress", src, "-c"], ["compress", "-"], ["decompress", "-c", tmp_path / "x.bbc"]):
        r = run(*args, "-m", model, ok=False, input=b"")
        assert r.exit_code == 1 and "terminal" in r.stderr and r.stderr.count("\n") == 1, r.output
        assert r.stdout_bytes == b""


def test_kind_sniffed_or_given():
    rng = np.random.default_rng(0)
    records = np.concatenate([rng.integers(0, 10, (3, 1)), rng.integers(0, 256, (3, 3072))], 1).astype(np.uint8)
    cifar = records.tobytes()
    assert read_image_bytes(cifar, "<stdin>").kind == "cifar"  # no magic; labels < 10, 3 whole records
    assert read_image_bytes(gzip.compress(cifar, mtime=0), "<stdin>").kind == "cifar"
    assert read_image_bytes(idx_bytes(3), "<stdin>").kind == "idx"
    assert read_image_bytes(gzip.compress(idx_bytes(3), mtime=0), "<stdin>").kind == "idx"
    records[1, 0] = 200  # a label byte of 200: not a CIFAR-10 batch by content, unless told
    with pytest.raises(DataError, match="--kind"):
        read_image_bytes(records.tobytes(), "<stdin>")
    f = read_image_bytes(records.tobytes(), "<stdin>", kind="cifar")
    assert f.kind == "cifar" and tuple(f.images.shape) == (3, 3, 32, 32)
    with pytest.raises(DataError, match="not a PNG image"):
        read_image_bytes(idx_bytes(3), "<stdin>", kind="png")
    with pytest.raises(DataError, match="CIFAR-10 record"):
        read_image_bytes(idx_bytes(3), "<stdin>", kind="cifar")


def test_kind_option_on_stdin(model):
    r = run("compress", "-", "--kind", "npy", "-m", model, ok=False, input=idx_bytes(2))
    assert r.exit_code == 1 and "<stdin>: not a .npy file" in r.stderr
    r = run("compress", "-", "--kind", "tiff", ok=False, input=b"x")
    assert r.exit_code == 2


# ---------------------------------------------------------------------------------- outputs
def test_special_file_outputs_are_written_into(tmp_path, model):
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(2))
    run("compress", src, "-o", os.devnull, "-m", model, "-q")  # exists: no -f needed, never replaced
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(Path(fifo).read_bytes()))
    reader.start()
    run("compress", src, "-o", fifo, "-m", model, "-q")
    reader.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got and got[0][:3] == b"BBC"
    assert no_temp_files(tmp_path)


def test_symlink_output_is_written_through(tmp_path, model):
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(2))
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "real.bbc"
    target.write_bytes(b"old")
    link = tmp_path / "link.bbc"
    link.symlink_to(target)
    r = run("compress", src, "-o", link, "-m", model, "-q", ok=False)
    assert r.exit_code == 1 and "already exists" in r.stderr and target.read_bytes() == b"old"
    run("compress", src, "-o", link, "-m", model, "-q", "-f")
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_bytes()[:3] == b"BBC"
    assert no_temp_files(tmp_path) and no_temp_files(target.parent)
    r = run("compress", src, "-o", tmp_path, "-m", model, "-q", "-f", ok=False)
    assert r.exit_code == 1 and "is a directory" in r.stderr


def test_outputs_get_the_inputs_permissions(tmp_path, model):
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(2))
    src.chmod(0o640)
    run("compress", src, "-m", model, "-q")
    packed = Path(f"{src}.bbc")
    assert stat.S_IMODE(packed.stat().st_mode) == 0o640
    packed.chmod(0o604)
    out = tmp_path / "restored"
    run("decompress", packed, "-o", out, "-m", model, "-q")
    assert stat.S_IMODE(out.stat().st_mode) == 0o604
    old = os.umask(0o027)
    try:
        run("decompress", "-", "-o", tmp_path / "from-stdin", "-m", model, "-q", input=packed.read_bytes())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "from-stdin").stat().st_mode) == 0o640  # 0o666 & ~0o027


def test_full_disk_and_ctrl_c_leave_nothing(tmp_path, model, monkeypatch):
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(2))
    packed = tmp_path / "d.bbc"
    real_write = os.write

    def full(fd, data):
        real_write(fd, bytes(data)[:10])  # a little gets through, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    r = run("compress", src, "-o", packed, "-m", model, "-q", ok=False)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert str(packed) in r.stderr and "No space left on device" in r.stderr and "Traceback" not in r.output
    assert not packed.exists() and no_temp_files(tmp_path)

    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    r = run("compress", src, "-o", packed, "-m", model, "-q", ok=False)
    assert r.exit_code == 130 and r.stderr == "bbcodec: interrupted\n"
    assert not packed.exists() and no_temp_files(tmp_path)
    # a replaced file is untouched when the write fails
    packed.write_bytes(b"previous")
    monkeypatch.setattr(os, "write", full)
    r = run("compress", src, "-o", packed, "-m", model, "-q", "-f", ok=False)
    assert r.exit_code == 1 and packed.read_bytes() == b"previous" and no_temp_files(tmp_path)


def test_write_output_api(tmp_path, monkeypatch):
    out = tmp_path / "x"
    fileio.write_output(out, b"abc", mode=0o600)
    assert out.read_bytes() == b"abc" and stat.S_IMODE(out.stat().st_mode) == 0o600
    with pytest.raises(fileio.UsageError, match="already exists"):
        fileio.write_output(out, b"def")
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(fileio.OutputError, match="No space left"):
        fileio.write_output(tmp_path / "y", b"abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


# ---------------------------------------------------------------------------------- start-up
def test_console_entry_point_through_pipes(tmp_path, model):
    """``python -m bbcodec.cli`` (the console entry's code) ends without the interpreter's teardown
    once torch is loaded: what it wrote to a pipe must still arrive whole, and statuses hold."""
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(20))
    cli = [sys.executable, "-m", "bbcodec.cli"]
    packed = subprocess.run(cli + ["compress", "-c", "--no-fallback", "-m", model, str(src)], capture_output=True,
                            timeout=120)
    assert packed.returncode == 0 and b"tiny8" in packed.stderr and b"Traceback" not in packed.stderr, packed.stderr
    back = subprocess.run(cli + ["decompress", "-c", "-m", model, "-"], input=packed.stdout, capture_output=True,
                          timeout=120)
    assert back.returncode == 0 and back.stdout == src.read_bytes(), back.stderr
    report = subprocess.run(cli + ["eval", "-q", "--json", "-m", model, str(src)], capture_output=True, timeout=120)
    assert report.returncode == 0 and json.loads(report.stdout)["images"] == 20, report.stderr
    bad = subprocess.run(cli + ["decompress", "-c", "-"], input=packed.stdout[:-7], capture_output=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout == b"" and bad.stderr.count(b"\n") == 1, bad.stderr


def test_start_up_imports_nothing_heavy():
    code = ("import sys\nimport bbcodec.cli\nheavy = [m for m in ('torch', 'numpy', 'PIL', 'tqdm', 'bbcodec.api') "
            "if m in sys.modules]\nassert not heavy, heavy\n"
            "for args in (['--help'], ['models'], ['models', '--json']):\n"
            "    try:\n        bbcodec.cli.main(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_python_dash_m_runs_the_command_line(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "bbcodec", "models"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "mnist-uint8" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "bbcodec", "info", str(tmp_path / "absent.bbc")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "bbcodec: error:" in bad.stderr, bad.stderr


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(2))
    code = ("import builtins, sys\nreal = builtins.__import__\n"
            "def imp(name, *a, **k):\n    if name == 'torch':\n        raise KeyboardInterrupt\n    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\nfrom bbcodec.cli import main\nmain(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", code, "compress", str(src)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130 and r.stderr == "bbcodec: interrupted\n", r.stderr
    assert not Path(f"{src}.bbc").exists()


def test_interrupt_in_a_command_is_one_line(tmp_path, monkeypatch):
    from bbcodec import api

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "compress", stop)
    r = run("compress", tmp_path / "x", ok=False)
    assert r.exit_code == 130 and r.stderr == "bbcodec: interrupted\n"

    def broken_by_ctrl_c(*a, **k):  # Ctrl-C inside an import that turned it into another error
        from bbcodec import cli

        cli._SIGINT[0] = True
        raise AttributeError("module 'numpy' has no attribute 'iterable'")

    monkeypatch.setattr(api, "compress", broken_by_ctrl_c)
    r = run("compress", tmp_path / "x", tmp_path / "y", ok=False)
    assert r.exit_code == 130 and r.stderr == "bbcodec: interrupted\n"


# ---------------------------------------------------------------------------------- several files
def test_several_files_each_reported_and_the_rest_still_done(tmp_path, model):
    good = []
    for i in (1, 2):
        p = tmp_path / f"d{i}-idx3-ubyte"
        p.write_bytes(idx_bytes(i + 1))
        good.append(p)
    junk = tmp_path / "junk.txt"
    junk.write_text("not an image")
    r = run("compress", good[0], tmp_path / "missing", junk, tmp_path, good[1], "-m", model, ok=False)
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("bbcodec: error:")]
    assert len(errors) == 3 and "missing" in errors[0] and "junk.txt" in errors[1] and str(tmp_path) in errors[2]
    assert all(Path(f"{p}.bbc").exists() for p in good) and len(r.stdout.splitlines()) == 2
    assert not Path(f"{junk}.bbc").exists()
    for p in good:
        p.rename(f"{p}.orig")
    r = run("decompress", f"{good[0]}.bbc", junk, f"{good[1]}.bbc", "-m", model, "-q", ok=False)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "junk.txt" in r.stderr
    assert all(p.read_bytes() == Path(f"{p}.orig").read_bytes() for p in good)


@pytest.mark.parametrize("args", [["compress", "a", "b", "-o", "x"], ["compress", "a", "b", "-c"],
                                  ["decompress", "-", "-", "-c"], ["compress", "a", "-c", "-o", "x"],
                                  ["compress"], ["compress", "a", "--chunk", "0"]])
def test_bad_usage_exits_2(args):
    r = run(*args, ok=False)
    assert r.exit_code == 2, r.output


# ---------------------------------------------------------------------------------- progress
def test_progress_counts_images_or_tiles(tmp_path, model):
    seen = []

    class Recorder(_Progress):
        def __call__(self, n, total):
            super().__call__(n, total)
            if (self.desc, self.unit) not in seen:
                seen.append((self.desc, self.unit))

    tick = Recorder(["a", "b"], images=10)
    for _ in range(2):  # two phases (eval: encode, then decode), a bar each
        for _ in range(10):
            tick(1, 10)
    tick.close()
    tick = Recorder(["c"], images=2)
    tick(3, 12)  # 12 units for 2 images: tiles
    tick.close()
    tick = Recorder(["d"])  # no count known
    tick(1, 5)
    tick.close()
    assert seen == [("a", "image"), ("b", "image"), ("c", "tile"), ("d", "units")]
    from bbcodec import api

    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(idx_bytes(3))
    tick = Recorder(["compress"])
    r = api.compress(src, model=model, progress=tick, fallback=False)
    assert tick.images == 3 and seen[-1] == ("compress", "image") and tick.done == 3 and r["images"] == 3
    tick = Recorder(["decompress"])
    api.decompress(f"{src}.bbc", tmp_path / "back", model=model, progress=tick)
    assert tick.images == 3 and seen[-1] == ("decompress", "image") and tick.done == 3


# ---------------------------------------------------------------------------------- gzip
def odd_gzip(content):
    """Valid gzip that none of the zlib settings tried reproduce (level 1, memLevel 3, filtered)."""
    c = zlib.compressobj(1, zlib.DEFLATED, 31, 3, zlib.Z_FILTERED)
    return c.compress(content) + c.flush()


def test_gzip_zlib_cannot_reproduce_is_refused_fast(tmp_path, monkeypatch):
    content = CONTENT[:16] + CONTENT[16:] * 8  # 3.1 MB of digits
    content = content[:4] + (4000).to_bytes(4, "big") + content[8:]
    fed = []
    real = zlib.compressobj

    class Counting:
        def __init__(self, *a):
            self.c = real(*a)

        def compress(self, data):
            fed.append(len(data))
            return self.c.compress(data)

        def flush(self, *a):
            return self.c.flush(*a)

    monkeypatch.setattr(zlib, "compressobj", Counting)
    for raw in (odd_gzip(content), gzip.compress(content[:100], 1, mtime=0) + gzip.compress(content[100:], 1, mtime=0)):
        fed.clear()
        with pytest.raises(DataError, match="cannot be restored byte for byte.*--gunzipped"):
            read_image_bytes(raw, "x-idx3-ubyte.gz")
        assert sum(fed) < len(content)  # all 12 settings together fed less than one full deflate
    good = gzip.compress(content, compresslevel=6, mtime=0)
    fed.clear()
    assert read_image_bytes(good, "x-idx3-ubyte.gz").restore["gzip"]["l"] == 6
    assert sum(fed) < 2 * len(content)  # level 9 dropped early, level 6 once through


def gzip_diverging_after(content, level, at):
    """Valid gzip of ``content`` that zlib ``level`` reproduces up to content byte ``at`` and not
    after it (a full flush there, which a plain deflate does not make)."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(content[:at]) + c.flush(zlib.Z_FULL_FLUSH) + c.compress(content[at:]) + c.flush()


def test_quick_gzip_check_leaves_one_deflate_for_later(monkeypatch):
    from bbcodec import formats

    content = CONTENT[:16] + CONTENT[16:] * 3  # 1.2 MB, 1,500 digits: more than GZIP_QUICK
    content = content[:4] + (1500).to_bytes(4, "big") + content[8:]
    good = gzip.compress(content, compresslevel=6, mtime=0)
    data, info, finish = formats.unwrap_gzip_quickly(good, "x")
    assert data == content and info == formats.unwrap_gzip(good, "x")[1] and info["l"] == 6
    assert finish is not None and finish() and finish()  # the rest checked (once; asking again is free)
    late = gzip_diverging_after(content, 9, formats.GZIP_QUICK + (1 << 17))
    _, info, finish = formats.unwrap_gzip_quickly(late, "x")
    assert info["l"] == 9 and finish() is False  # the first megabyte matched level 9, the rest does not
    with pytest.raises(DataError, match="cannot be restored byte for byte"):
        formats.unwrap_gzip(late, "x")
    small = gzip.compress(content[:50_000], compresslevel=9, mtime=0)  # whole content within the quick part
    assert formats.unwrap_gzip_quickly(small, "x")[2] is None
    assert formats.unwrap_gzip_quickly(b"plain", "x") == (b"plain", None, None)


def test_compress_checks_gzip_alongside_the_model_and_retries_when_the_check_fails(model, monkeypatch):
    from bbcodec import api, formats

    content = idx_bytes(12)
    good = gzip.compress(content, compresslevel=6, mtime=0)
    packed = api.compress_data(good, "x-idx3-ubyte.gz", model=model)[0]  # quick part took it all: settled
    assert api.decompress_data(packed, model=model)[0] == good
    real_quick, real_full = formats.unwrap_gzip_quickly, formats.unwrap_gzip
    finished, full_checks = [], []

    def wrong_rest():
        finished.append(1)
        return False

    def quick_and_wrong(raw, name, gunzipped=False):  # the rare case: level 9 let through, and wrong
        data, info, _ = real_quick(raw, name, gunzipped=True)
        return data, {"h": (info or {}).get("h", ""), "l": 9, "m": 8}, wrong_rest

    monkeypatch.setattr(formats, "unwrap_gzip_quickly", quick_and_wrong)
    monkeypatch.setattr(formats, "unwrap_gzip", lambda raw, *a: full_checks.append(1) or real_full(raw, *a))
    assert api.compress_data(good, "x-idx3-ubyte.gz", model=model)[0] == packed  # retried with the whole check
    assert finished == [1] and full_checks == [1]
    late = gzip_diverging_after(content, 9, 6000)
    with pytest.raises(DataError, match="cannot be restored byte for byte"):
        api.compress_data(late, "x-idx3-ubyte.gz", model=model)
    packed, _ = api.compress_data(late, "x-idx3-ubyte.gz", model=model, gunzipped=True)
    assert api.decompress_data(packed, model=model)[0] == content  # restored gunzipped, as --gunzipped says
    assert finished == [1] * 3


def test_gzip_files_decode_first_images_first_and_deflate_while_decoding(tmp_path, model, monkeypatch):
    from bbcodec import api, formats
    from bbcodec.container import Container

    raw = gzip.compress(idx_bytes(20), compresslevel=9, mtime=0)
    runs = []
    real_feed = formats.GzipFileWriter.feed
    monkeypatch.setattr(formats.GzipFileWriter, "feed", lambda self, images: runs.append(len(images)) or real_feed(self, images))
    for coding, chunk, streamed in (({}, 10_000, True), ({"units_reversed": False}, 10_000, False), ({}, 6, False)):
        runs.clear()
        packed, _ = api.compress_data(raw, "x-idx3-ubyte.gz", model=model, coding=coding, chunk=chunk, fallback=False)
        assert Container.from_bytes(packed).coding.get("units_reversed", False) is coding.get("units_reversed", True)
        assert api.decompress_data(packed, model=model)[0] == raw
        assert (sum(runs) == 20 and len(runs) > 1) if streamed else not runs  # batches of 8, in order
    plain = api.compress_data(idx_bytes(20), "x-idx3-ubyte", model=model, fallback=False)[0]
    assert "units_reversed" not in Container.from_bytes(plain).coding  # nothing to stream: as before
    src = tmp_path / "x-idx3-ubyte.gz"
    src.write_bytes(raw)  # evaluate measures the file compress writes
    assert api.evaluate(src, model=model)["total_bits"] == 8 * len(
        api.compress_data(raw, src.name, model=model, fallback=False)[0])


def test_gunzipped_round_trip(tmp_path, model):
    raw = odd_gzip(idx_bytes(3))
    src = tmp_path / "odd-idx3-ubyte.gz"
    src.write_bytes(raw)
    r = run("compress", src, "-m", model, ok=False)
    assert r.exit_code == 1 and "--gunzipped" in r.stderr and r.stderr.count("\n") == 1
    r = run("compress", src, "-m", model, "--gunzipped")
    assert "gunzipped" in r.stderr  # the note says what will come back
    packed = tmp_path / "odd-idx3-ubyte.bbc"  # .gz dropped: it restores the plain file
    run("decompress", packed, "-m", model, "-q")
    assert (tmp_path / "odd-idx3-ubyte").read_bytes() == gzip.decompress(raw)
    r = run("compress", "-", "-m", model, "-q", "--gunzipped", "--no-fallback", input=raw)
    assert run("decompress", "-", "-c", "-m", model, "-q", input=r.stdout_bytes).stdout_bytes == gzip.decompress(raw)


# ---------------------------------------------------------------------------------- odd inputs
def idx_header(*dims):
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def npy_with_shape(shape, body=b""):
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header += " " * (63 - len(header) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + body


@pytest.mark.parametrize("raw, reason", [
    (idx_header(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + b"\0" * 64, "IDX body"),
    (idx_header(1 << 21, 1 << 21, 1 << 22) + b"\0" * 64, "IDX body"),  # 2**64: wraps to 0 in int64
    (idx_header(3, 28, 28) + b"\0" * 100, "IDX body"),
    (idx_header(0, 28, 28), "holds no images"),
    (idx_header(5, 0, 28), "holds no images"),
    (gzip.compress(idx_header(0, 28, 28), mtime=0), "holds no images"),
    (npy_with_shape((0, 28, 28)), "holds no images"),
    (npy_with_shape((2, 0, 3, 3)), "holds no images"),
    (npy_with_shape((1 << 40, 1 << 40, 1 << 40), b"\0" * 64), "shape"),
    (npy_with_shape((1 << 21, 1 << 21, 1 << 22), b""), "shape"),
    (npy_with_shape((2, -3, 4), b"\0" * 24), "npy"),
])
def test_odd_inputs_are_one_line_data_errors(tmp_path, model, raw, reason):
    with pytest.raises(DataError, match=reason) as exc:
        read_image_bytes(raw, "odd")
    assert "\n" not in str(exc.value) and "odd" in str(exc.value)
    src = tmp_path / ("odd.npy" if raw[:1] == b"\x93" else "odd-idx3-ubyte")
    src.write_bytes(raw)
    r = run("compress", src, "-m", model, ok=False)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert not Path(f"{src}.bbc").exists() and no_temp_files(tmp_path)
    if raw[:1] != b"\x93":
        from bbcodec.datasets import load_images

        with pytest.raises(DataError):
            load_images(src)


def test_parse_idx_checks_before_allocating():
    with pytest.raises(DataError, match="IDX body"):
        parse_idx(bytes([0, 0, 0x0E, 4]) + (0xFFFFFFFF).to_bytes(4, "big") * 4)
    assert parse_idx(idx_header(2, 3) + bytes(6)).shape == (2, 3)
