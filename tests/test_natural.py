"""Colour images with the hierarchical VAE: tiles, padding and cropping, grey and alpha rules."""
import gzip

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from bbcodec import api
from bbcodec.cli import main
from bbcodec.image_codec import CodingParams, HierarchicalVAECodec

from helpers import save_tiny_colour, tiny_colour_model


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return save_tiny_colour(tmp_path_factory.mktemp("m") / "tinyrgb", seed=3)


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.parametrize("grey", [False, True])
def test_hierarchical_codec_roundtrip(grey):
    model = tiny_colour_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (13, 3, 8, 8), generator=g, dtype=torch.uint8)
    if grey:
        x = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    codec = HierarchicalVAECodec(model, CodingParams(batch=4, lanes_per_image=16, initial_lanes=8, bits_per_image=800), grey=grey)
    data, _ = codec.encode(x)
    assert torch.equal(codec.decode(data, len(x)), x)


@pytest.mark.parametrize("mode, size", [("RGB", (13, 9)), ("L", (10, 7)), ("RGBA", (8, 8)), ("LA", (5, 12))])
def test_pictures_any_size_and_mode(tmp_path, colour_model, mode, size):
    rng = np.random.default_rng(4)
    ch = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], ch), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if ch == 1 else arr, mode)
    src = tmp_path / "pic.png"
    im.save(src)
    run("compress", src, "-m", colour_model, "-q")
    out = tmp_path / "back.png"
    run("decompress", str(src) + ".bbc", "-o", out, "-m", colour_model, "-q")
    back = Image.open(out)
    assert back.mode == mode and back.size == size
    assert np.array_equal(np.asarray(back), np.asarray(Image.open(src)))


def test_ppm(tmp_path, colour_model):
    arr = np.random.default_rng(5).integers(0, 256, (6, 11, 3), dtype=np.uint8)
    src = tmp_path / "p.ppm"
    Image.fromarray(arr, "RGB").save(src)
    run("compress", src, "-m", colour_model, "-q")
    run("decompress", str(src) + ".bbc", "-o", tmp_path / "q.ppm", "-m", colour_model, "-q")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "q.ppm")), arr)


def test_cifar_batch_file_byte_identical(tmp_path, colour_model):
    rng = np.random.default_rng(6)
    rec = np.concatenate([rng.integers(0, 10, (5, 1)), rng.integers(0, 256, (5, 3072))], 1).astype(np.uint8)
    src = tmp_path / "batch.bin.gz"
    src.write_bytes(gzip.compress(rec.tobytes(), compresslevel=9, mtime=0))
    # the tiny model codes 8x8 tiles: a 32x32 image is 16 tiles
    run("compress", src, "-m", colour_model, "-q", "--chunk", "50")
    run("decompress", str(src) + ".bbc", "-o", tmp_path / "b.bin.gz", "-m", colour_model, "-q")
    assert (tmp_path / "b.bin.gz").read_bytes() == src.read_bytes()


def test_tiles_roundtrip_layout(colour_model):
    from bbcodec.zoo import load_model

    loaded = load_model(colour_model)
    for shape in [(2, 3, 17, 9), (1, 20, 5)]:
        x = torch.randint(0, 256, shape, dtype=torch.uint8)
        layout = api.Layout(loaded, shape)
        units = layout.to_units(x)
        assert units.shape[1:] == (3, 8, 8)
        assert torch.equal(layout.from_units(units), x)
