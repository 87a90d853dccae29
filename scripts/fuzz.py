"""Fuzz the decoder and the readers: damaged and hostile ``.bbc`` files, and odd inputs.

Every case must end in one of two ways: a :class:`~bbcodec.BBCodecError` (a clean refusal), or
an output equal to what was compressed. Anything else is a failure, counted by outcome:

* ``exception``: any other exception type (the CLI's "internal error");
* ``wrong``: decoded without error to a different output;
* ``hang``: longer than ``--timeout`` seconds;
* ``blowup``: over ``--memory`` of address space (MemoryError under the limit), or a compressed
  file more than :data:`EXPANSION_SLACK` bytes above ``zlib -9`` of its input.

The corpus is built from the embedded models on small real samples: 8-bit MNIST IDX (gzipped,
and plain in two chunks), binarised MNIST ``.npy``, CIFAR-10 ``.bin``, PNG RGB/grey/RGBA, a photo
crop coded as a pyramid, in-memory tensors (grey and colour), each both as the model codes it and
as written by default (where the zlib fallback may win), plus the version-1 golden files.
Mutations: bit flips, byte sets, insertions, deletions, truncations, header fields set to odd
values behind a valid checksum, random bodies behind a valid magic, concatenations, and zlib
bombs in the header, the side data and a stored body. Input cases: zero images, overflowing IDX
dimensions, 1-pixel-wide and tiny pictures, broken PNG/``.npy``/gzip files.

    python scripts/fuzz.py --cases 10000 --json bench/results/fuzz.json    # the long campaign

``tests/test_fuzz.py`` runs a fast seeded sample of the same cases.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import resource
import struct
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "bbcodec" / "samples"
GOLDEN = REPO / "tests" / "golden"
EXPANSION_SLACK = 64  # bytes a compressed file may exceed zlib -9 of its input by
ODD_VALUES = [0, -1, 1, 2, 3, 7, 1.5, -0.5, True, False, None, "x", "", [], {}, [1], [[1, 2]], 1e308, float("inf"),
              2 ** 31, 2 ** 40, 2 ** 63, -(2 ** 63), 10 ** 30, [0] * 5, [[0] * 15] * 3, {"a": 1}, "uint8", "binary",
              "png", "raw", "idx", "npy", "cifar", "pnm", [1, 3, 32, 32], [1, 28, 28], [2, 1, 1], [1, 1, 3000]]


# ------------------------------------------------------------------------------ corpus
def _png_bytes(arr: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def originals() -> list[dict]:
    """Small real inputs: ``{"name", "raw" (file bytes) or "tensor", "kwargs"}``."""
    idx = gzip.decompress((SAMPLES / "mnist-test-500-idx3-ubyte.gz").read_bytes())

    def idx_of(n):
        return idx[:4] + n.to_bytes(4, "big") + idx[8:16] + idx[16:16 + n * 784]

    binary = np.load(SAMPLES / "mnist-test-500-binarized.npy")[:4]
    npy = io.BytesIO()
    np.save(npy, binary)
    cifar = (SAMPLES / "cifar10-test-20.bin").read_bytes()
    photo = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(GOLDEN / "photo256.png").convert("RGB"))
    cifar_images = np.frombuffer(cifar[: 2 * 3073], np.uint8).reshape(2, 3073)[:, 1:].reshape(2, 3, 32, 32).copy()
    out = [
        {"name": "mnist3-idx3-ubyte.gz", "raw": gzip.compress(idx_of(3), 9, mtime=0)},
        {"name": "mnist4-idx3-ubyte", "raw": idx_of(4), "kwargs": {"chunk": 2}},
        {"name": "binary4.npy", "raw": npy.getvalue()},
        {"name": "cifar2.bin", "raw": cifar[: 2 * 3073]},
        {"name": "rgb32x20.png", "raw": _png_bytes(photo[:20, :32].copy(), "RGB")},
        {"name": "grey24x16.png", "raw": _png_bytes(np.asarray(photo[40:56, 40:64].mean(-1), np.uint8), "L")},
        {"name": "rgba16x12.png", "raw": _png_bytes(np.dstack([photo[:12, :16], np.full((12, 16), 200, np.uint8)]),
                                                    "RGBA")},
        {"name": "pyramid64.png", "raw": _png_bytes(photo[64:128, 64:128].copy(), "RGB"),
         "kwargs": {"coding": {"pyramid": 64, "tile": 32}}},
        {"name": "lead-grey128.png", "raw": _png_bytes(np.asarray(photo[:128, :128].mean(-1), np.uint8), "L"),
         "kwargs": {"coding": {"tile": 64}}},  # photo-grey with ramped lead tiles (lead_tiles stored)
        {"name": "edge-rgb136x200.png", "raw": _png_bytes(photo[:200, :136].copy(), "RGB"),
         "kwargs": {"coding": {"tile": 64}}},  # edge tiles: 64x64 rows, a column and a bottom band of 32x32 (edge_tiles stored)
        {"name": "tensor-grey3", "tensor": np.frombuffer(idx_of(3)[16:], np.uint8).reshape(3, 28, 28).copy()},
        {"name": "tensor-rgb2", "tensor": cifar_images},
    ]
    return out


def build_corpus() -> list[dict]:
    """Seed files: ``{"name", "bbc", "kind" (how to compare), "expect"}`` where ``expect`` is the
    original file's bytes, or for pictures their pixel checksum, or for tensors their bytes+shape."""
    import torch

    from bbcodec import api
    from bbcodec.formats import restored_sha

    corpus = []
    for item in originals():
        kwargs = item.get("kwargs", {})
        for fallback in (False, True):
            if "tensor" in item:
                t = torch.from_numpy(item["tensor"])
                bbc = api.compress_images(t, fallback=fallback, **kwargs)
                expect = {"tensor": item["tensor"].tobytes(), "shape": list(item["tensor"].shape)}
            else:
                bbc, _ = api.compress_data(item["raw"], item["name"], fallback=fallback, **kwargs)
                kind = "png" if item["name"].endswith(".png") else "bytes"
                expect = {"png": restored_sha("png", item["raw"])} if kind == "png" else {"bytes": item["raw"]}
            corpus.append({"name": f"{item['name']}{'' if fallback else ' (coded)'}", "bbc": bbc, "expect": expect})
    manifest = json.loads((GOLDEN / "manifest.json").read_text())["files"]
    for row in manifest:
        if row["bbc"] in ("photo256.png.bbc",):  # the slow one; the pyramid is covered above
            continue
        original = (GOLDEN / row["original"]).read_bytes()
        if row["compare"] == "tensor":
            arr = np.load(io.BytesIO(original))
            expect = {"tensor": arr.tobytes(), "shape": list(arr.shape)}
        elif row["compare"] == "pixels":
            expect = {"png": restored_sha("png", original)}
        else:
            expect = {"bytes": original}
        corpus.append({"name": f"golden v1 {row['bbc']}", "bbc": (GOLDEN / row["bbc"]).read_bytes(), "expect": expect})
    return corpus


