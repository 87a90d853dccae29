"""The coding threads: large exact products split over a pool of sleeping threads change no bit."""

import os
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn as nn

from bbcodec import threads
from bbcodec.coding_params import CodingParams
from bbcodec.image_codecs import ContextVAECodec, HierarchicalVAECodec
from bbcodec.models import fixedpoint
from helpers import sample_binary, sample_images, tiny_colour_model, tiny_model


@pytest.fixture
def split_threads(monkeypatch):
    """Every product of at least 64 multiply-adds is split over ``n`` threads; returns a list that
    records each split's blocks."""
    splits = []
    run = threads.run_blocks

    def recording(blocks, work):
        if len(blocks) > 1:
            splits.append(blocks)
        return run(blocks, work)

    monkeypatch.setattr(fixedpoint, "SPLIT_MACS", 32)
    monkeypatch.setattr(fixedpoint, "run_blocks", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as configure() leaves it for coding

    def use(n):
        monkeypatch.setattr(threads, "_coding_threads", n)
        splits.clear()
        return splits
    yield use
    monkeypatch.setattr(threads, "_coding_threads", None)
    torch.set_num_threads(before)


def _layers():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-4096, 4096, (37, 24), generator=g).double()
    images = torch.randint(-4096, 4096, (3, 6, 9, 7), generator=g).double()
    one = torch.randint(-4096, 4096, (1, 6, 9, 7), generator=g).double()
    torch.manual_seed(1)
    wide, narrow, plain = nn.Linear(24, 40), nn.Linear(24, 5), nn.Linear(24, 30, bias=False)
    conv, conv_plain = nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(6, 4, (3, 1), padding=(2, 0), dilation=(2, 1), bias=False)
    return lambda num: [num.linear(wide, x, relu=True), num.linear(narrow, x), num.linear(plain, x),
                        num.conv(conv, images, relu=True), num.conv(conv, one), num.conv(conv_plain, images),
                        num.conv(conv_plain, one)]


@pytest.mark.parametrize("n", [2, 3])
def test_split_products_are_identical(split_threads, n):
    evaluate = _layers()
    one = evaluate(fixedpoint.ExactNumerics())
    splits = split_threads(n)
    with torch.inference_mode():  # the pool's threads take the caller's autograd modes
        many = evaluate(fixedpoint.ExactNumerics())
    assert all(torch.equal(a, b) for a, b in zip(one, many))
    assert len(splits) == len(one) and all(len(b) == n for b in splits)
    # the convolutions split by output columns of the padded images: 3 of 11 x 9, less the widest shift
    assert splits[3][-1][1] == 3 * 11 * 9 - (2 * 9 + 2) and splits[4][-1][1] == 11 * 9 - (2 * 9 + 2)


