"""Bits-back coding of image batches with the context VAE: exact, deterministic, well planned."""
import subprocess
import sys

import pytest
import torch
from hypothesis import given, strategies as st

from bbcodec.image_codec import SAFETY, CodingParams, ContextVAECodec, plan_batches
from bbcodec.ans import GROW_BITS

from helpers import sample_binary, sample_images, tiny_model


@pytest.mark.parametrize("pixels", ["uint8", "binary"])
def test_roundtrip_exact(pixels):
    model = tiny_model(pixels)
    x = sample_images(37) if pixels == "uint8" else sample_binary(37)
    codec = ContextVAECodec(model, CodingParams(batch=8, lanes_per_image=49, initial_lanes=16, pack=14))
    data, stats = codec.encode(x)
    assert stats.bits <= 8 * len(data)
    assert torch.equal(codec.decode(data, len(x)), x)


def test_corrupt_message_detected():
    model = tiny_model("uint8")
    x = sample_images(5)
    codec = ContextVAECodec(model, CodingParams(batch=4, lanes_per_image=49, initial_lanes=16))
    data, _ = codec.encode(x)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x55
    try:
        y = codec.decode(bytes(bad), len(x))
    except Exception:
        return  # detected as corrupt
    assert not torch.equal(y, x)  # or decoded to something else, caught by the container checksum


@given(n=st.integers(1, 3000), batch=st.integers(1, 128), lpi=st.integers(1, 200), init=st.integers(1, 256),
       bits=st.floats(1, 5000), pop=st.floats(1, 5000))
def test_plan_batches(n, batch, lpi, init, bits, pop):
    p = CodingParams(batch=batch, lanes_per_image=lpi, initial_lanes=init, bits_per_image=bits, pop_bits_per_image=pop)
    plan = plan_batches(n, p)
    assert sum(b for b, _ in plan) == n
    lanes = [l for _, l in plan]
    assert lanes[0] >= init and lanes == sorted(lanes)
    assert all(1 <= b <= batch for b, _ in plan)
    budget, prev, previous_lanes = GROW_BITS * init, 0, init
    for b, l in plan:
        assert b <= max(1, 2 * prev)
        spent = pop * b + GROW_BITS * (l - previous_lanes)
        assert b == 1 and l == previous_lanes or spent <= SAFETY * budget + 1e-6  # only what was put in
        budget += bits * b - GROW_BITS * (l - previous_lanes)
        prev, previous_lanes = b, l


def test_negative_elbo_close_to_code_length_for_random_model():
    model = tiny_model("binary", seed=3)
    x = sample_binary(200)
    codec = ContextVAECodec(model, CodingParams(batch=32, lanes_per_image=14, initial_lanes=16, bits_per_image=500))
    elbo = codec.negative_elbo(x)["bits"]
    data, stats = codec.encode(x)
    # a random model codes at ~1 bit/pixel; overheads are a small fraction of that
    assert abs(8 * len(data) / elbo - 1) < 0.03


DECODE_IN_SUBPROCESS = r"""
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
sys.path.insert(0, sys.argv[2])
from helpers import tiny_model, sample_images
from bbcodec.image_codec import ContextVAECodec, CodingParams
codec = ContextVAECodec(tiny_model("uint8", seed=5), CodingParams(batch=8, lanes_per_image=49, initial_lanes=16))
data = open(sys.argv[3], "rb").read()
y = codec.decode(data, 20)
sys.exit(0 if torch.equal(y, sample_images(20)) else 1)
"""


def test_decodes_in_another_process_with_other_thread_counts(tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        codec = ContextVAECodec(tiny_model("uint8", seed=5), CodingParams(batch=8, lanes_per_image=49, initial_lanes=16))
        data, _ = codec.encode(sample_images(20))
    finally:
        torch.set_num_threads(threads)
    path = tmp_path / "msg.bin"
    path.write_bytes(data)
    here = str(__import__("pathlib").Path(__file__).parent)
    for n in (1, 2):
        r = subprocess.run([sys.executable, "-c", DECODE_IN_SUBPROCESS, str(n), here, str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
