"""Edge tiles against whole tiles: file sizes of photographs whose shape whole tiles pad, or tile
otherwise (``edge_tiles`` in :mod:`bbcodec.coding_params`, :class:`bbcodec.tiling.Level`).

Whole tiles pad an image up to a multiple of its tile, so a 1280x800 photograph (800 = 6 x 128 + 32)
gets 32x32 tiles, which lose context at their many borders, or 128x128 tiles over 896 padded rows.
Edge tiles pad it to a multiple of the model's patch only, and cut the rows and columns that do not
fill a 128x128 tile into smaller tiles. Every validation photograph and every fourth training one
(``photos/``), as it is and as its top left 768x512 crop (a shape whole tiles fit, where only the
smaller pyramid levels differ), colour and grey: each compressed both ways (the edge file decoded
and compared). Kodak is never used here (evaluation only).

    python bench/edge_tiles.py --json bench/results/edge_tiles.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bbcodec import api, threads  # noqa: E402
from bbcodec.container import Container  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def images(limit: int | None, grey_too: bool):
    files = sorted((PHOTOS / "valid").glob("*.png")) + sorted((PHOTOS / "train").glob("*.png"))[1::4]
    for f in files[:limit]:
        img = np.array(Image.open(f).convert("RGB"))
        crop = (img if img.shape[0] <= img.shape[1] else img.transpose(1, 0, 2))[:512, :768]
        views = [(f.stem, img)] + ([(f.stem + " 768x512", crop)] if crop.shape[:2] == (512, 768) else [])
        for name, arr in views:
            yield name, np.ascontiguousarray(arr.transpose(2, 0, 1))
            if grey_too:
                yield name + " (grey)", np.array(Image.fromarray(arr).convert("L"))


def summarise(rows: list[dict]) -> dict:
    changes = [r["change"] for r in rows]
    summary = {"images": len(rows), "mean_change": statistics.fmean(changes) if rows else None,
               "median_change": statistics.median(changes) if rows else None,
               "smaller": sum(c < 0 for c in changes)}
    for label, keep in (("full photographs", lambda r: "768x512" not in r["image"]),
                        ("768x512 crops", lambda r: "768x512" in r["image"])):
        part = [r["change"] for r in rows if keep(r)]
        if part:
            summary[label] = {"images": len(part), "mean_change": statistics.fmean(part),
                              "range": [min(part), max(part)]}
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos")
    ap.add_argument("--colour-only", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"skipped: {PHOTOS} not found")
    threads.configure(2)
    rows = []
    for name, pixels in images(args.limit, not args.colour_only):
        x = torch.from_numpy(pixels)[None]
        t0 = time.perf_counter()
        chosen = api.compress_images(x, fallback=False)
        seconds = time.perf_counter() - t0
        edge = bool(Container.from_bytes(chosen).coding.get("edge_tiles", False))
        if not edge:
            print(f"{name:44s} {'x'.join(map(str, pixels.shape[-2:][::-1]))}: whole tiles already fit", flush=True)
            continue
        if not torch.equal(api.decompress_images(chosen).reshape(x.shape), x):
            sys.exit(f"{name}: edge-tile file does not decode to the image")
        whole = api.compress_images(x, coding={"edge_tiles": False}, fallback=False)
        dims = pixels.size
        row = {"image": name, "size": list(pixels.shape[-2:][::-1]), "bytes_whole": len(whole),
               "bytes_edge": len(chosen), "bpd_whole": 8 * len(whole) / dims, "bpd_edge": 8 * len(chosen) / dims,
               "change": len(chosen) / len(whole) - 1, "compress_s": seconds}
        rows.append(row)
        print(f"{name:44s} {row['size'][0]}x{row['size'][1]}: {row['bpd_whole']:.4f} -> {row['bpd_edge']:.4f} "
              f"bits/dim ({100 * row['change']:+.2f}%)", flush=True)
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"command": "python bench/edge_tiles.py" + (" --colour-only" if args.colour_only else ""),
                                         "summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
