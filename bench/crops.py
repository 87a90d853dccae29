"""Size table over image sizes: centre crops of Kodak images (64, 128, 256 pixels square, and the
full image), each compressed as its own PNG file would be, bbcodec (default model, whole .bbc
file, verified round trip) against PNG, WebP lossless and JPEG-XL lossless. Mean bits/dim per size.

    python bench/crops.py --images 6 --json bench/results/crops.json
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from baselines import image_codecs  # noqa: E402

from bbcodec import api  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "kodak"
SIZES = (64, 128, 256, 0)  # 0: the full image


def crop(img: np.ndarray, size: int) -> np.ndarray:
    if not size:
        return img
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top: top + size, left: left + size])


def bbcodec_bits(arr: np.ndarray) -> tuple[float, str]:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    data, summary = api.compress_data(buf.getvalue(), "x.png")
    restored, _ = api.decompress_data(data)
    if not np.array_equal(np.asarray(Image.open(io.BytesIO(restored))), arr):
        raise AssertionError("bbcodec round trip failed")
    return 8 * len(data) / arr.size, summary["method"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not KODAK.exists():
        sys.exit(f"skipped: {KODAK} is absent")
    rows = []
    for path in sorted(KODAK.glob("kodim*.png"))[: args.images]:
        img = np.asarray(Image.open(path).convert("RGB"))
        for size in SIZES:
            arr = crop(img, size)
            bits, method = bbcodec_bits(arr)
            base = {k: 8 * v / arr.size for k, v in image_codecs(arr[None]).items()}
            rows.append({"image": path.name, "size": size or "full", "bbcodec": bits, "method": method, **base})
            print(f"{path.name} {size or 'full'}: bbcodec {bits:.3f} ({method}), "
                  + ", ".join(f"{k} {v:.3f}" for k, v in base.items()), flush=True)
    table = {}
    for size in SIZES:
        part = [r for r in rows if r["size"] == (size or "full")]
        table[str(size or "full")] = {k: statistics.mean(r[k] for r in part) for k in part[0] if isinstance(part[0][k], float)}
        table[str(size or "full")]["above_png"] = sum(r["bbcodec"] > r["PNG (optimize)"] for r in part)
    print("\n| size | bbcodec | PNG | WebP lossless | JPEG-XL e9 | bbcodec above PNG |\n|---|---|---|---|---|---|")
    for size, t in table.items():
        print(f"| {size} | {t['bbcodec']:.3f} | {t['PNG (optimize)']:.3f} | {t['WebP lossless (m6, q100)']:.3f} | "
              f"{t.get('JPEG-XL lossless (e9)', float('nan')):.3f} | {t['above_png']} of {args.images} |")
    if args.json:
        args.json.write_text(json.dumps({"images": args.images, "rows": rows, "mean": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
