"""Bits-back coding of image batches with the context VAE: exact, deterministic, well planned."""
import subprocess
import sys

import pytest
import torch
from hypothesis import given, strategies as st

from bbcodec.coding_params import CodingParams
from bbcodec.image_codecs import ContextVAECodec
from bbcodec.plan import SAFETY, Batch, plan_batches, plan_from_bytes, plan_to_bytes
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
       bits=st.floats(1, 5000), pop=st.floats(1, 5000), plain=st.booleans())
def test_plan_batches(n, batch, lpi, init, bits, pop, plain):
    p = CodingParams(batch=batch, lanes_per_image=lpi, initial_lanes=init, bits_per_image=bits,
                     pop_bits_per_image=pop, plain_start=plain)
    plan = plan_batches(n, p)
    assert sum(b.units for b in plan) == n
    lanes = [s.lanes for s in plan]
    assert lanes[0] >= init and lanes == sorted(lanes)
    assert all(1 <= b.units <= batch for b in plan)
    flags = [s.bits_back for s in plan]
    assert flags == sorted(flags) and (plain or all(flags))  # plain batches only at the start
    budget, prev, previous_lanes = (0 if plain else GROW_BITS * init), 0, init
    for b, l, bits_back in plan:
        if bits_back:
            assert b <= max(1, 2 * prev)
            spent = pop * b + GROW_BITS * (l - previous_lanes)
            assert b == 1 and l == previous_lanes or spent <= SAFETY * budget + 1e-6  # only what was put in
            assert not plain or pop <= SAFETY * budget + 1e-6  # a plain start waits for the first pop
        else:
            assert l == previous_lanes
        budget += bits * b - GROW_BITS * (l - previous_lanes)
        prev, previous_lanes = b, l


@pytest.mark.parametrize("plain_start", [False, True])
def test_plain_start_round_trip_uses_no_seeded_bits(plain_start):
    model = tiny_model("uint8")
    x = sample_images(30)
    params = CodingParams(batch=8, lanes_per_image=49, initial_lanes=16, bits_per_image=1000,
                          pop_bits_per_image=1000, plain_start=plain_start)
    codec = ContextVAECodec(model, params)
    data, stats = codec.encode(x)
    assert (stats.extra["plain_images"] > 0) == plain_start
    assert (stats.initial_bits == 0) == plain_start
    assert torch.equal(codec.decode(data, len(x)), x)


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
from bbcodec.coding_params import CodingParams
from bbcodec.image_codecs import ContextVAECodec
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


def test_files_from_before_plain_start_still_decode(tmp_path):
    """A file whose coding list lacks ``plain_start`` (written before it existed) decodes as one
    coded with seeded bits, whatever the model's current default."""
    from bbcodec import api
    from bbcodec.container import Container
    from helpers import save_tiny

    model = save_tiny(tmp_path / "tiny", "uint8", coding={"bits_per_image": 2000.0, "plain_start": True})
    x = sample_images(10)
    data = api.compress_images(x, model=model, coding={"plain_start": False}, fallback=False)
    box = Container.from_bytes(data)
    del box.coding["plain_start"]
    old = box.to_bytes()
    assert Container.from_bytes(old).coding.get("plain_start") is None
    assert torch.equal(api.decompress_images(old, model=model), x)
    new = api.compress_images(x, model=model, fallback=False)
    assert Container.from_bytes(new).coding["plain_start"] is True
    assert torch.equal(api.decompress_images(new, model=model), x)


@given(batches=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 5000), st.booleans()), min_size=1, max_size=40))
def test_plan_bytes_round_trip(batches):
    lanes, plan = 1, []
    for units, grow, bits_back in batches:
        lanes += grow
        plan.append(Batch(units, lanes, bits_back))
    n = sum(b.units for b in plan)
    data = plan_to_bytes(plan)
    assert plan_from_bytes(data + b"tail", n) == (plan, len(data))
    with pytest.raises(ValueError):
        plan_from_bytes(data, n + 1)
    with pytest.raises(ValueError):
        plan_from_bytes(data[:-1], n)


