"""Speed benchmark: the issue's targets, each against a reference timed in the same run.

* MNIST 8-bit test set (IDX, 10,000 images): ``bbcodec compress`` and ``decompress`` wall times
  (the CLI, start-up included) against ``xz -9e -T1`` on the same file (``--uint8-models``: other
  models too, alternating), and the round trip of the gzipped file as distributed;
* binarised MNIST test set and CIFAR-10 test[0:1000]: images/s each way (``api.evaluate``, round
  trip verified) and bits/dim (``--binary-models``: other models on binarised MNIST, alternating);
* kodim23 (768x512): CLI compress and decompress against ``cjxl -q 100 -e 7`` / ``djxl``;
* ``--only kodak24``: the kodim23 comparison on every Kodak image (``--kodak24-repeats`` runs each);
* under load: two identical CLI round trips of 2,000 MNIST digits started together, against one
  alone.

Every figure is the median of ``--repeats`` runs, with bbcodec's default threads unless
``--threads`` is given (the in-process parts too). Run on a quiet machine (nothing else running).

    python bench/speed.py --json bench/results/speed.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def wall(cmd, repeats: int, env=None) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "bbcodec.cli", *map(str, args)]


def same_file(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def mnist_vs_xz(tmp: Path, repeats: int, threads: int, models: list[str] | None = None) -> dict:
    """The CLI round trip of the MNIST 8-bit test set against ``xz -9e``. ``models``: also these
    models (``--model NAME``), each repeat running every model in turn, so that a slow minute falls
    on all alike (``models[NAME]`` entries)."""
    raw = tmp / "t10k-images-idx3-ubyte"
    raw.write_bytes(gzip.decompress((DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()))
    t = [] if threads is None else ["--threads", threads]
    names = [None] + list(models or [])
    times = {name: ([], []) for name in names}
    for _ in range(repeats):
        for k, name in enumerate(names):
            bbc, out = tmp / f"t10k.{k}.bbc", tmp / f"t10k.{k}.out"
            pick = [] if name is None else ["--model", name]
            times[name][0].append(wall(cli(*t, "compress", "-f", *pick, raw, "-o", bbc), 1))
            times[name][1].append(wall(cli(*t, "decompress", "-f", *pick, bbc, "-o", out), 1))
            assert same_file(raw, out)
    xz_c = wall(["sh", "-c", f"xz -9e -T1 -k -c {raw} > {tmp / 't.xz'}"], repeats)
    xz_d = wall(["sh", "-c", f"xz -d -c {tmp / 't.xz'} > /dev/null"], repeats)
    n = 10000
    dims = n * 28 * 28

    def entry(k, name):
        comp, decomp = (statistics.median(v) for v in times[name])
        size = (tmp / f"t10k.{k}.bbc").stat().st_size
        return {"bbcodec_compress_s": comp, "bbcodec_decompress_s": decomp, "bbcodec_bytes": size,
                "bbcodec_bits_per_dim": 8 * size / dims, "bbcodec_images_per_s": [n / comp, n / decomp],
                "round_trip_ratio_vs_xz": (comp + decomp) / (xz_c + xz_d)}

    out = entry(0, None)
    out.update({"xz_compress_s": xz_c, "xz_decompress_s": xz_d, "xz_bytes": (tmp / "t.xz").stat().st_size,
                "xz_bits_per_dim": 8 * (tmp / "t.xz").stat().st_size / dims})
    out["gzipped_file"] = gzipped_round_trip(tmp, repeats, t)
    if models:
        out["models"] = {name: entry(k, name) for k, name in enumerate(names) if name is not None}
    return out


def gzipped_round_trip(tmp: Path, repeats: int, threads: list) -> dict:
    """The same round trip of the file as distributed, ``t10k-images-idx3-ubyte.gz``, restored byte
    for byte: the gzip wrapper's zlib check and its deflate again on decompression (level 9) are
    part of it."""
    src = DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
    bbc, out = tmp / "t10k.gz.bbc", tmp / "t10k.restored.gz"
    comp = wall(cli(*threads, "compress", "-f", src, "-o", bbc), repeats)
    decomp = wall(cli(*threads, "decompress", "-f", bbc, "-o", out), repeats)
    assert same_file(src, out)
    size = bbc.stat().st_size
    return {"bbcodec_compress_s": comp, "bbcodec_decompress_s": decomp, "bbcodec_bytes": size,
            "bbcodec_bits_per_dim": 8 * size / (10000 * 28 * 28)}


def api_rates(repeats: int, binary_models: list[str] | None = None) -> dict:
    """In-process rates (``api.evaluate``). ``binary_models``: time these models on binarised MNIST
    too, their runs alternating with the default model's (``mnist_binary[NAME]`` entries)."""
    import numpy as np

    from bbcodec import api
    from bbcodec.datasets import binarize, load_images

    out = {}
    tmp = Path(tempfile.mkdtemp())
    np.save(tmp / "x.npy", binarize(load_images(DATA / "mnist" / "t10k-images-idx3-ubyte.gz")).numpy())
    cases = [("mnist_binary", tmp / "x.npy", None)]
    cases += [(f"mnist_binary[{m}]", tmp / "x.npy", m) for m in binary_models or []]
    cases += [("cifar10_test_first1000", DATA / "cifar10" / "test_batch_first1000.bin.gz", None)]
    runs = {name: [] for name, _, _ in cases}
    for _ in range(repeats):  # round-robin, so that a slow minute falls on every case alike
        for name, src, model in cases:
            runs[name].append(api.evaluate(src, model=model))
    for name, _, _ in cases:
        rs = runs[name]
        out[name] = {"bits_per_dim": rs[0]["code_length_bits_per_dim"],
                     "negative_elbo_bits_per_dim": rs[0]["negative_elbo_bits_per_dim"],
                     "encode_images_per_s": statistics.median(r["encode_images_per_s"] for r in rs),
                     "decode_images_per_s": statistics.median(r["decode_images_per_s"] for r in rs),
                     "images": rs[0]["images"]}
    return out


