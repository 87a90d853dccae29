"""Throughput of the rANS core: push and pop, Bernoulli and 256-way categorical, ours vs constriction.

Every figure is the median of --repeats runs in this process, in millions of symbols per second,
and includes quantising the float probabilities to integer frequencies (as a codec must). The
symbols are sampled from the quantised distributions, and each pop is checked against the pushed
symbols. constriction runs on the CPU in the same process for a side-by-side reference.

    python bench/ans.py                      # CPU (and CUDA when present), 1M lanes
    python bench/ans.py --json out.json      # also write the figures
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bbcodec import entropy_models as em  # noqa: E402
from bbcodec.ans import Message  # noqa: E402
from bbcodec.codecs import EntropyCodec  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    times = []
    out = None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_ours(kind, lanes, rounds, device, repeats, gen):
    if kind == "bernoulli":
        probs = torch.rand(rounds, lanes, generator=gen).to(device)
        make = lambda: em.Bernoulli(probs)  # noqa: E731
    else:
        probs = torch.softmax(torch.randn(rounds, lanes, 256, generator=gen) * 2, -1).to(device)
        make = lambda: em.Categorical(probs)  # noqa: E731
    model = make()
    x = model.lookup(torch.randint(0, 1 << model.precision, model.shape, generator=gen).to(device))[0]

    def push():
        msg = Message((lanes,), device=device)
        EntropyCodec(make()).push(msg, x)
        return msg

    t_push, msg = timed(push, device, repeats)
    assert Message.from_bytes(msg.to_bytes(), device=device).bits() == msg.bits()

    def pop():
        return EntropyCodec(make()).pop(msg.clone())

    t_pop, y = timed(pop, device, repeats)
    assert torch.equal(y, x), "round trip failed"
    n = lanes * rounds
    return {"push_Msym_s": n / t_push / 1e6, "pop_Msym_s": n / t_pop / 1e6, "symbols": n,
            **code_length(kind, device, gen)}


def code_length(kind, device, gen, lanes=256, rounds=512):
    """Code length against information content with many symbols per lane (with a few symbols per
    lane, the heads' unused fractional bits dominate any comparison)."""
    shape = (rounds, lanes) + ((256,) if kind != "bernoulli" else ())
    logits = torch.randn(shape, generator=gen) * 2
    model = em.Bernoulli(torch.sigmoid(logits)) if kind == "bernoulli" else em.Categorical(torch.softmax(logits, -1))
    x = model.lookup(torch.randint(0, 1 << model.precision, model.shape, generator=gen))[0]
    info = model.information(x).sum().item()
    msg = Message((lanes,), device=device)
    EntropyCodec(model).push(msg, x.to(device))
    fixed = lanes * (31 + 5)  # each head starts at 2**31 and stores a 5-bit length field
    return {"code_length_symbols": rounds * lanes, "code_length_bits": msg.bits(), "fixed_head_bits": fixed,
            "information_bits": info, "overhead_vs_information": (msg.bits() - fixed) / info - 1}


def bench_constriction(kind, count, repeats, gen):
    import constriction

    if kind == "bernoulli":
        probs = torch.rand(count, generator=gen, dtype=torch.float64).numpy()
        x = (np.random.default_rng(0).random(count) < probs).astype(np.int32)
        model = constriction.stream.model.Bernoulli(perfect=False)
        args = (probs,)
    else:
        probs = torch.softmax(torch.randn(count, 256, generator=gen, dtype=torch.float64) * 2, -1).numpy()
        x = np.array([np.random.default_rng(i).choice(256, p=probs[i]) for i in range(min(count, 2000))] * (count // 2000 + 1))[:count].astype(np.int32)
        model = constriction.stream.model.Categorical(perfect=False)
        args = (probs,)

    def push():
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(x, model, *args)
        return coder

    t_push, coder = timed(push, torch.device("cpu"), repeats)
    data = coder.get_compressed()

    def pop():
        return constriction.stream.stack.AnsCoder(data).decode(model, *args)

    t_pop, y = timed(pop, torch.device("cpu"), repeats)
    assert np.array_equal(y, x)
    return {"push_Msym_s": count / t_push / 1e6, "pop_Msym_s": count / t_pop / 1e6, "symbols": count}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", type=int, default=1 << 20)
    ap.add_argument("--bernoulli-rounds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--constriction-categorical", type=int, default=200_000, help="symbols (its inputs are float64)")
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    gen = torch.Generator().manual_seed(0)
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                           "platform": platform.platform(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
               "lanes": args.lanes, "repeats": args.repeats, "bbcodec": {}, "constriction": {}}
    with torch.inference_mode():
        for device in devices:
            for kind, rounds in (("bernoulli", args.bernoulli_rounds), ("categorical256", 1)):
                r = bench_ours(kind, args.lanes, rounds, device, args.repeats, gen)
                results["bbcodec"][f"{kind}/{device.type}"] = r
                print(f"bbcodec      {kind:15s} {device.type:4s}  push {r['push_Msym_s']:7.2f}  pop {r['pop_Msym_s']:7.2f} Msym/s"
                      f"  ({r['symbols']:,} symbols; code length {100 * r['overhead_vs_information']:+.3f}% vs information on {r['code_length_symbols']:,} symbols in 256 lanes, beyond the fixed head bits)", flush=True)
    for kind, count in (("bernoulli", args.lanes * args.bernoulli_rounds), ("categorical256", args.constriction_categorical)):
        try:
            r = bench_constriction(kind, count, args.repeats, gen)
        except ImportError:
            print("constriction not installed: skipped")
            break
        results["constriction"][f"{kind}/cpu"] = r
        print(f"constriction {kind:15s} cpu   push {r['push_Msym_s']:7.2f}  pop {r['pop_Msym_s']:7.2f} Msym/s  ({count:,} symbols)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
