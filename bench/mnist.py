"""MNIST benchmark: bbcodec against its model's negative ELBO and standard lossless codecs.

On the MNIST test set (../shared/data/mnist) in 8-bit and binarised form (binarised as
``np.random.RandomState(0).random_sample(x.shape) < x / 255``, the test images in order):

* bbcodec's code length (the whole .bbc file), the model's negative ELBO, the overhead itemised,
  encode/decode images/s (round trip verified);
* gzip, bz2, xz, zstd on the same file's raw bytes, and PNG, WebP lossless, JPEG-XL lossless,
  JPEG 2000 per image;
* the rate/speed trade-off of the lane count (``--tradeoff``);
* a PNG plot of bits/dim against the number of images compressed (start-up cost amortising).

    python bench/mnist.py --json bench/results/mnist.json --plot bench/results/mnist_amortisation.png
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from baselines import general_purpose, image_codecs  # noqa: E402

from bbcodec import api  # noqa: E402
from bbcodec.datasets import binarize, load_images  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def write_variant(images: np.ndarray, path: Path) -> Path:
    """An uncompressed IDX file of the images (what the general-purpose codecs get)."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, n, h, w) + images.tobytes())
    return path


def measure_bbcodec(path: Path, model, repeats: int, coding=None) -> dict:
    runs = [api.evaluate(path, model=model, coding=coding) for _ in range(repeats)]
    r = runs[0]
    r["encode_images_per_s"] = statistics.median(x["encode_images_per_s"] for x in runs)
    r["decode_images_per_s"] = statistics.median(x["decode_images_per_s"] for x in runs)
    r["repeats"] = repeats
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (medians reported)")
    ap.add_argument("--model-uint8", default=None)
    ap.add_argument("--model-binary", default=None)
    ap.add_argument("--tradeoff", action="store_true", help="also sweep lanes per image and batch size")
    ap.add_argument("--tradeoff-limit", type=int, default=2000, help="images used by the trade-off sweep")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"MNIST test data not found at {args.data}")
    images = load_images(args.data)[: args.limit]
    variants = {"uint8": images, "binary": binarize(load_images(args.data))[: args.limit]}
    models = {"uint8": args.model_uint8, "binary": args.model_binary}
    results = {"images": len(images), "threads": torch.get_num_threads(), "variants": {}}
    tmp = Path(tempfile.mkdtemp())
    for name, imgs in variants.items():
        arr = imgs.numpy()
        dims = arr.size
        path = write_variant(arr, tmp / f"mnist-{name}-idx3-ubyte")
        raw = path.read_bytes()
        xz_start = time.perf_counter()
        general = general_purpose(raw)
        xz_seconds = time.perf_counter() - xz_start
        per_image = image_codecs(arr if name == "uint8" else arr * 255)
        ours = measure_bbcodec(path, models[name], args.repeats)
        row = {"bbcodec": ours, "general_purpose_bits_per_dim": {k: 8 * v / dims for k, v in general.items()},
               "image_codecs_bits_per_dim": {k: (8 * v / dims if isinstance(v, int) else v) for k, v in per_image.items()},
               "general_purpose_seconds_all": xz_seconds}
        # compress + decompress time of bbcodec vs xz -9e on the same file
        import lzma

        t = time.perf_counter()
        blob = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
        lzma.decompress(blob)
        row["xz_roundtrip_seconds"] = time.perf_counter() - t
        row["bbcodec_roundtrip_seconds"] = ours["encode_seconds"] + ours["decode_seconds"]
        if args.tradeoff:
            sweep = []
            subset = write_variant(arr[: args.tradeoff_limit], tmp / f"mnist-{name}-subset")
            for batch, lpi in ((16, 49), (64, 49), (64, 98), (64, 196), (128, 196)):
                if name == "binary":
                    lpi = max(1, lpi // 7)
                r = api.evaluate(subset, model=models[name], coding={"batch": batch, "lanes_per_image": lpi})
                sweep.append({"images": len(arr[: args.tradeoff_limit]), "batch": batch, "lanes_per_image": lpi, "bits_per_dim": r["code_length_bits_per_dim"],
                              "over_elbo": r["code_length_over_elbo"], "encode_images_per_s": r["encode_images_per_s"],
                              "decode_images_per_s": r["decode_images_per_s"]})
                print(f"  tradeoff {name} batch={batch} lanes/image={lpi}: {sweep[-1]}", flush=True)
            row["tradeoff"] = sweep
        results["variants"][name] = row
        print(f"\n== MNIST test ({len(arr)} images, {name}) ==")
        print(f"{'bbcodec':28s} {ours['code_length_bits_per_dim']:.4f} bits/dim  (negative ELBO {ours['negative_elbo_bits_per_dim']:.4f}, "
              f"{100 * ours['code_length_over_elbo']:+.2f}%; encode {ours['encode_images_per_s']:,.0f} img/s, decode {ours['decode_images_per_s']:,.0f} img/s)")
        for k, v in {**row["general_purpose_bits_per_dim"], **row["image_codecs_bits_per_dim"]}.items():
            print(f"{k:28s} {v:.4f} bits/dim" if isinstance(v, float) else f"{k:28s} {v}")
        print(f"round trip: bbcodec {row['bbcodec_roundtrip_seconds']:.1f} s, xz -9e {row['xz_roundtrip_seconds']:.1f} s", flush=True)
    if args.plot:
        counts = [n for n in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if n <= len(images)]
        curve = {}
        for name, imgs in variants.items():
            pts = []
            for n in counts:
                data = api.compress_images(imgs[:n], model=models[name])
                pts.append(8 * len(data) / (n * 784))
            curve[name] = pts
        results["amortisation"] = {"images": counts, "bits_per_dim": curve}
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, name in zip(axes, ("uint8", "binary")):
            ax.plot(counts, curve[name], "o-", label="bbcodec (whole file)")
            elbo = results["variants"][name]["bbcodec"]["negative_elbo_bits_per_dim"]
            ax.axhline(elbo, color="k", ls="--", label=f"negative ELBO ({elbo:.3f})")
            xz = results["variants"][name]["general_purpose_bits_per_dim"]["xz -9e"]
            ax.axhline(xz, color="r", ls=":", label=f"xz -9e on all {len(images)} ({xz:.3f})")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("images compressed")
            ax.set_ylabel("bits/dim")
            ax.set_title(f"MNIST test, {name}")
            ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