def kodak_vs_jxl(tmp: Path, repeats: int, threads: int, src: Path = DATA / "kodak" / "kodim23.png") -> dict:
    bbc, out = tmp / "k.bbc", tmp / "k.png"
    t = [] if threads is None else ["--threads", threads]
    comp = wall(cli(*t, "compress", "-f", src, "-o", bbc), repeats)
    decomp = wall(cli(*t, "decompress", "-f", bbc, "-o", out), repeats)
    from PIL import Image
    import numpy as np
    assert np.array_equal(np.asarray(Image.open(src)), np.asarray(Image.open(out)))
    row = {"bbcodec_compress_s": comp, "bbcodec_decompress_s": decomp, "bbcodec_bytes": bbc.stat().st_size}
    if shutil.which("cjxl"):
        row["cjxl_e7_compress_s"] = wall(["cjxl", "-q", "100", "-e", "7", src, tmp / "k.jxl"], repeats)
        row["djxl_s"] = wall(["djxl", tmp / "k.jxl", tmp / "k2.png"], repeats)
        row["cjxl_bytes"] = (tmp / "k.jxl").stat().st_size
    return row


def kodak24(tmp: Path, repeats: int, threads: int) -> dict:
    """:func:`kodak_vs_jxl` on each of the 24 Kodak images, and the medians and maxima."""
    rows = {}
    for src in sorted((DATA / "kodak").glob("kodim*.png")):
        rows[src.stem] = kodak_vs_jxl(tmp, repeats, threads, src)
        print(" ", src.stem, {k: round(v, 2) for k, v in rows[src.stem].items() if k.endswith("_s")}, flush=True)
    summary = {}
    for key in ("bbcodec_compress_s", "bbcodec_decompress_s", "cjxl_e7_compress_s", "djxl_s"):
        values = [r[key] for r in rows.values() if key in r]
        if values:
            summary[key] = {"median": statistics.median(values), "max": max(values)}
    return {"images": rows, "summary": summary}


def under_load(tmp: Path, threads) -> dict:
    raw = tmp / "mnist2k"
    data = gzip.decompress((DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    import struct
    raw.write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, 2000, 28, 28) + data[16: 16 + 2000 * 784])
    t = [] if threads is None else ["--threads", threads]

    def trip(i):
        return (f"{' '.join(cli(*t, 'compress', '-f', raw, '-o', tmp / f'{i}.bbc'))} && "
                f"{' '.join(cli(*t, 'decompress', '-f', tmp / f'{i}.bbc', '-o', tmp / f'{i}.out'))}")

    start = time.perf_counter()
    subprocess.run(["sh", "-c", trip(0)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    procs = [subprocess.Popen(["sh", "-c", trip(i)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in (1, 2)]
    ends = []
    for p in procs:
        p.wait()
        ends.append(time.perf_counter() - start)
    return {"threads": threads or "default", "alone_s": alone, "pair_s": ends, "slowdown": max(ends) / alone}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="bbcodec --threads for every timed run [default: bbcodec's default]")
    ap.add_argument("--only", nargs="*", default=["mnist", "rates", "kodak", "load"],
                    help="parts to run (also: kodak24, every Kodak image by the CLI against cjxl)")
    ap.add_argument("--kodak24-repeats", type=int, default=1, help="runs per image for kodak24")
    ap.add_argument("--binary-models", nargs="*", default=[],
                    help="with rates: also time these models on binarised MNIST, alternating with the default")
    ap.add_argument("--uint8-models", nargs="*", default=[],
                    help="with mnist: also time these models' CLI round trip, alternating with the default")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"data not found under {DATA}")
    from bbcodec.threads import configure

    threads = configure(args.threads)  # before torch is imported, for the in-process parts
    results = {"repeats": args.repeats, "cpus": os.cpu_count(), "threads": threads}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "mnist" in args.only:
            results["mnist_uint8_vs_xz"] = mnist_vs_xz(tmp, args.repeats, args.threads, args.uint8_models)
            print("MNIST 8-bit vs xz:", results["mnist_uint8_vs_xz"], flush=True)
        if "rates" in args.only:
            rates = api_rates(args.repeats, args.binary_models)
            results.update(rates)
            print("rates:", rates, flush=True)
        if "kodak" in args.only:
            results["kodim23"] = kodak_vs_jxl(tmp, args.repeats, args.threads)
            print("kodim23:", results["kodim23"], flush=True)
        if "kodak24" in args.only:
            results["kodak24"] = kodak24(tmp, args.kodak24_repeats, args.threads)
            print("Kodak 24:", results["kodak24"]["summary"], flush=True)
        if "load" in args.only:
            results["under_load"] = under_load(tmp, args.threads)
            print("under load:", results["under_load"], flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
