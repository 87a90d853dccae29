"""Golden files: ``.bbc`` files written by earlier versions decode to their originals, bit for bit.

The files were written by ``scripts/make_golden.py`` at the commit named in the manifest, before
the container or coding changed. A failure here means files users already have no longer decode:
fix the decoder, never the files.
"""
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bbcodec
from bbcodec import api

GOLDEN = Path(__file__).resolve().parent / "golden"
ROWS = [{**row, "dir": manifest.parent}
        for manifest in sorted(GOLDEN.glob("**/manifest.json"))
        for row in json.loads(manifest.read_text())["files"]]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['dir'].name}/{r['bbc']}" for r in ROWS])
def test_golden_file_decodes_exactly(tmp_path, row):
    bbc = row["dir"] / row["bbc"]
    original = row["dir"] / row["original"]
    assert hashlib.sha256(bbc.read_bytes()).hexdigest() == row["bbc_sha256"], "the golden file itself changed"
    if row["compare"] == "tensor":
        images = bbcodec.decompress_images(bbc.read_bytes())
        assert torch.equal(images, torch.from_numpy(np.load(original)))
        return
    out = tmp_path / row["original"]
    api.decompress(bbc, out)
    if row["compare"] == "bytes":
        assert out.read_bytes() == original.read_bytes()
    else:
        from PIL import Image

        with Image.open(original) as a, Image.open(out) as b:
            assert (a.mode, a.size) == (b.mode, b.size)
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_golden_files_cover_every_embedded_model_and_container_version():
    from bbcodec.container import READS
    from bbcodec.zoo import embedded_models

    assert set(embedded_models()) <= {r["model"] for r in ROWS}
    versions = {(r["dir"] / r["bbc"]).read_bytes()[3] for r in ROWS}
    assert versions == set(READS)


# written by the current container format; where a coding change added a newer file for the same
# original, model and options, only the newest is the current encoder's output (older ones decode)
_LATEST = {(r["original"], r["model"], r["fallback"], r.get("chunk")): r for r in ROWS if r["dir"].name == "v2"}
CURRENT = list(_LATEST.values())


@pytest.mark.parametrize("row", CURRENT, ids=[r["bbc"] for r in CURRENT])
def test_encoder_still_writes_the_golden_bytes(row):
    """The encoder reproduces the current-format golden files byte for byte: speed work (compiled
    kernels, other convolution algorithms, fused loops) must not change a single integer."""
    original = row["dir"] / row["original"]
    if row["compare"] == "tensor":
        data = api.compress_images(torch.from_numpy(np.load(original)), model=row["model"], fallback=row["fallback"])
    else:
        data, _ = api.compress_data(original.read_bytes(), name=original.name, model=row["model"],
                                    fallback=row["fallback"], chunk=row.get("chunk", api.DEFAULT_CHUNK))
    assert hashlib.sha256(data).hexdigest() == row["bbc_sha256"]
