"""Input files are read and restored exactly; bad files are refused with a clear reason."""
import gzip
import io
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from bbcodec.datasets import DataError
from bbcodec.formats import check_restorable, read_image_file, restored_sha, write_image_file

from helpers import SAMPLE_IDX


def restore(path):
    f = read_image_file(path)
    check_restorable(f)
    return f, write_image_file(f)


def test_idx_gzip_and_plain(tmp_path):
    f, data = restore(SAMPLE_IDX)
    assert f.kind == "idx" and tuple(f.images.shape) == (500, 28, 28)
    assert data == SAMPLE_IDX.read_bytes()
    plain = tmp_path / "plain-idx3-ubyte"
    plain.write_bytes(gzip.decompress(SAMPLE_IDX.read_bytes()))
    assert restore(plain)[1] == plain.read_bytes()


def test_gzip_file_writer_gives_the_bytes_whatever_the_runs_of_images(tmp_path):
    from bbcodec.formats import GzipFileWriter, read_image_bytes

    rng = np.random.default_rng(3)
    content = gzip.decompress(SAMPLE_IDX.read_bytes())
    records = np.concatenate([rng.integers(0, 10, (40, 1)), rng.integers(0, 256, (40, 3072))], 1).astype(np.uint8)
    for raw, name in ((SAMPLE_IDX.read_bytes(), "x-idx3-ubyte.gz"),
                      (gzip.compress(content, compresslevel=4, mtime=0), "x-idx3-ubyte.gz"),
                      (gzip.compress(records.tobytes(), compresslevel=9, mtime=0), "x.bin.gz")):
        f = read_image_bytes(raw, name)
        cuts = sorted({0, len(f.images), *rng.integers(0, len(f.images), 5).tolist()})
        writer = GzipFileWriter(f.kind, f.images.shape, f.restore, f.side_data)
        for a, b in zip(cuts, cuts[1:]):
            writer.feed(f.images[a:b].reshape(b - a, -1) if a % 2 else f.images[a:b])  # flat or not
        assert writer.finish() == raw == write_image_file(f)
        short = GzipFileWriter(f.kind, f.images.shape, f.restore, f.side_data)
        short.feed(f.images[:3])
        with pytest.raises(ValueError, match="3 of the file's"):
            short.finish()
        with pytest.raises(ValueError, match="more images"):
            short.feed(f.images)
        short.close()  # after finish: harmless


def test_gzip_not_from_zlib_is_refused(tmp_path):
    content = gzip.decompress(SAMPLE_IDX.read_bytes())[: 16 + 784 * 4]
    content = content[:4] + (4).to_bytes(4, "big") + content[8:]
    # two gzip members: valid gzip, but no single zlib deflate stream reproduces it
    raw = gzip.compress(content[:100], mtime=0) + gzip.compress(content[100:], mtime=0)
    path = tmp_path / "two-members-idx3-ubyte.gz"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="cannot be restored byte for byte"):
        read_image_file(path)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", [(7, 28, 28), (3, 5, 6, 3)])
def test_npy_byte_identical(tmp_path, order, shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "a.npy"
    np.save(path, np.asfortranarray(a) if order == "F" else a)
    f, data = restore(path)
    assert data == path.read_bytes()
    if len(shape) == 4:
        assert torch.equal(f.images, torch.from_numpy(a.transpose(0, 3, 1, 2).copy()))


@pytest.mark.parametrize("mode", ["L", "1", "RGB", "RGBA", "LA"])
def test_png_pixels_size_and_mode(tmp_path, mode):
    rng = np.random.default_rng(1)
    channels = {"L": 1, "1": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    arr = rng.integers(0, 256, (13, 17, channels), dtype=np.uint8)
    if mode == "1":
        im = Image.fromarray(arr[..., 0]).convert("1")
    else:
        im = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    path = tmp_path / "x.png"
    im.save(path)
    f, data = restore(path)
    back = Image.open(io.BytesIO(data))
    assert back.mode == im.mode and back.size == im.size
    assert np.array_equal(np.asarray(back), np.asarray(Image.open(path)))
    assert restored_sha("png", data) == f.sha256
    # the check's quicker PNG (not deflated) holds the same pixels as the one written
    stored = write_image_file(f, stored=True)
    assert stored != data and restored_sha("png", stored) == f.sha256


def test_cifar_batch(tmp_path):
    rng = np.random.default_rng(2)
    rec = np.concatenate([rng.integers(0, 10, (6, 1)), rng.integers(0, 256, (6, 3072))], 1).astype(np.uint8)
    path = tmp_path / "data_batch_x.bin"
    path.write_bytes(rec.tobytes())
    f, data = restore(path)
    assert f.kind == "cifar" and tuple(f.images.shape) == (6, 3, 32, 32) and data == path.read_bytes()
    gz = tmp_path / "data_batch_x.bin.gz"
    gz.write_bytes(gzip.compress(rec.tobytes(), compresslevel=9, mtime=0))
    assert restore(gz)[1] == gz.read_bytes()


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"hello world, not an image", "unsupported"),
    (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100, "IDX body"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "PNG"),
    (b"\x93NUMPY\x01\x00" + b"garbage", ".npy"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 10, "gzip"),
])
def test_bad_inputs_raise_clear_errors(tmp_path, content, reason):
    path = tmp_path / "bad.bin.x"
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        read_image_file(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_wrong_npy_dtype_and_shape(tmp_path):
    for arr in (np.zeros((3, 4, 4), np.float32), np.zeros((3, 4), np.uint8), np.zeros((2, 4, 4, 2), np.uint8)):
        path = tmp_path / "w.npy"
        np.save(path, arr)
        with pytest.raises(DataError):
            read_image_file(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError):
        read_image_file(tmp_path / "nope.idx")
    with pytest.raises(DataError):
        read_image_file(tmp_path)


def test_a_file_that_cannot_be_restored_is_refused_after_coding(tmp_path, monkeypatch):
    """The restorability check runs alongside the model; its refusal still wins and writes nothing."""
    from bbcodec import api

    def refuse(f):
        raise DataError("this file cannot be restored exactly from its pixels (unusual layout); not compressed")

    monkeypatch.setattr(api, "check_restorable", refuse)
    src = tmp_path / "d-idx3-ubyte"
    src.write_bytes(gzip.decompress(SAMPLE_IDX.read_bytes()))
    with pytest.raises(DataError, match="cannot be restored exactly"):
        api.compress(src, tmp_path / "d.bbc")
    assert not (tmp_path / "d.bbc").exists()