# ------------------------------------------------------------------------------ mutations
def _split_v2(data: bytes):
    """``(prefix before the header, header JSON, zlib?, body)`` of a version-2 file, or None."""
    from bbcodec.varint import decode_varint

    if data[:3] != b"BBC" or len(data) < 40 or data[3] != 2:
        return None
    method = data[4]
    pos = 37 + (32 if method == 0 else 0)
    try:
        n, start = decode_varint(data, pos)
        text = data[start: start + n]
        head = json.loads(zlib.decompress(text) if method == 0 else text)
    except (ValueError, zlib.error):
        return None
    return data[:pos], head, method == 0, data[start + n + 4:]


def _join_v2(prefix: bytes, head, compressed: bool, body: bytes, raw_text: bytes | None = None) -> bytes:
    from bbcodec.varint import encode_varint

    text = raw_text if raw_text is not None else json.dumps(head, separators=(",", ":")).encode()
    if compressed and raw_text is None:
        text = zlib.compress(text, 9)
    top = prefix + encode_varint(len(text)) + text
    return top + struct.pack("<I", zlib.crc32(top)) + body


def _odd(rng: random.Random):
    return rng.choice(ODD_VALUES)


def _set_field(rng: random.Random, head):
    """Set a random field (or an element of a list field) of the header to an odd value."""
    key = rng.choice(sorted(head))
    value = head[key]
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        if isinstance(value[i], list) and value[i] and rng.random() < 0.5:
            value[i][rng.randrange(len(value[i]))] = _odd(rng)
        else:
            value[i] = _odd(rng)
    elif isinstance(value, dict) and value and rng.random() < 0.7:
        value[rng.choice(sorted(value))] = _odd(rng)
    elif rng.random() < 0.1:
        del head[key]
    else:
        head[key] = _odd(rng)
    return head


def mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One mutation of ``data``: ``(what, new bytes)``."""
    b = bytearray(data)
    op = rng.choice(["flip", "flip", "byte", "insert", "delete", "truncate", "field", "field", "field", "field",
                     "coding", "coding", "chunks", "random_body", "concat", "bomb"])
    if op == "flip":
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return op, bytes(b)
    if op == "byte":
        b[rng.randrange(len(b))] = rng.randrange(256)
        return op, bytes(b)
    if op == "insert":
        i = rng.randrange(len(b) + 1)
        return op, bytes(b[:i]) + rng.randbytes(rng.randint(1, 16)) + bytes(b[i:])
    if op == "delete":
        i = rng.randrange(len(b))
        return op, bytes(b[:i] + b[i + rng.randint(1, 16):])
    if op == "truncate":
        return op, bytes(b[: rng.randrange(len(b))])
    if op == "random_body":
        return op, data[:5] + rng.randbytes(rng.randint(0, 2000))
    if op == "concat":
        return op, data + (data if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 100)))
    parts = _split_v2(data)
    if parts is None:  # a version-1 file: flip a bit instead
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        return "flip", bytes(b)
    prefix, head, compressed, body = parts
    if op == "coding" and isinstance(head.get("c"), list) and head["c"]:
        head["c"][rng.randrange(len(head["c"]))] = _odd(rng)
    elif op == "chunks" and isinstance(head.get("n"), list):
        n = head["n"]
        choice = rng.randrange(4)
        if choice == 0 and n:
            n[rng.randrange(len(n))][0] = rng.choice([0, 1, 2, n[0][0] * 2, 10 ** 7, 2 ** 40])
        elif choice == 1:
            head["s"][0] = rng.choice([1, 2, 3, 5, 1000, 10 ** 6, 2 ** 31])
            if n:
                n[-1][0] = max(1, n[-1][0] + rng.choice([-1, 1, 1000]))
        elif choice == 2 and len(n) > 1:
            n[0], n[1] = n[1], n[0]
        else:
            head["s"] = rng.choice([[1, 3, 4000, 4000], [10 ** 5, 28, 28], [1, 1, 3000], [1, 3, 1, 2 ** 20]])
    elif op == "bomb":
        return "bomb", _bomb(rng, prefix, head, compressed, body)
    else:
        op = "field"
        head = _set_field(rng, head)
    return op, _join_v2(prefix, head, compressed, body)


_BOMBS: dict = {}


def _bomb_parts():
    """(a compressor that has taken 64 MB of spaces, zlib of 256 MB of zeros), made once."""
    if not _BOMBS:
        spaces = zlib.compressobj(9)
        piece = b" " * (1 << 20)
        head = b"".join(spaces.compress(piece) for _ in range(64))
        zeros = zlib.compressobj(9)
        piece = bytes(1 << 20)
        body = b"".join(zeros.compress(piece) for _ in range(256)) + zeros.flush()
        _BOMBS.update(spaces=(spaces, head), zeros=body)
    return _BOMBS["spaces"], _BOMBS["zeros"]


def _bomb(rng: random.Random, prefix, head, compressed, body) -> bytes:
    """A zlib bomb in the header, the side data or a stored body, behind a valid checksum."""
    (spaces, spaces_head), zeros = _bomb_parts()
    where = rng.randrange(3)
    if where == 0 and compressed:  # 64 MB of JSON whitespace before the object
        c = spaces.copy()
        text = spaces_head + c.compress(json.dumps(head).encode()) + c.flush()
        return _join_v2(prefix, head, compressed, body, raw_text=text)
    if compressed:  # the side data
        side = head.get("x", 0)
        head["x"] = len(zeros)
        return _join_v2(prefix, head, compressed, (body[: len(body) - side] if side else body) + zeros)
    head["z"] = rng.choice([head.get("z", 1), 256 << 20])
    return _join_v2(prefix, head, compressed, zeros)


def input_cases(rng: random.Random) -> list[tuple[str, str, bytes]]:
    """Odd inputs to compress: ``(what, file name, bytes)``."""
    idx_zero = struct.pack(">BBBB3I", 0, 0, 8, 3, 0, 28, 28)
    cases = [
        ("idx with zero images", "zero-idx3-ubyte", idx_zero),
        ("gzipped idx with zero images", "zero-idx3-ubyte.gz", gzip.compress(idx_zero, 9, mtime=0)),
        ("idx dims overflow", "big-idx3-ubyte", struct.pack(">BBBB3I", 0, 0, 8, 3, 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1)),
        ("idx rank 255", "rank-idx", bytes([0, 0, 8, 255]) + bytes(64)),
        ("idx body short", "short-idx3-ubyte", struct.pack(">BBBB3I", 0, 0, 8, 3, 5, 28, 28) + bytes(100)),
        ("cifar partial record", "x.bin", bytes(3073 + 5)),
        ("cifar empty gz", "x.bin.gz", gzip.compress(b"", mtime=0)),
        ("truncated gzip", "t-idx3-ubyte.gz", gzip.compress(bytes(5000), mtime=0)[:30]),
        ("not an image", "junk.txt", b"hello world\n"),
        ("broken png", "broken.png", _png_bytes(np.zeros((8, 8, 3), np.uint8), "RGB")[:40]),
        ("png 16-bit", "deep.png", _png16()),
        ("npy float", "f.npy", _npy(np.zeros((2, 4, 4), np.float32))),
        ("npy zero images", "z.npy", _npy(np.zeros((0, 28, 28), np.uint8))),
        ("npy rank 1", "r.npy", _npy(np.zeros(10, np.uint8))),
        ("npy 4 channels", "c.npy", _npy(np.zeros((1, 4, 4, 4), np.uint8))),
        ("npy huge shape header", "h.npy", _npy_header_only((2 ** 40, 28, 28))),
    ]
    for w, h, mode in [(3000, 1, "RGB"), (1, 3000, "L"), (1, 1, "RGB"), (1, 1, "L"), (8, 8, "RGB"), (2, 700, "RGBA"),
                       (100, 200, "L"), (72, 40, "RGBA"), (5, 3, "LA")]:
        ch = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}[mode]
        arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (h, w, ch), dtype=np.uint8)
        cases.append((f"{w}x{h} {mode} picture", f"p{w}x{h}.png", _png_bytes(arr[..., 0] if ch == 1 else arr, mode)))
    cases.append(("3000x1 smooth picture", "smooth.png",
                  _png_bytes(np.tile(np.arange(3000, dtype=np.uint16)[None, :, None] % 256, (1, 1, 3)).astype(np.uint8),
                             "RGB")))
    return cases


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npy_header_only(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(100)


def _png16() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(buf, format="PNG")  # mode I;16
    return buf.getvalue()


# ------------------------------------------------------------------------------ running
def check_decode(data: bytes, expect: dict) -> str:
    """Outcome of decoding ``data``: ``clean``, ``equal``, ``wrong`` or ``exception:Type``."""
    from bbcodec import BBCodecError, api
    from bbcodec.formats import restored_sha

    try:
        if "tensor" in expect:
            images = api.decompress_images(data)
            same = list(images.shape) == expect["shape"] and images.numpy().tobytes() == expect["tensor"]
        else:
            restored, _ = api.decompress_data(data)
            if "png" in expect:
                same = restored_sha("png", restored) == expect["png"]
            else:
                same = restored == expect["bytes"]
        return "equal" if same else "wrong"
    except BBCodecError:
        return "clean"
    except MemoryError:
        return "blowup"
    except Exception as exc:  # noqa: BLE001 - the point is to catch what should not happen
        return f"exception:{type(exc).__name__}: {str(exc)[:120]}"


def check_input(name: str, raw: bytes) -> str:
    """Outcome of compressing ``raw``: ``clean`` (refused), ``equal`` (round trip exact and no
    expansion), ``blowup`` (expanded), ``wrong`` or ``exception:Type``."""
    from bbcodec import BBCodecError, api
    from bbcodec.formats import restored_sha

    try:
        bbc, _ = api.compress_data(raw, name)
    except BBCodecError:
        return "clean"
    except MemoryError:
        return "blowup"
    except Exception as exc:  # noqa: BLE001
        return f"exception:{type(exc).__name__}: {str(exc)[:120]}"
    if len(bbc) > len(zlib.compress(raw, 9)) + EXPANSION_SLACK:
        return "blowup"
    outcome = check_decode(bbc, {"png": restored_sha("png", raw)} if name.endswith(".png") else {"bytes": raw})
    return "equal" if outcome == "equal" else outcome


_CORPUS: list | None = None


def _worker_init(memory: int):
    global _CORPUS
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    import torch

    torch.set_num_threads(1)
    _cache_models()
    _CORPUS = build_corpus()


def _cache_models():
    """Load each model once per process (the campaign decodes thousands of files)."""
    import functools

    from bbcodec import api, zoo

    cached = functools.lru_cache(maxsize=16)(zoo.load_model)
    api.load_model = cached


def case(seed: int) -> tuple[int, str, str, str, float]:
    """Run case ``seed``: ``(seed, corpus entry, mutation, outcome, seconds)``."""
    rng = random.Random(seed)
    entry = _CORPUS[rng.randrange(len(_CORPUS))]
    what, data = mutate(rng, entry["bbc"])
    t0 = time.perf_counter()
    outcome = check_decode(data, entry["expect"])
    return seed, entry["name"], what, outcome, time.perf_counter() - t0


def is_failure(outcome: str) -> bool:
    return outcome not in ("clean", "equal")


def campaign(cases: int, seed: int, workers: int, timeout: float, memory: int, log=print) -> dict:
    """Run ``cases`` mutation cases plus every input case; returns the counts and failures."""
    counts, failures, slowest, slowest_case = Counter(), [], 0.0, None
    rng = random.Random(seed)
    _worker_init(0)  # input cases run here (with no memory limit, to see their real use)
    for what, name, raw in input_cases(rng):
        outcome = check_input(name, raw)
        counts["input " + outcome.split(":")[0]] += 1
        if is_failure(outcome):
            failures.append({"input": what, "outcome": outcome})
            log(f"FAIL input {what}: {outcome}")
    seeds = [seed * 1_000_003 + i for i in range(cases)]
    t0 = time.time()
    with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(memory,)) as pool:
        futures = {s: pool.submit(case, s) for s in seeds}
        for i, s in enumerate(seeds):
            try:
                _, name, what, outcome, seconds = futures[s].result(timeout=timeout + 600)
            except FutureTimeout:
                name, what, outcome, seconds = "?", "?", "hang", timeout
            if seconds > timeout:
                outcome = "hang"
            if seconds > slowest:
                slowest, slowest_case = seconds, {"seed": s, "seed_file": name, "mutation": what, "outcome": outcome}
            counts[outcome.split(":")[0]] += 1
            if is_failure(outcome):
                failures.append({"seed": s, "seed_file": name, "mutation": what, "outcome": outcome,
                                 "seconds": round(seconds, 2)})
                log(f"FAIL seed {s} {name} {what}: {outcome}")
            if (i + 1) % 500 == 0:
                log(f"{i + 1}/{cases} cases, {time.time() - t0:.0f} s: {dict(counts)}")
    return {"cases": cases, "input_cases": sum(v for k, v in counts.items() if k.startswith("input")),
            "counts": dict(counts), "failures": failures, "slowest_case_seconds": round(slowest, 2),
            "slowest_case": slowest_case,
            "seconds": round(time.time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds after which a case counts as a hang")
    ap.add_argument("--memory", type=float, default=4.0, help="GiB of address space per worker")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = campaign(args.cases, args.seed, args.workers, args.timeout, int(args.memory * (1 << 30)))
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=2))
    bad = sum(1 for f in result["failures"])
    print(f"{bad} failures")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