def test_split_codecs_give_the_same_bytes(split_threads):
    x = torch.randint(0, 256, (9, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    colour = HierarchicalVAECodec(tiny_colour_model(), CodingParams(batch=4, lanes_per_image=16, initial_lanes=8,
                                                                    bits_per_image=800))
    mnist = ContextVAECodec(tiny_model("uint8", seed=5), CodingParams(batch=8, lanes_per_image=49, initial_lanes=16))
    binary = ContextVAECodec(tiny_model("binary", seed=6), CodingParams(batch=8, lanes_per_image=7, initial_lanes=4))
    digits, bits = sample_images(12), sample_binary(12)
    single = colour.encode(x)[0], mnist.encode(digits)[0], binary.encode(bits)[0]
    splits = split_threads(2)
    assert (colour.encode(x)[0], mnist.encode(digits)[0], binary.encode(bits)[0]) == single
    assert len(splits) > 0
    assert torch.equal(colour.decode(single[0], len(x)), x) and torch.equal(mnist.decode(single[1], 12), digits)
    assert torch.equal(binary.decode(single[2], 12), bits)
    assert splits


def test_pool_raises_the_blocks_error_and_stays_usable(split_threads):
    split_threads(2)
    names, started = [], [threading.Event(), threading.Event()]

    def work(lo, hi):
        names.append(threading.current_thread().name)
        started[lo].set()
        assert started[1 - lo].wait(10), "both blocks should run at once, on two threads"
        if lo:
            raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        threads.run_blocks([(0, 1), (1, 2)], work)
    assert any(name.startswith("bbcodec-split") for name in names)
    done = []
    # a block that splits again runs its blocks itself: the pool's threads never wait on the pool
    threads.run_blocks([(0, 1), (1, 2)], lambda lo, hi: threads.run_blocks([(0, 1), (1, 2)], lambda a, b: done.append(a)))
    assert sorted(done) == [0, 0, 1, 1]


def test_the_caller_computes_the_blocks_a_busy_pool_thread_has_not_claimed(split_threads):
    """A pool thread that is not running (here: held by earlier work; in life, descheduled by a
    busy machine) holds up nothing: the caller claims every block itself."""
    split_threads(2)
    pool, release = threads.split_pool(), threading.Event()

    class Held:
        def claim_and_run(self):
            release.wait(30)

    pool.inboxes[0].put((Held(), (torch.is_inference_mode_enabled(), torch.is_grad_enabled())))
    try:
        names = []
        threads.run_blocks(threads.even_blocks(6, 3), lambda lo, hi: names.append(threading.current_thread().name))
        assert names == [threading.current_thread().name] * 3
    finally:
        release.set()
    seen = set()
    threads.run_blocks([(0, 1), (1, 2)], lambda lo, hi: seen.add(lo))  # and the pool still works after
    assert seen == {0, 1}


def test_one_coding_thread_where_torch_runs_several(monkeypatch):
    monkeypatch.setattr(threads, "_coding_threads", 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert threads.coding_threads() == 1 and threads.split_pool() is None
    finally:
        torch.set_num_threads(before)
        monkeypatch.setattr(threads, "_coding_threads", None)


CONFIGURE = r"""
import sys
from bbcodec import threads
n = threads.configure(int(sys.argv[1]) if sys.argv[1] != "-" else None, training=sys.argv[2] == "train")
import torch
print(n, torch.get_num_threads(), threads.coding_threads())
"""


ALL = max(1, min(8, threads.available_cpus()))
HALF = max(1, min(8, threads.available_cpus() // 2))


@pytest.mark.parametrize("threads_arg, mode, expected", [
    ("2", "code", (2, 1, 2)),  # coding: torch runs one thread, the exact products split over 2
    ("2", "train", (2, 2, 1)),  # training: torch's own threads (no split then)
    ("-", "code", (ALL, 1, ALL)),
    ("-", "train", (HALF, HALF, 1 if HALF > 1 else HALF)),
])
def test_configure_before_torch(threads_arg, mode, expected):
    """(configure's count, torch's threads, coding threads) in a fresh process."""
    r = subprocess.run([sys.executable, "-c", CONFIGURE, threads_arg, mode], capture_output=True, text=True,
                       env={**os.environ, "BBCODEC_THREADS": ""})
    assert r.returncode == 0, r.stderr
    assert tuple(map(int, r.stdout.split())) == expected


def test_chunks_run_one_per_thread_and_raise_once_all_have_stopped(split_threads):
    split_threads(2)
    seen, started, stopped = {}, [threading.Event(), threading.Event()], []

    def work(k):
        seen[k] = (threading.current_thread().name, threads.coding_threads())
        started[k].set()
        assert started[1 - k].wait(10), "both chunks should run at once, on two threads"
        if k:
            raise ValueError("chunk failed")
        stopped.append(k)
        return k

    with pytest.raises(ValueError, match="chunk failed"):
        threads.run_chunks(2, work)
    assert stopped == [0]  # the other chunk had finished before the error was raised
    assert {name for name, _ in seen.values()} == {threading.current_thread().name, "bbcodec-chunk-1"}
    assert [share for _, share in seen.values()] == [1, 1]  # each thread computes its own networks
    both, alone = [threading.Event(), threading.Event()], []

    def last_gets_the_pool(k):
        both[k].set()
        assert both[1 - k].wait(10)
        if k == 1:  # once chunk 0's thread has run out of chunks, this one computes on both threads
            deadline = time.monotonic() + 10
            while threads.coding_threads() != 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            alone.append(threads.coding_threads())
        return k

    assert threads.run_chunks(2, last_gets_the_pool) == [0, 1]
    assert alone == [2] and threads.coding_threads() == 2


def test_chunks_coded_in_threads_give_the_same_bytes(split_threads, tmp_path):
    from bbcodec import api
    from helpers import save_tiny

    model = tmp_path / "tiny"
    save_tiny(model, "uint8", seed=2, coding={"bits_per_image": 2000.0, "batch": 4, "lanes_per_image": 49,
                                              "initial_lanes": 16})
    x = sample_images(30)
    single = api.compress_images(x, str(model), chunk=7, fallback=False)
    from bbcodec.container import Container

    assert len(Container.from_bytes(single).chunks) == 5
    split_threads(2)
    assert api.compress_images(x, str(model), chunk=7, fallback=False) == single
    restored = api.decompress_data(single, model=str(model))[0]
    split_threads(1)
    assert restored == api.decompress_data(single, model=str(model))[0]
    import io

    import numpy as np

    assert np.array_equal(np.load(io.BytesIO(restored)), x.numpy())
