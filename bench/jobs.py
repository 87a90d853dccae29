"""Parallel chunk coding (``--jobs N``): wall time and peak memory against the worker count.

The MNIST test set (../shared/data/mnist, the first ``--limit`` images written as a plain IDX
file) is compressed and decompressed in chunks of ``--chunk`` images with each worker count of
``--jobs`` (default 1 and 2) and each coding-thread count of ``--threads`` (default 1; with 2 and
one job, the chunks are coded two at a time in threads of the main process), ``--repeats`` times
each, the configurations alternating (medians reported). Every run is a fresh
process (the workers use one thread each), so its
times include starting the workers, and its peak RSS is its own: the main process's
(``getrusage(RUSAGE_SELF)``) and the largest worker's (``RUSAGE_CHILDREN``, the workers being
reaped when the run ends); ``total_rss_bound_mb`` is main + jobs x worker. The outputs of every
worker count are checked byte for byte against jobs=1, and the restored file against the input.

``expected_speedup_16_cores`` extrapolates by Amdahl's law: the serial fraction ``f`` that the
1 -> 2 speed-up implies, over ``min(16, chunks)`` workers (no more workers than chunks run). It
is an estimate: it assumes 16 free cores, enough chunks (``--chunk 625`` gives 16 for 10,000
images) and memory bandwidth that keeps up, and that the 2-worker run had two free cores.

    python bench/jobs.py --json bench/results/jobs.json               # 10,000 images, --chunk 2500
    python bench/jobs.py --threads 1,2 --jobs 1,2 --json bench/results/jobs.json   # threads too
    python bench/jobs.py --limit 1000 --chunk 250 --repeats 1          # a quick check
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def run_one(args) -> None:
    """One measured run in this (fresh) process: compress then decompress; prints JSON."""
    sys.path.insert(0, str(ROOT))
    from bbcodec.threads import configure

    configure(int(args.threads))  # before torch is imported
    import resource

    from bbcodec import api

    src, out = Path(args.input), Path(args.out)
    packed, restored = out.with_suffix(".bbc"), out.with_suffix(".restored")
    t0 = time.perf_counter()
    summary = api.compress(src, packed, model=args.model, chunk=args.chunk, force=True, jobs=args.one)
    t1 = time.perf_counter()
    api.decompress(packed, restored, model=args.model, force=True, jobs=args.one)
    t2 = time.perf_counter()
    mb = 1024.0  # ru_maxrss is in KiB on Linux
    print(json.dumps({
        "jobs": args.one, "compress_seconds": t1 - t0, "decompress_seconds": t2 - t1,
        "output_bytes": summary["output_bytes"], "model": summary["model"],
        "output_sha256": hashlib.sha256(packed.read_bytes()).hexdigest(),
        "restored_ok": restored.read_bytes() == src.read_bytes(),
        "main_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mb,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mb,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=10000, help="the first N test images")
    ap.add_argument("--chunk", type=int, default=2500, help="images per chunk")
    ap.add_argument("--jobs", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="runs per worker count (medians reported)")
    ap.add_argument("--threads", default="1", help="coding threads of the main process, comma-separated")
    ap.add_argument("--model", default=None, help="model name or path (default: chosen from the data)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "jobs.json")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one measured run
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        return run_one(args)
    if not args.data.exists():
        sys.exit(f"MNIST test data not found at {args.data}")
    import gzip

    raw = gzip.decompress(args.data.read_bytes())
    n = min(args.limit, struct.unpack(">I", raw[4:8])[0])
    tmp = Path(tempfile.mkdtemp(prefix="bbcodec-jobs-"))
    src = tmp / "mnist-test-idx3-ubyte"
    src.write_bytes(raw[:4] + struct.pack(">I", n) + raw[8:16] + raw[16:16 + n * 784])
    chunks = -(-n // args.chunk)
    worker_counts = [int(j) for j in args.jobs.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    configs = [(threads, jobs) for threads in thread_counts for jobs in worker_counts]
    runs = {}
    for r in range(args.repeats):
        for threads, jobs in configs:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(jobs), "--input", str(src),
                   "--out", str(tmp / f"run-{threads}-{jobs}-{r}"), "--chunk", str(args.chunk), "--threads", str(threads)]
            if args.model:
                cmd += ["--model", args.model]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"run failed (threads={threads}, jobs={jobs}):\n{done.stderr}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            runs.setdefault((threads, jobs), []).append(row)
            print(f"threads {threads} jobs {jobs} run {r + 1}: compress {row['compress_seconds']:.1f} s, decompress "
                  f"{row['decompress_seconds']:.1f} s, peak RSS main {row['main_peak_rss_mb']:.0f} MB, "
                  f"worker {row['worker_peak_rss_mb']:.0f} MB", flush=True)
    base = runs[configs[0]][0]["output_sha256"]
    table = []
    for (threads, jobs), rows in runs.items():
        med = {k: statistics.median(x[k] for x in rows) for k in ("compress_seconds", "decompress_seconds")}
        main_mb, worker_mb = max(x["main_peak_rss_mb"] for x in rows), max(x["worker_peak_rss_mb"] for x in rows)
        table.append({"threads": threads, "jobs": jobs, "workers_used": min(jobs, chunks) if jobs > 1 else 0, **med,
                      "round_trip_seconds": med["compress_seconds"] + med["decompress_seconds"],
                      "main_peak_rss_mb": main_mb, "worker_peak_rss_mb": worker_mb,
                      "total_rss_bound_mb": main_mb + (min(jobs, chunks) if jobs > 1 else 0) * worker_mb,
                      "same_bytes_as_first": all(x["output_sha256"] == base for x in rows),
                      "restored_ok": all(x["restored_ok"] for x in rows), "runs": rows})
    one = table[0]  # the first configuration: the reference of every speed-up
    for t in table:
        t["speedup"] = {k: one[k] / t[k] for k in ("compress_seconds", "decompress_seconds", "round_trip_seconds")}
    result = {"images": n, "chunk": args.chunk, "chunks": chunks, "repeats": args.repeats,
              "main_threads": thread_counts, "worker_threads": 1, "cpus": os.cpu_count(),
              "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
              "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
              "machine": platform.platform(), "model": one["runs"][0]["model"],
              "output_bytes": one["runs"][0]["output_bytes"], "table": table}
    two = next((t for t in table if t["jobs"] == 2 and t["threads"] == one["threads"]), None)
    if two is not None:
        s2 = two["speedup"]["round_trip_seconds"]
        f = min(1.0, max(0.0, 2.0 / s2 - 1.0))  # Amdahl: 1/s2 = f + (1 - f)/2
        workers = min(16, chunks)
        result["serial_fraction_from_2_workers"] = f
        result["expected_speedup_16_cores"] = {
            "workers": workers, "round_trip_speedup": 1.0 / (f + (1.0 - f) / workers),
            "note": (f"Amdahl's law with the serial fraction {f:.2f} the 1 -> 2 worker speed-up implies, over "
                     f"min(16, chunks) = {workers} workers (no more run than there are chunks; --chunk "
                     f"{max(1, -(-n // 16))} gives 16 here); assumes 16 free cores and that the 2-worker run "
                     "had two free cores (with other work on the machine it underestimates)")}
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
    for t in table:
        print(f"threads {t['threads']} jobs {t['jobs']}: compress {t['compress_seconds']:.1f} s, decompress {t['decompress_seconds']:.1f} s, "
              f"round trip x{t['speedup']['round_trip_seconds']:.2f}; peak RSS main {t['main_peak_rss_mb']:.0f} MB, "
              f"worker {t['worker_peak_rss_mb']:.0f} MB (total at most {t['total_rss_bound_mb']:.0f} MB); "
              f"same bytes {t['same_bytes_as_first']}, restored {t['restored_ok']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
