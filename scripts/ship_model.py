"""Ship a trained model in the package: copy its weights and config into bbcodec/zoo/NAME.*,
measure it on the test data with the coding-time (exact) networks by a full compress/decompress
round trip, record the results and coding defaults in its metadata, and write its model card.

    python scripts/ship_model.py runs/mnist-uint8 mnist-uint8 --test ../shared/data/mnist/t10k-images-idx3-ubyte.gz
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bbcodec import api  # noqa: E402
from bbcodec.datasets import binarize, load_images  # noqa: E402
from bbcodec.zoo import ZOO_DIR, file_sha256  # noqa: E402

CARD = """# Model card: `{name}`

| | |
|---|---|
| architecture | `{arch}` ({params:,} parameters; weights {size_mb:.1f} MB, safetensors) |
| data | {dataset} |
| training command | `{command}` |
| training time | {hours:.2f} h on {hardware} |
| training notes | {note} |
| test data | {test_desc} |
| **test negative ELBO** | **{elbo:.4f} bits/dim** (coding-time exact networks; KL {kl:.4f}) |
| **test code length** | **{code:.4f} bits/dim**, whole file, {over:+.2f}% vs negative ELBO |
| weights SHA-256 | `{sha}` |

Configuration: `{config}`

Coding defaults: `{coding}`

Measured by `python scripts/ship_model.py` with a full, verified compress/decompress round trip
({threads} threads): encode {enc:,.0f} and decode {dec:,.0f} units/s.

Training history (test figures use float32 training-time networks):

| epoch | train bits/dim | test bits/dim | seconds |
|---|---|---|---|
{history}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stem", type=Path, help="trained model path stem (STEM.safetensors + STEM.json)")
    ap.add_argument("name")
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--test-desc", default="")
    ap.add_argument("--binarize", action="store_true", help="binarise the test images (seed 0) first")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--coding", default="{}", help="JSON of coding defaults to record")
    args = ap.parse_args()
    dst = ZOO_DIR / args.name
    ZOO_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.stem.with_suffix(".safetensors"), dst.with_suffix(".safetensors"))
    doc = json.loads(args.stem.with_suffix(".json").read_text())
    doc["meta"]["coding"] = json.loads(args.coding)
    dst.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")

    test = args.test
    if args.binarize:
        import numpy as np

        images = binarize(load_images(args.test))
        test = Path("/tmp") / f"{args.name}-test-binarized.npy"
        np.save(test, images.numpy())
    report = api.evaluate(test, model=str(dst), limit=args.limit or None)
    meta = doc["meta"]
    meta.update({"test_bits_per_dim": report["code_length_bits_per_dim"],
                 "test_negative_elbo_bits_per_dim": report["negative_elbo_bits_per_dim"],
                 "test_data": args.test_desc or str(args.test), "test_images": report["images"]})
    dst.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    from bbcodec.zoo import load_model

    loaded = load_model(args.name)
    history = "\n".join(f"| {h['epoch']} | {h['train_bits_per_dim']:.4f} | {h.get('test_bits_per_dim', float('nan')):.4f} | {h['seconds']:.0f} |"
                        for h in meta.get("history", []))
    card = CARD.format(
        name=args.name, arch=doc["config"]["arch"], params=sum(p.numel() for p in loaded.model.parameters()),
        size_mb=dst.with_suffix(".safetensors").stat().st_size / 1e6, dataset=meta.get("dataset", "?"),
        command=meta.get("training_command", "?"), hours=meta.get("training_seconds", 0) / 3600,
        hardware=meta.get("hardware", "?"), note=meta.get("training_note", "-"), test_desc=args.test_desc or str(args.test),
        elbo=report["negative_elbo_bits_per_dim"], kl=report["kl_bits_per_dim"], code=report["code_length_bits_per_dim"],
        over=100 * report["code_length_over_elbo"], sha=file_sha256(dst.with_suffix(".safetensors")),
        config=json.dumps(doc["config"]), coding=json.dumps(report["coding"]), threads=torch.get_num_threads(),
        enc=report["encode_images_per_s"], dec=report["decode_images_per_s"], history=history)
    dst.with_suffix(".md").write_text(card)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
