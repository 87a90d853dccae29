"""Starved rows of full-size tiles: what cutting them smaller (the encoder's re-lead,
``bbcodec.layout.Layout.encode_chunk``) does to the file size, by how starved the row was.

On 768x512 crops (the top left, landscape) of the training photographs (``photos/``: every
validation photo and every fourth training one), grey and colour, each as it is and with a smooth
synthetic sky over its top 160 rows: every image is compressed as the encoder does (re-leading
where a row of full-size tiles starves) and with the lead the estimates choose (asked for, so
never re-led); the table lists the starved images, how many of their row's six tiles the plan
would have coded without bits-back at each re-lead, and the bytes of both. Kodak is never used
here (evaluation only).

    python bench/lead_rows.py --json bench/results/lead_rows.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bbcodec import api, layout, threads  # noqa: E402
from bbcodec.container import Container  # noqa: E402
from bbcodec.segments import Starved  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"
SKY_ROWS = 160


def crops(limit: int | None):
    files = sorted((PHOTOS / "valid").glob("*.png")) + sorted((PHOTOS / "train").glob("*.png"))[1::4]
    rng = np.random.default_rng(0)
    for f in files[:limit]:
        img = np.array(Image.open(f).convert("RGB"))
        if img.shape[0] > img.shape[1]:
            img = img.transpose(1, 0, 2)
        img = img[:512, :768]
        if img.shape[:2] != (512, 768):
            continue
        sky = img.astype(np.float64)
        top = np.linspace(0, 1, SKY_ROWS)[:, None, None]
        sky[:SKY_ROWS] = (np.array([90, 140, 210]) * (1 - 0.3 * top) + np.array([200, 210, 230]) * 0.3 * top
                          + rng.normal(0, 0.5, (SKY_ROWS, 768, 3)))
        for name, arr in ((f.stem, img), (f.stem + " + sky", np.clip(np.round(sky), 0, 255).astype(np.uint8))):
            yield name + " (grey)", np.array(Image.fromarray(arr).convert("L"))
            yield name, np.ascontiguousarray(arr.transpose(2, 0, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"skipped: {PHOTOS} not found")
    threads.configure(2)
    starved_units = []
    encode = layout.encode_segments

    def recording(*a, **k):  # the plain units of each starvation that re-leads
        try:
            return encode(*a, **k)
        except Starved as exc:
            starved_units.append(exc.units)
            raise

    layout.encode_segments = recording
    rows = []
    for name, pixels in crops(args.limit):
        x = torch.from_numpy(pixels)[None]
        chosen = layout.Layout(api.choose_model(x, "uint8"), x.shape, {}).params.lead_tiles
        starved_units.clear()
        data = api.compress_images(x, fallback=False)
        if not starved_units:
            continue
        assert torch.equal(api.decompress_images(data), x)
        kept = len(api.compress_images(x, coding={"lead_tiles": chosen or []}, fallback=False))
        row = {"image": name, "plain_units": list(starved_units), "chosen_lead": chosen,
               "lead": Container.from_bytes(data).coding["lead_tiles"], "bytes_kept": kept,
               "bytes_releaded": len(data), "change": len(data) / kept - 1}
        rows.append(row)
        print(f"{name}: plain {starved_units} of a row of 6, {kept:,} -> {len(data):,} bytes "
              f"({100 * row['change']:+.2f}%)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
