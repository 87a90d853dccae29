"""Write the golden files: small originals and their ``.bbc`` files, one per embedded model and mode.

Run once, with the code whose files must keep decoding, then commit ``tests/golden/``::

    python scripts/make_golden.py            # needs ../shared/data for the photo crops
    python scripts/make_golden.py --format 2 --out tests/golden/v2   # once per new container version

``tests/test_golden.py`` decodes every file in ``tests/golden/manifest.json`` and compares the
result with its original bit for bit. Never regenerate them to make that test pass: a failure
there means files users already have no longer decode.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import bbcodec
from bbcodec import api

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "bbcodec" / "samples"
PHOTO = REPO.parent / "shared" / "data" / "photos" / "valid" / "Wine_by_Jakkub_Mede.png"


def originals(out: Path) -> list[dict]:
    """Write the original files; return manifest rows (without the .bbc names yet)."""
    rows = []
    idx = gzip.decompress((SAMPLES / "mnist-test-500-idx3-ubyte.gz").read_bytes())
    n = 16
    content = idx[:4] + n.to_bytes(4, "big") + idx[8:16] + idx[16:16 + n * 784]
    (out / "mnist16-idx3-ubyte.gz").write_bytes(gzip.compress(content, compresslevel=9, mtime=0))
    rows.append({"original": "mnist16-idx3-ubyte.gz", "model": "mnist-uint8", "compare": "bytes"})
    (out / "mnist6-idx3-ubyte").write_bytes(idx[:4] + (6).to_bytes(4, "big") + idx[8:16] + idx[16:16 + 6 * 784])
    rows.append({"original": "mnist6-idx3-ubyte", "model": "mnist-uint8", "compare": "bytes", "chunk": 4,
                 "note": "plain IDX, two chunks"})
    np.save(out / "binary16.npy", np.load(SAMPLES / "mnist-test-500-binarized.npy")[:16])
    rows.append({"original": "binary16.npy", "model": "mnist-binary", "compare": "bytes"})
    cifar = (SAMPLES / "cifar10-test-20.bin").read_bytes()
    (out / "cifar6.bin").write_bytes(cifar[: 6 * 3073])
    rows.append({"original": "cifar6.bin", "model": "cifar10-rgb", "compare": "bytes"})
    (out / "digit7.png").write_bytes((SAMPLES / "digit7.png").read_bytes())
    rows.append({"original": "digit7.png", "model": "mnist-uint8", "compare": "pixels", "note": "28x28 grey PNG"})

    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    Image.fromarray(photo[400:424, 300:340]).save(out / "rgb40x24.png")
    rows.append({"original": "rgb40x24.png", "model": "cifar10-rgb", "compare": "pixels"})
    Image.fromarray(photo[500:520, 200:236]).convert("L").save(out / "grey36x20.png")
    rows.append({"original": "grey36x20.png", "model": "cifar10-rgb", "compare": "pixels", "note": "grey mode"})
    rgba = np.dstack([photo[100:120, 100:124], np.tile(np.arange(0, 240, 10, dtype=np.uint8), (20, 1))])
    Image.fromarray(rgba, "RGBA").save(out / "rgba24x20.png")
    rows.append({"original": "rgba24x20.png", "model": "cifar10-rgb", "compare": "pixels", "note": "alpha as side data"})
    Image.fromarray(photo[300:556, 200:456]).save(out / "photo256.png")
    rows.append({"original": "photo256.png", "model": "cifar10-rgb", "compare": "pixels",
                 "note": "pyramid, 128 tiles, scale maps"})
    cifar_images = torch.from_numpy(np.frombuffer(cifar[: 4 * 3073], np.uint8).reshape(4, 3073)[:, 1:]
                                    .reshape(4, 3, 32, 32).copy())
    np.save(out / "tensor4.npy", cifar_images.numpy())
    rows.append({"original": "tensor4.npy", "model": "cifar10-rgb", "compare": "tensor",
                 "note": "compress_images of an in-memory (4, 3, 32, 32) tensor"})
    return rows


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def add_file(out: Path, like: str, note: str, model: str | None = None) -> None:
    """Append to ``out``'s manifest a file coded by the current code as the row whose ``.bbc`` is
    ``like`` was (same original, model and options; ``model``: another model instead), for a
    coding change or a new model that the older file does not exercise: it keeps decoding, and the
    new file guards the new path."""
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    row = next(r for r in manifest["files"] if r["bbc"] == like)
    row = {**row, "model": model or row["model"]}
    taken = {r["bbc"] for r in manifest["files"]}
    stem = f"{row['original']}.{row['model']}" + (".fallback" if row["fallback"] else "")
    bbc = next(out / f"{stem}.{k}.bbc" for k in range(2, 1000) if f"{stem}.{k}.bbc" not in taken)
    src = out / row["original"]
    if row["compare"] == "tensor":
        bbc.write_bytes(bbcodec.compress_images(torch.from_numpy(np.load(src)), model=row["model"],
                                                fallback=row["fallback"]))
    else:
        api.compress(src, bbc, model=row["model"], force=True, fallback=row["fallback"],
                     chunk=row.get("chunk", api.DEFAULT_CHUNK))
    new = {k: v for k, v in row.items() if k not in ("bbc", "bbc_sha256", "note", "added_by")}
    manifest["files"].append({**new, "note": note, "bbc": bbc.name,
                              "bbc_sha256": hashlib.sha256(bbc.read_bytes()).hexdigest(),
                              "added_by": f"bbcodec {bbcodec.__version__}, the working tree on commit {_commit()}"})
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{bbc.name}: {bbc.stat().st_size:,} bytes")


def add_original(out: Path, src: Path, model: str, note: str) -> None:
    """Copy the picture ``src`` into ``out`` as a new original and append its ``.bbc``, coded by the
    current code with ``model``: for a coding path no earlier original exercises (a shape, say)."""
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    if any(r["original"] == src.name for r in manifest["files"]):
        raise SystemExit(f"{src.name} is already an original: use --add")
    (out / src.name).write_bytes(src.read_bytes())
    manifest["files"].append({"original": src.name, "model": model, "compare": "pixels", "fallback": False,
                              "bbc": f"{src.name}.bbc"})
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    add_file(out, f"{src.name}.bbc", note)
    manifest = json.loads(path.read_text())
    placeholder = next(r for r in manifest["files"] if r["bbc"] == f"{src.name}.bbc")
    manifest["files"].remove(placeholder)  # the row add_file copied its options from
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "golden")
    ap.add_argument("--format", type=int, default=1, help="the container version the code writes (1: before "
                    "the zlib fallback existed; 2 and later also write fallback files)")
    ap.add_argument("--add", nargs=2, metavar=("LIKE", "NOTE"),
                    help="append one file to an existing manifest instead: the original of its row whose "
                    ".bbc is LIKE, coded by the current code with that row's model and options")
    ap.add_argument("--model", help="with --add: code it with this embedded model instead of the row's")
    ap.add_argument("--add-original", nargs=3, metavar=("PICTURE", "MODEL", "NOTE"),
                    help="append a new original (a picture file, copied in) coded by the current code with MODEL")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.add_original:
        return add_original(args.out, Path(args.add_original[0]), *args.add_original[1:])
    if args.add:
        return add_file(args.out, *args.add, model=args.model)
    rows = originals(args.out)
    if args.format >= 2:  # the model's coding of each, and the zlib fallback where it wins by default
        rows = [{**r, "fallback": False} for r in rows] + [
            {**r, "fallback": True, "bbc": r["original"] + ".fallback.bbc"} for r in rows
            if r["original"] in ("rgb40x24.png", "mnist6-idx3-ubyte", "rgba24x20.png")]
    for row in rows:
        src = args.out / row["original"]
        bbc = args.out / row.get("bbc", row["original"] + ".bbc")
        extra = {"fallback": row["fallback"]} if "fallback" in row else {}
        if row["compare"] == "tensor":
            bbc.write_bytes(bbcodec.compress_images(torch.from_numpy(np.load(src)), model=row["model"], **extra))
        else:
            api.compress(src, bbc, model=row["model"], force=True, chunk=row.get("chunk", api.DEFAULT_CHUNK), **extra)
        row["bbc"] = bbc.name
        row["bbc_sha256"] = hashlib.sha256(bbc.read_bytes()).hexdigest()
        print(f"{bbc.name}: {bbc.stat().st_size:,} bytes")
    manifest = {"written_by": f"bbcodec {bbcodec.__version__} at commit {_commit()}", "format": args.format, "files": rows}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
