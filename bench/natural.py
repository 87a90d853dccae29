"""Natural-image benchmark: bbcodec against its negative ELBO, PNG, WebP lossless, JPEG 2000
lossless and JPEG-XL lossless, with encode/decode times.

* CIFAR-10 test[0:1000] (../shared/data/cifar10/test_batch_first1000.bin.gz): the whole .bbc file
  of the batch file (labels included as side data) per image dimension, and per-image codecs;
* the 24 Kodak images (../shared/data/kodak, evaluation only), each compressed on its own as a
  PNG file would be, with compress and decompress wall times per image (medians).

Every bbcodec result is a verified round trip.

    python bench/natural.py --json bench/results/natural.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from baselines import image_codecs  # noqa: E402

from bbcodec import api  # noqa: E402
from bbcodec.formats import read_image_file  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def cifar(model, limit: int) -> dict:
    src = DATA / "cifar10" / "test_batch_first1000.bin.gz"
    r = api.evaluate(src, model=model, limit=limit)
    imgs = read_image_file(src).images[:limit].numpy().transpose(0, 2, 3, 1)
    dims = imgs.size
    base = image_codecs(imgs)
    return {"bbcodec": r, "image_codecs_bits_per_dim": {k: (8 * v / dims if isinstance(v, int) else v) for k, v in base.items()}}


def grey_copies(files, folder: Path) -> list[Path]:
    """The images converted to luminance with PIL ``convert("L")``, as PNG files in ``folder``."""
    from PIL import Image

    out = []
    for path in files:
        dst = folder / path.name
        Image.open(path).convert("L").save(dst)
        out.append(dst)
    return out


def kodak(model, limit: int, repeats: int, start: int = 0, on_row=None, baselines: dict | None = None,
          grey: bool = False) -> dict:
    """Each image coded on its own, as its .bbc file would be (``api.evaluate`` builds the same
    container as ``bbcodec compress`` in memory and verifies the round trip); times are the median
    coding times over ``repeats`` runs. ``on_row(rows)`` is called after each image (partial saves).
    ``baselines`` maps image names to other codecs' figures from an earlier run of this bench (they
    are deterministic), to skip re-running them. ``grey``: the images converted to luminance."""
    files = sorted((DATA / "kodak").glob("kodim*.png"))[start: start + limit]
    if grey:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        files = grey_copies(files, Path(tmp.name))
    rows = []
    for path in files:
        runs = [api.evaluate(path, model=model) for _ in range(repeats)]
        rep = runs[0]
        f = read_image_file(path)
        dims = f.images.numel()
        img = f.images[0].numpy() if grey else f.images[0].numpy().transpose(1, 2, 0)
        if baselines and path.name in baselines:
            base = baselines[path.name]
        else:
            base = {k: (8 * v / dims if isinstance(v, int) else v) for k, v in image_codecs(img[None]).items()}
        rows.append({"image": path.name, "bits_per_dim": rep["code_length_bits_per_dim"],
                     "negative_elbo_bits_per_dim": rep["negative_elbo_bits_per_dim"],
                     "unadapted_negative_elbo_bits_per_dim": rep["unadapted_negative_elbo_bits_per_dim"],
                     "compress_seconds": statistics.median(r["encode_seconds"] for r in runs),
                     "decompress_seconds": statistics.median(r["decode_seconds"] for r in runs), **base})
        print(f"{path.name}: bbcodec {rows[-1]['bits_per_dim']:.3f} bits/dim (ELBO {rep['negative_elbo_bits_per_dim']:.3f}), "
              f"compress {rows[-1]['compress_seconds']:.1f} s, decompress {rows[-1]['decompress_seconds']:.1f} s; "
              + ", ".join(f"{k} {v:.3f}" for k, v in base.items() if isinstance(v, float)), flush=True)
        if on_row:
            on_row(rows)
    keys = [k for k in rows[0] if k not in ("image",)]
    mean = {k: float(np.mean([r[k] for r in rows if isinstance(r[k], float)])) for k in keys}
    return {"images": rows, "mean": mean}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--cifar-limit", type=int, default=1000)
    ap.add_argument("--kodak-limit", type=int, default=24)
    ap.add_argument("--kodak-start", type=int, default=0, help="skip the first N Kodak images")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--grey", action="store_true", help="Kodak converted to luminance (PIL convert('L'))")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--kodak-baselines-from", type=Path,
                    help="reuse the other codecs' Kodak figures from this earlier --json output")
    args = ap.parse_args()
    if not (DATA / "cifar10").exists():
        sys.exit(f"data not found under {DATA}")
    results = {"threads": torch.get_num_threads()}
    if args.cifar_limit:
        cifar_section(args, results)
    if args.kodak_limit:
        def partial(rows):
            results["kodak"] = {"images": rows, "partial": True}
            save(args, results)

        baselines = None
        if args.kodak_baselines_from:
            old = json.loads(args.kodak_baselines_from.read_text())["kodak"]["images"]
            own = ("image", "bits_per_dim", "negative_elbo_bits_per_dim", "unadapted_negative_elbo_bits_per_dim",
                   "compress_seconds", "decompress_seconds")
            baselines = {r["image"]: {k: v for k, v in r.items() if k not in own} for r in old}
        k = kodak(args.model, args.kodak_limit, args.repeats, args.kodak_start, on_row=partial, baselines=baselines,
                  grey=args.grey)
        results["kodak"] = k
        print(f"\n== Kodak{' (grey)' if args.grey else ''} ({len(k['images'])} images), mean bits/dim ==")
        for name, v in k["mean"].items():
            print(f"{name:28s} {v:.4f}")
        save(args, results)


def save(args, results):
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


def cifar_section(args, results):
    c = cifar(args.model, args.cifar_limit)
    results["cifar10_test_first1000"] = c
    b = c["bbcodec"]
    print(f"\n== CIFAR-10 test[0:{args.cifar_limit}] ==")
    print(f"{'bbcodec':28s} {b['code_length_bits_per_dim']:.4f} bits/dim (negative ELBO {b['negative_elbo_bits_per_dim']:.4f}, "
          f"{100 * b['code_length_over_elbo']:+.2f}%; encode {b['encode_images_per_s']:.1f} img/s, decode {b['decode_images_per_s']:.1f} img/s)")
    for k, v in c["image_codecs_bits_per_dim"].items():
        print(f"{k:28s} {v:.4f} bits/dim" if isinstance(v, float) else f"{k:28s} {v}")
    save(args, results)


if __name__ == "__main__":
    main()