def test_stored_plan_survives_images_far_cheaper_than_the_estimate():
    """Blank images cost almost nothing, so a plan from ``bits_per_image`` starves later bits-back
    pops (seeded bits are drawn); a stored plan paced by the message's real content does not."""
    model = tiny_model("uint8")
    x = torch.cat([torch.zeros(40, 28, 28, dtype=torch.uint8), sample_images(24)])
    base = dict(batch=8, lanes_per_image=49, initial_lanes=16, bits_per_image=3000, pop_bits_per_image=300,
                plain_start=True)
    sizes = {}
    for stored in (False, True):
        codec = ContextVAECodec(model, CodingParams(**base, stored_plan=stored))
        data, stats = codec.encode(x)
        assert torch.equal(codec.decode(data, len(x)), x)
        sizes[stored] = (len(data), stats.initial_bits)
    assert sizes[True][1] == 0 < sizes[False][1]
    codec = ContextVAECodec(model, CodingParams(**base, stored_plan=True))
    data, _ = codec.encode(x)
    with pytest.raises(ValueError):
        codec.decode(data, len(x) - 1)  # the stored plan must account for every image


def _plain_heads(model, x, num, z):
    """Each group's raw parameters by the definition: every pixel's features in image order, then
    per pixel of the group (raster order) its features and known neighbours through the head."""
    c = model.config
    h = num.linear(model.dec2, num.linear(model.dec1, num.input(z), relu=True), relu=True)
    f = num.linear(model.up, h.reshape(-1, c.channels), relu=True)
    cells = f.reshape(len(x), model.grid[0], model.grid[1], c.cell, c.cell, c.features)
    image = cells.permute(0, 1, 3, 2, 4, 5).reshape(len(x), c.height * c.width, c.features)
    flat = model.scaled(x).reshape(len(x), -1)
    pad = 0.0 if c.pixels == "binary" else -1.0
    known = torch.cat([flat, torch.full((len(x), 1), pad, dtype=flat.dtype)], 1)
    out = []
    for g in range(model.groups):
        pos = model.positions(g)
        ctx = model._layout()[1][g]
        inputs = torch.cat([image[:, pos], num.input(known[:, ctx]).to(image.dtype)], -1).reshape(-1, image.shape[-1] + ctx.shape[1])
        l1, l2, l3 = model.heads[g]
        y = num.linear(l3, num.linear(l2, num.linear(l1, inputs, relu=True), relu=True))
        out.append(num.value(y).reshape(len(x), pos.numel(), -1))
    return out


@pytest.mark.parametrize("pixels, cell", [("uint8", 4), ("binary", 4), ("uint8", 7), ("binary", 2)])
def test_heads_give_the_plain_definitions_values(pixels, cell):
    """The heads take their group's features straight from the trunk (the outputs of ``up`` for
    the group's sub-grid of a cell, or a gather for odd cells), rows in cell-major order, the
    first layer's input in two parts, and the outputs put back in raster order: exactly the
    plain definition's values in exact numerics, and to float rounding in training's."""
    from bbcodec.models.fixedpoint import ExactNumerics, FloatNumerics, to_grid

    model = tiny_model(pixels, seed=3, cell=cell)
    x = sample_images(5) if pixels == "uint8" else sample_binary(5)
    z = to_grid(torch.randn(5, model.config.latent_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    groups = model.split_groups(x)
    for num, same in ((ExactNumerics(), torch.equal), (FloatNumerics(), lambda a, b: torch.allclose(a, b, atol=1e-5))):
        zz = z if isinstance(num, ExactNumerics) else z.float()
        feats = model.features(zz, num)
        with torch.no_grad():
            expected = _plain_heads(model, x, num, zz)
            for g in range(model.groups):
                assert same(model.head(g, feats, groups[:g], num), expected[g]), (type(num).__name__, g)


def test_round_trip_with_odd_cells():
    model = tiny_model("uint8", seed=4, cell=7)
    x = sample_images(9)
    codec = ContextVAECodec(model, CodingParams(batch=4, lanes_per_image=49, initial_lanes=16))
    data, _ = codec.encode(x)
    assert torch.equal(codec.decode(data, len(x)), x)
