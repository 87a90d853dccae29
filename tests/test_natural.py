"""Colour images with the hierarchical VAE: tiles, padding and cropping, grey and alpha rules."""
import gzip
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from click.testing import CliRunner
from PIL import Image

from bbcodec import api, tiling
from bbcodec.cli import main
from bbcodec.coding_params import CodingParams
from bbcodec.image_codecs import HierarchicalVAECodec
from bbcodec.layout import Layout

from helpers import save_tiny_colour, tiny_colour_model


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return save_tiny_colour(tmp_path_factory.mktemp("m") / "tinyrgb", seed=3)


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.parametrize("h,w,channels,context", [(9, 7, 3, 5), (12, 16, 1, 5), (8, 13, 3, 3), (16, 20, 2, 7)])
def test_context_layout_is_every_earlier_sub_pixel_in_the_window(h, w, channels, context):
    """The vectorised layout against its definition, pixel by pixel: step ``level * C + c`` reads
    the sub-pixels ``(cc, i + di, j + dj)`` of the window (row-major, channels innermost) whose
    step comes earlier, with neighbours outside the image given as ``C * h * w``."""
    from functools import cache

    from bbcodec.models.hierarchical_vae import LEVELS, _layout, level_of

    @cache
    def level(i, j):
        return int(level_of(torch.tensor(i), torch.tensor(j)))

    r, steps = context // 2, _layout(h, w, channels, context)
    assert len(steps) == LEVELS * channels
    for step, (g, c, pos, ctx) in enumerate(steps):
        assert (g, c) == divmod(step, channels)
        assert pos.tolist() == [p for p in range(h * w) if level(p // w, p % w) == g]
        for row, p in zip(ctx.tolist(), pos.tolist()):
            i, j = divmod(p, w)
            want = [cc * h * w + (i + di) * w + j + dj if 0 <= i + di < h and 0 <= j + dj < w else channels * h * w
                    for di in range(-r, r + 1) for dj in range(-r, r + 1) for cc in range(channels)
                    if level(i + di, j + dj) * channels + cc < step]
            assert row == want


def test_known_pixels_kept_for_a_batch_read_as_if_rebuilt():
    """The heads' known sub-pixels, filled step by step (pops) or given all at once (pushes, last
    group first), hold what :meth:`known_from_parts` builds for every entry a head may read: the
    steps before its own. New part tensors (another batch) rebuild the matrix."""
    from bbcodec.image_codecs.hierarchical import _KnownPixels

    net, t = tiny_colour_model(), 8
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (3, 3, t, t), generator=g, dtype=torch.uint8)
    parts, other = net.split_steps(x), net.split_steps(x.flip(0))
    layout = net.layout(t, t)
    known = _KnownPixels(net, t)
    orders = [range(net.steps), reversed(range(net.steps)), [3, 5, 2, 9]]
    for order, source in zip(orders, (parts, parts, other)):
        for step in order:
            matrix = known.of(source[:step])
            want = net.known_from_parts(source[:step], t, t)
            readable = torch.unique(layout[step][3].reshape(-1))
            assert matrix.shape == want.shape and torch.equal(matrix[:, readable], want[:, readable])


@pytest.mark.parametrize("grey", [False, True])
def test_hierarchical_codec_roundtrip(grey):
    model = tiny_colour_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (13, 3, 8, 8), generator=g, dtype=torch.uint8)
    if grey:
        x = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    codec = HierarchicalVAECodec(model, CodingParams(batch=4, lanes_per_image=16, initial_lanes=8, bits_per_image=800), grey=grey)
    data, _ = codec.encode(x)
    assert torch.equal(codec.decode(data, len(x)), x)


def test_posteriors_computed_ahead_give_the_same_bytes(monkeypatch):
    """The encoder's posteriors, computed ahead in a worker thread, are used for every batch and
    change nothing: the bytes equal those of computing each batch's posterior in its own call."""
    import contextlib

    import bbcodec.image_codecs.hierarchical as H
    from bbcodec import threads
    from bbcodec.image_codecs.ahead import RowsAhead

    monkeypatch.setattr(threads, "spare_cpu", lambda: True)

    model = tiny_colour_model()
    x = torch.randint(0, 256, (23, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    codec = HierarchicalVAECodec(model, CodingParams(batch=3, lanes_per_image=16, initial_lanes=8, bits_per_image=800))
    used = []
    rows = RowsAhead.rows
    monkeypatch.setattr(RowsAhead, "rows", lambda self, t: used.append(rows(self, t)) or used[-1])
    ahead, _ = codec.encode(x)
    assert used and all(r is not None for r in used)
    monkeypatch.setattr(H.HierarchicalVAEBitsBack, "posteriors_ahead", lambda self, units, batch: contextlib.nullcontext())
    assert codec.encode(x)[0] == ahead
    assert torch.equal(codec.decode(ahead, len(x)), x)


def test_no_posteriors_ahead_without_a_spare_cpu(monkeypatch):
    """Where the networks' threads use every CPU, no worker thread computes posteriors ahead."""
    from bbcodec import threads
    from bbcodec.image_codecs.ahead import RowsAhead, rows_ahead

    monkeypatch.setattr(threads, "spare_cpu", lambda: False)
    monkeypatch.setattr(RowsAhead, "__init__", lambda *a: pytest.fail("a worker was started"))
    with rows_ahead(torch.zeros(4, 2, dtype=torch.int64), 2, lambda t: (t,)) as ahead:
        assert ahead is None
    model = tiny_colour_model()
    x = torch.randint(0, 256, (7, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    codec = HierarchicalVAECodec(model, CodingParams(batch=3, lanes_per_image=16, initial_lanes=8, bits_per_image=800))
    assert torch.equal(codec.decode(codec.encode(x)[0], len(x)), x)


def test_spare_cpu_counts_the_networks_threads(monkeypatch):
    from bbcodec import threads

    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "_coding_threads", 2)
    assert not threads.spare_cpu()
    monkeypatch.setattr(threads, "_coding_threads", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert threads.spare_cpu()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert not threads.spare_cpu()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(threads, "_cpu_share", 1)  # one of two --jobs workers on the two CPUs
    assert not threads.spare_cpu()


def test_rows_ahead_serves_views_only():
    from concurrent.futures import ThreadPoolExecutor

    from bbcodec.image_codecs.ahead import RowsAhead

    units = torch.arange(7 * 2 * 3, dtype=torch.int64).reshape(7, 2, 3)
    with ThreadPoolExecutor(1) as pool:
        ahead = RowsAhead(units, 3, pool, lambda t: ((t * 2, t + 1), t.sum((1, 2))))
        for a, b in ((0, 7), (1, 2), (2, 5), (3, 6), (6, 7)):
            (twice, plus), sums = ahead.rows(units[a:b])
            assert torch.equal(twice, units[a:b] * 2) and torch.equal(plus, units[a:b] + 1)
            assert torch.equal(sums, units[a:b].sum((1, 2)))
        assert ahead.rows(units[2:5].clone()) is None and ahead.rows(units[:, :1]) is None
        assert ahead.rows(units[::2]) is None and ahead.rows(units[2:5].to(torch.int32)) is None
    with ThreadPoolExecutor(1) as pool:  # in order, as the encoder asks: earlier runs are let go
        ahead = RowsAhead(torch.arange(40, dtype=torch.int64).reshape(40, 1), 2, pool, lambda t: (t,))
        for a in range(0, 40, 5):
            assert torch.equal(ahead.rows(ahead.units[a: a + 5])[0], ahead.units[a: a + 5])
            assert len(ahead.futures) <= 3 + 4 and ahead.submitted <= (a + 5) // 2 + 1 + 4
        assert ahead.rows(ahead.units[0:2]) is None  # let go: the caller computes it itself


@pytest.mark.parametrize("mode, size", [("RGB", (13, 9)), ("L", (10, 7)), ("RGBA", (8, 8)), ("LA", (5, 12))])
def test_pictures_any_size_and_mode(tmp_path, colour_model, mode, size):
    rng = np.random.default_rng(4)
    ch = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], ch), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if ch == 1 else arr, mode)
    src = tmp_path / "pic.png"
    im.save(src)
    run("compress", src, "-m", colour_model, "-q")
    out = tmp_path / "back.png"
    run("decompress", str(src) + ".bbc", "-o", out, "-m", colour_model, "-q")
    back = Image.open(out)
    assert back.mode == mode and back.size == size
    assert np.array_equal(np.asarray(back), np.asarray(Image.open(src)))


def test_ppm(tmp_path, colour_model):
    arr = np.random.default_rng(5).integers(0, 256, (6, 11, 3), dtype=np.uint8)
    src = tmp_path / "p.ppm"
    Image.fromarray(arr, "RGB").save(src)
    run("compress", src, "-m", colour_model, "-q")
    run("decompress", str(src) + ".bbc", "-o", tmp_path / "q.ppm", "-m", colour_model, "-q")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "q.ppm")), arr)


def test_cifar_batch_file_byte_identical(tmp_path, colour_model):
    rng = np.random.default_rng(6)
    rec = np.concatenate([rng.integers(0, 10, (5, 1)), rng.integers(0, 256, (5, 3072))], 1).astype(np.uint8)
    src = tmp_path / "batch.bin.gz"
    src.write_bytes(gzip.compress(rec.tobytes(), compresslevel=9, mtime=0))
    # the tiny model codes 8x8 tiles: a 32x32 image is 16 tiles
    run("compress", src, "-m", colour_model, "-q", "--chunk", "50")
    run("decompress", str(src) + ".bbc", "-o", tmp_path / "b.bin.gz", "-m", colour_model, "-q")
    assert (tmp_path / "b.bin.gz").read_bytes() == src.read_bytes()


@given(n=st.integers(1, 3), h=st.integers(1, 40), w=st.integers(1, 40), t=st.sampled_from([4, 8, 16]))
@settings(max_examples=40, deadline=None)
def test_tiles_roundtrip(n, h, w, t):
    x = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8)
    tiles = tiling.to_tiles(tiling.pad(x, t), t)
    assert tiles.shape == (n * -(-h // t) * -(-w // t), 3, t, t)
    assert torch.equal(tiling.from_tiles(tiles, n, h, w), x)
    # padding repeats the last row and column
    padded = tiling.pad(x, t)
    assert torch.equal(padded[:, :, h:], padded[:, :, h - 1: h].expand_as(padded[:, :, h:]))


def test_tile_size_and_levels():
    assert tiling.tile_size(512, 768, 32, 128) == 128
    assert tiling.tile_size(128, 192, 32, 128) == 64  # 128 would pad 192 up to 256
    assert tiling.tile_size(700, 1000, 32, 128) == 64
    assert tiling.tile_size(32, 32, 32, 128) == 32
    assert tiling.tile_size(100, 100, 32, 0) == 32
    kodak = tiling.levels(512, 768, 32, 128, 256)
    assert kodak == [tiling.Level(512, 768, 128, True, (32,)), tiling.Level(128, 192, 64, False, ())]
    assert kodak[0].tiles_per_image == 4 * 24 + 3 * 6
    assert tiling.levels(32, 32, 32, 128, 256) == [tiling.Level(32, 32, 32, False)]
    assert tiling.levels(100, 300, 32, 128, 0) == [tiling.Level(100, 300, 64, False, (32,))]  # 128 pads more
    assert len(tiling.levels(4000, 3000, 32, 128, 256)) == 3


def test_lead_tiles_ramp_up_where_the_first_pops_outgrow_the_rows_before():
    from bbcodec.plan import SAFETY, lead_tiles

    # one row of 32-pixel patches (64 of them) holds 64 * 3300 bits, SAFETY of it pays for 64-pixel
    # tiles (pop 4 * 20400) but not 128 (16 * 20400) until a third row: a luminance model's ramp
    row = 128 * 512
    assert lead_tiles(128, 6, row, 32, 3300, 20400) == (32, 64, 64)
    assert 2 * 64 * 3300 * SAFETY < 16 * 20400 <= 3 * 64 * 3300 * SAFETY
    # a colour model's first row already pays for 128: the default single row of patches
    assert lead_tiles(128, 6, row, 32, 9000, 20400) == (32,)
    assert lead_tiles(32, 6, row, 32, 3300, 20400) == ()  # tiles no bigger than the patch
    # one row: cut only if it holds many more patches than the plain start codes
    assert lead_tiles(64, 1, 64 * 64, 32, 9000, 20400) == ()
    assert lead_tiles(128, 1, 128 * 128, 32, 9000, 20400) == (32,)
    # pieces are runs of rows with one tile size; the default is the single lead row
    lvl = tiling.levels(768, 512, 32, 128, 256, leads=[(32, 64, 64), ()])[0]
    assert lvl.pieces == [tiling.Piece(32, ((0, 128, 0, 512),)), tiling.Piece(64, ((128, 384, 0, 512),)),
                          tiling.Piece(128, ((384, 768, 0, 512),))]
    assert lvl.tiles_per_image == 64 + 32 + 12
    assert tiling.levels(768, 512, 32, 128, 256, leads=[])[0].lead == (32,)
    for bad in ([(32,)], [(48,), ()], [(33,), ()], [(32,) * 7, ()], [(256,), ()], [(True,), ()]):
        with pytest.raises(ValueError, match="lead tiles"):
            tiling.levels(768, 512, 32, 128, 256, leads=bad)


def test_lead_tiles_are_chosen_stored_and_decoded(colour_model):
    """A grey image coded by a colour model ramps its lead (its pixels cost a third of the colour
    estimate); the file stores the sizes, decodes, and a header with bad ones is a clear error.
    Files that use the default lead do not store the key, as before it existed."""
    x = smooth_images(1, 64, 32, 4)[:, 0].contiguous()
    coding = {"pyramid": 0, "tile": 16, "bits_per_image": 150, "pop_bits_per_image": 300, "adapt": False}
    from bbcodec.zoo import load_model

    layout = Layout(load_model(colour_model), x.shape, coding)
    lead = layout.params.lead_tiles
    assert lead and lead[0][0] == 8 and len(lead[0]) > 1
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    box = api.Container.from_bytes(data)
    assert [list(level) for level in box.coding["lead_tiles"]] == [list(level) for level in lead]
    assert torch.equal(api.decompress_images(data, colour_model), x)
    box.coding["lead_tiles"] = [[8, 12]]
    with pytest.raises(api.BBCodecError, match="corrupt .bbc header"):
        api.decompress_images(box.to_bytes(), colour_model)
    # the default lead, whether chosen or asked for, leaves the header as it was
    for extra in ({}, {"lead_tiles": []}):
        plain = api.Container.from_bytes(api.compress_images(
            x, colour_model, coding={**coding, "bits_per_image": 5000, **extra}, fallback=False))
        assert "lead_tiles" not in plain.coding
        assert torch.equal(api.decompress_images(plain.to_bytes(), colour_model), x)


def test_a_starved_row_of_full_size_tiles_is_cut_smaller_and_coded_again(colour_model):
    """Where the first rows put too few bits in the message for a row of full-size tiles' pops
    (estimates that promise more bits than the image holds), a one-chunk encoder restarts with
    that row cut into half-size tiles: the file stores the longer lead and decodes; the progress
    counts every unit once and ends at the total; an asked lead and a file of several chunks are
    left alone."""
    from bbcodec.segments import Starved, encode_segments
    from bbcodec.zoo import load_model

    x = torch.randint(0, 256, (1, 64, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    coding = {"pyramid": 0, "tile": 16, "bits_per_image": 20000, "pop_bits_per_image": 6000, "adapt": False,
              "plain_start": True, "stored_plan": True}
    loaded = load_model(colour_model)
    layout = Layout(loaded, x.shape, coding)
    assert layout.params.lead_tiles == () and layout.levels[0].lead == (8,)  # the estimates ask for no ramp
    with pytest.raises(Starved) as starved:
        encode_segments(layout.segments(x), stop_if_starved={1: 1})
    assert starved.value.segment == 1 and starved.value.units >= 1
    encode_segments(layout.segments(x), stop_if_starved={1: starved.value.units + 1})  # milder: codes on
    ticks = []
    layout.encode(x, chunk=10_000, progress=lambda n, total: ticks.append((n, total)))
    lead = layout.params.lead_tiles[0]
    assert lead[:2] == (8, 8) and set(lead) == {8}
    assert sum(n for n, _ in ticks) == ticks[0][1] and {t for _, t in ticks} == {ticks[0][1]}
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    assert api.Container.from_bytes(data).coding["lead_tiles"] == [list(lead)]
    assert torch.equal(api.decompress_images(data, colour_model), x)
    asked = api.compress_images(x, colour_model, coding={**coding, "lead_tiles": [[8]]}, fallback=False)
    assert api.Container.from_bytes(asked).coding["lead_tiles"] == [[8]]
    two = torch.cat([x, x.flip(1)])
    several = api.compress_images(two, colour_model, coding=coding, chunk=8, fallback=False)
    assert len(api.Container.from_bytes(several).chunks) == 2
    assert "lead_tiles" not in api.Container.from_bytes(several).coding
    assert torch.equal(api.decompress_images(several, colour_model), two)


@pytest.mark.parametrize("shape, pop", [((1, 128, 40), 6000), ((1, 3, 128, 40), 20000)])
def test_re_leading_rows_with_edge_tiles_keeps_the_rows_already_coded(colour_model, shape, pop):
    """Each re-led row of half-size tiles has a remainder column (the width is not a multiple of
    16): the coding order of the rows before it must not change, or the resumed encoding would
    write a file that does not decode."""
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    coding = {"pyramid": 0, "tile": 32, "bits_per_image": 20000, "pop_bits_per_image": pop, "adapt": False,
              "plain_start": True, "stored_plan": True}
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    box = api.Container.from_bytes(data)
    assert box.coding["edge_tiles"] is True and box.coding["lead_tiles"][0].count(16) >= 2
    assert torch.equal(api.decompress_images(data, colour_model), x)


def test_a_re_lead_that_reorders_coded_rows_starts_afresh(colour_model, monkeypatch):
    """Should a longer lead ever change the order of tiles already coded, the encoder codes the
    chunk again from the start instead of resuming: the bytes of an encoding asked for that lead."""
    x = torch.randint(0, 256, (1, 128, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    coding = {"pyramid": 0, "tile": 32, "bits_per_image": 20000, "pop_bits_per_image": 6000, "adapt": False,
              "plain_start": True, "stored_plan": True}
    from bbcodec import layout as layout_module

    resumes, encode = [], layout_module.encode_segments

    def recording(*args, resume=None, **kwargs):
        resumes.append(resume)
        return encode(*args, resume=resume, **kwargs)

    monkeypatch.setattr(layout_module, "encode_segments", recording)
    monkeypatch.setattr(Layout, "_tile_order", lambda self: [object()])  # never the same prefix
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    lead = api.Container.from_bytes(data).coding["lead_tiles"]
    assert len(lead[0]) > 1 and len(resumes) >= 2 and resumes == [None] * len(resumes)  # re-led, never resumed
    assert data == api.compress_images(x, colour_model, coding={**coding, "lead_tiles": lead}, fallback=False)
    assert torch.equal(api.decompress_images(data, colour_model), x)


def test_small_files_start_with_fewer_lanes(colour_model):
    """Each lane a message starts with costs about 36 bits at the end, so a small file starts with
    fewer (stored, so it decodes), and a large one keeps the model's setting."""
    from bbcodec.plan import INITIAL_LANE_SHARE

    from bbcodec.zoo import load_model

    x = smooth_images(2, 16, 16, 6)
    default = load_model(colour_model).meta.get("coding", {}).get("initial_lanes", 64)
    coding = {"bits_per_image": 400, "adapt": False}
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    lanes = api.Container.from_bytes(data).coding["initial_lanes"]
    assert 1 <= lanes < default
    assert torch.equal(api.decompress_images(data, colour_model), x)
    # the share rule itself: 1e6 estimated bits allow 55 lanes
    assert int(1e6 * INITIAL_LANE_SHARE / 36) == 55
    wide = api.compress_images(x, colour_model, coding={**coding, "bits_per_image": 1e8}, fallback=False)
    assert api.Container.from_bytes(wide).coding["initial_lanes"] == default
    assert torch.equal(api.decompress_images(wide, colour_model), x)
    # a value the caller sets is kept
    asked = api.compress_images(x, colour_model, coding={**coding, "initial_lanes": 40}, fallback=False)
    assert api.Container.from_bytes(asked).coding["initial_lanes"] == 40
    assert torch.equal(api.decompress_images(asked, colour_model), x)


def test_given_tiles_hold_the_subsampled_grid():
    x = torch.randint(0, 256, (2, 3, 29, 45), dtype=torch.uint8)
    lv = tiling.levels(29, 45, 8, 16, 16)
    assert len(lv) == 2 and lv[0].split
    assert lv[0].lead == (8,)  # the first row of 16-pixel tiles is coded as 8-pixel tiles
    full, sub = tiling.level_images(x, lv)
    assert torch.equal(tiling.uncut(tiling.cut(full, lv[0]), 2, lv[0]), x)
    given = tiling.given_image(sub[:, :, :lv[1].h, :lv[1].w], lv[0])
    assert torch.equal(given[:, :, ::4, ::4], full[:, :, ::4, ::4])
    for g, t in zip(tiling.cut(given, lv[0]), tiling.cut(full, lv[0])):
        assert torch.equal(g[:, :, ::4, ::4], t[:, :, ::4, ::4])


@pytest.mark.parametrize("shape", [(2, 3, 29, 45), (1, 41, 16), (1, 3, 9, 30)])
def test_pyramid_and_large_tiles_roundtrip(colour_model, shape):
    from bbcodec.zoo import load_model

    loaded = load_model(colour_model)
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(sum(shape)))
    coding = {"pyramid": 16, "tile": 16, "batch": 4, "lanes_per_image": 4, "initial_lanes": 4, "bits_per_image": 600,
              "pop_bits_per_image": 300}
    layout = Layout(loaded, shape, coding)
    assert len(layout.levels) == (1 if min(shape[-2:]) < 16 else 2)
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    box = api.Container.from_bytes(data)
    assert box.coding["pyramid"] == 16 and box.coding["tile"] == 16
    assert torch.equal(api.decompress_images(data, colour_model), x)
    # several chunks of whole images
    data = api.compress_images(x, colour_model, coding=coding, chunk=1, fallback=False)
    expect = shape[0] if len(layout.levels) > 1 else layout.unit_count()  # whole images / any units
    assert len(api.Container.from_bytes(data).chunks) == expect
    assert torch.equal(api.decompress_images(data, colour_model), x)
    # the negative ELBO counts each coded pixel once
    elbo = layout.negative_elbo(x)
    assert elbo["bits"] > 0


@given(h=st.integers(1, 90), w=st.integers(1, 90), largest=st.sampled_from([8, 16, 32]), pyramid=st.sampled_from([0, 16]),
       lead=st.sampled_from([(), (8,), (8, 16)]))
@settings(max_examples=60, deadline=None)
def test_edge_tiles_cover_each_padded_pixel_once_and_cut_back(h, w, largest, pyramid, lead):
    lv = tiling.levels(h, w, 8, largest, pyramid, edge=True)
    if lead and len(lead) <= lv[0].rows and all(lv[0].tile % t == 0 for t in lead):
        lv = tiling.levels(h, w, 8, largest, pyramid, leads=[lead] + [()] * (len(lv) - 1), edge=True)
    x = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8)
    for lvl, img in zip(lv, tiling.level_images(x, lv)):
        assert all(side % 8 == 0 and side - size < 8 for side, size in zip(lvl.padded, (lvl.h, lvl.w)))
        cover = torch.zeros(lvl.padded, dtype=torch.int64)
        for piece in lvl.pieces:
            for a, b, left, right in piece.rects:
                assert (b - a) % piece.tile == 0 and (right - left) % piece.tile == 0 and piece.tile % 4 == 0
                assert a % 4 == 0 and left % 4 == 0  # on the pyramid's subsampled grid
                cover[a:b, left:right] += 1
        assert bool((cover == 1).all())
        tiles = tiling.cut(img, lvl)
        assert [len(t) for t in tiles] == [2 * p.tiles for p in lvl.pieces]
        assert torch.equal(tiling.uncut(tiles, 2, lvl), img[:, :, :lvl.h, :lvl.w])


def test_edge_tiles_replace_padding_and_small_tiles():
    whole, edge = (tiling.levels(800, 1280, 32, 128, 256, edge=e)[0] for e in (False, True))
    assert whole.tile == 32 and whole.padded == (800, 1280)  # 128 would pad 800 rows to 896
    assert edge.tile == 128 and edge.padded == (800, 1280) and edge.lead == (32,)
    assert [(p.tile, p.rects) for p in edge.pieces] == [
        (32, ((0, 128, 0, 1280),)), (128, ((128, 768, 0, 1280),)), (32, ((768, 800, 0, 1280),))]
    # a remainder on both sides: a column of 64-pixel tiles, then the bottom bands of 64 and 32
    photo = tiling.levels(3024, 4032, 32, 128, 256, edge=True)[0]
    assert photo.padded == (3040, 4032) and photo.rows == 23
    assert [(p.tile, p.rects) for p in photo.pieces][1:] == [
        (128, ((128, 2944, 0, 3968),)), (64, ((128, 2944, 3968, 4032), (2944, 3008, 0, 4032))),
        (32, ((3008, 3040, 0, 4032),))]
    # where whole tiles fit, both tile alike
    fit, edge = (tiling.levels(512, 768, 32, 128, edge=e)[0] for e in (False, True))
    assert (fit.padded, fit.tile, fit.pieces) == (edge.padded, edge.tile, edge.pieces)


@pytest.mark.parametrize("shape", [(1, 3, 40, 56), (2, 3, 43, 37), (1, 56, 40)])
def test_edge_tiles_are_chosen_where_they_tile_otherwise_and_round_trip(colour_model, shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(sum(shape)))
    coding = {"pyramid": 16, "tile": 16, "batch": 4, "lanes_per_image": 4, "initial_lanes": 4, "bits_per_image": 600,
              "pop_bits_per_image": 300}
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    assert api.Container.from_bytes(data).coding["edge_tiles"] is True
    assert torch.equal(api.decompress_images(data, colour_model), x)
    chunked = api.compress_images(x, colour_model, coding=coding, chunk=1, fallback=False)
    assert torch.equal(api.decompress_images(chunked, colour_model), x)
    whole = api.compress_images(x, colour_model, coding={**coding, "edge_tiles": False}, fallback=False)
    assert "edge_tiles" not in api.Container.from_bytes(whole).header_dict()["c"][-1:]  # as files before it
    assert torch.equal(api.decompress_images(whole, colour_model), x)
    # a file whose header lost the flag is decoded with whole tiles: a clear error, not a wrong image
    box = api.Container.from_bytes(data)
    box.coding["edge_tiles"] = False
    with pytest.raises(api.BBCodecError):
        api.decompress_images(box.to_bytes(), colour_model)


def test_edge_tiles_are_not_stored_where_whole_tiles_fit(colour_model):
    x = torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    coding = {"pyramid": 16, "tile": 16}
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    assert api.Container.from_bytes(data).coding.get("edge_tiles", False) is False
    assert data == api.compress_images(x, colour_model, coding={**coding, "edge_tiles": False}, fallback=False)


def test_files_from_before_the_pyramid_still_decode(colour_model):
    """A file whose coding list lacks ``pyramid`` (written before it existed) decodes as unsplit."""
    x = torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    data = api.compress_images(x, colour_model, fallback=False)
    box = api.Container.from_bytes(data)
    assert box.coding["pyramid"] == 0
    del box.coding["pyramid"]
    assert torch.equal(api.decompress_images(box.to_bytes(), colour_model), x)
    # a split file whose header lost the flag cannot decode as if unsplit: a clear error
    split = api.Container.from_bytes(api.compress_images(x, colour_model, coding={"pyramid": 16}, fallback=False))
    del split.coding["pyramid"]
    with pytest.raises(api.BBCodecError):
        api.decompress_images(split.to_bytes(), colour_model)


def test_cli_pyramid_and_tile_options(tmp_path, colour_model):
    arr = np.random.default_rng(8).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    src = tmp_path / "p.png"
    Image.fromarray(arr, "RGB").save(src)
    run("compress", src, "-m", colour_model, "-q", "--no-fallback", "--pyramid", "16", "--tile", "16")
    info = json.loads(run("info", str(src) + ".bbc", "--json").output)
    assert info["coding"]["pyramid"] == 16 and info["coding"]["tile"] == 16
    run("decompress", str(src) + ".bbc", "-o", tmp_path / "q.png", "-m", colour_model, "-q")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "q.png")), arr)


def smooth_images(n, h, w, seed):
    """Images with strong local correlation (a blurred random field), unlike the tiny model's
    training: the encoder's scale shifts then move away from zero."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, h // 4 + 2, w // 4 + 2), generator=g) * 255
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def test_adapted_scale_maps_roundtrip_and_are_stored(colour_model):
    """The encoder fits slopes and output offsets, stores them, and they lower the code length."""
    from bbcodec.zoo import load_model

    x = smooth_images(4, 61, 77, 1)
    coding = {"pyramid": 16, "tile": 16, "adapt": True}
    data = api.compress_images(x, colour_model, coding=coding, fallback=False)
    stored = api.Container.from_bytes(data).coding
    slopes, offsets = stored["scale_slopes"], stored["output_offsets"]
    loaded = load_model(colour_model)
    steps, nout = loaded.model.steps, loaded.model.likelihood.nout
    levels = len(Layout(loaded, x.shape, coding).levels)
    assert levels >= 2 and len(slopes) == len(offsets) == levels
    assert all(len(level) == steps for level in slopes) and all(len(level) in (0, steps * nout) for level in offsets)
    assert any(v != 0 for level in offsets for v in level)
    assert torch.equal(api.decompress_images(data, colour_model), x)
    # the maps lower the model's code length on the data they were chosen for
    adapted = Layout(loaded, x.shape, {**coding, "scale_slopes": slopes, "output_offsets": offsets}).negative_elbo(x)["bits"]
    plain = Layout(loaded, x.shape, {**coding, "adapt": False}).negative_elbo(x)["bits"]
    assert adapted < plain
    # without adapt nothing is stored, and such files decode as before
    data = api.compress_images(x, colour_model, coding={**coding, "adapt": False}, fallback=False)
    assert not any(api.Container.from_bytes(data).coding.get(key) for key in ("scale_slopes", "output_offsets"))
    assert torch.equal(api.decompress_images(data, colour_model), x)


@pytest.mark.parametrize("shape", [(1, 12, 12), (2, 24, 40)])
def test_adapting_costs_its_maps_and_still_saves(colour_model, shape):
    """The stored maps are paid for: a small adapted file, header included, is smaller than the
    same file without adapting, and decodes."""
    x = smooth_images(*shape, 3)
    files = [api.compress_images(x, colour_model, coding={"tile": 16, "adapt": adapt}, fallback=False)
             for adapt in (True, False)]
    assert api.Container.from_bytes(files[0]).coding.get("output_offsets")
    assert len(files[0]) < len(files[1])
    assert torch.equal(api.decompress_images(files[0], colour_model), x)


@pytest.mark.parametrize("grey", [False, True])
def test_explicit_scale_maps_roundtrip(colour_model, grey):
    """Maps given by the caller (shifts and slopes as old files have them, and output offsets) are
    stored as given, change the code, and decode exactly."""
    from bbcodec.zoo import load_model

    model = load_model(colour_model).model
    steps, nout = model.steps, model.likelihood.nout
    x = smooth_images(3, 20, 20, 2)
    x = x[:, 0].contiguous() if grey else x
    shifts = [[(7 * s) % 49 - 16 for s in range(steps)]]
    slopes = [[(5 * s) % 13 - 8 for s in range(steps)]]
    offsets = [[(37 * i) % 4001 - 2000 for i in range(steps * nout)]]
    sizes = set()
    for maps in ({"scale_shifts": shifts, "scale_slopes": slopes}, {"output_offsets": offsets},
                 {"scale_shifts": shifts, "scale_slopes": slopes, "output_offsets": offsets}):
        data = api.compress_images(x, colour_model, coding={**maps, "adapt": True}, fallback=False)
        coding = api.Container.from_bytes(data).coding
        assert all(coding[key] == value for key, value in maps.items())  # given maps are kept
        assert torch.equal(api.decompress_images(data, colour_model), x)
        sizes.add(len(data))
    assert len(sizes) == 3


def test_bad_scale_maps_in_a_header_are_a_clear_error(colour_model):
    from bbcodec.zoo import load_model

    x = smooth_images(1, 20, 20, 3)
    box = api.Container.from_bytes(api.compress_images(x, colour_model, coding={"adapt": True}, fallback=False))
    nout = load_model(colour_model).model.likelihood.nout
    for key, n in (("scale_shifts", 15), ("scale_slopes", 15), ("output_offsets", 15 * nout)):
        good = box.coding.get(key, [])
        for bad in ([[0] * 3], [[0] * n, [0] * n], [[99] * n if n == 15 else [1 << 17] * n], [["a"] * n], [[0.5] * n]):
            box.coding[key] = bad
            with pytest.raises(api.BBCodecError, match="corrupt .bbc header"):
                api.decompress_images(box.to_bytes(), colour_model)
        box.coding[key] = good
    assert torch.equal(api.decompress_images(box.to_bytes(), colour_model), x)


@pytest.mark.parametrize("end_masses", [True, False])
def test_mixture_log_prob_is_the_mixture_of_discretised_logistics(end_masses):
    """The component-major log-probability equals the plain definition, the log of the weighted
    sum of each logistic's mass on the pixel's bin (open bins at 0 and 255), plus the end masses,
    with and without a scale map; batch shapes are kept and gradients flow."""
    from bbcodec.models.likelihoods import LOG_SCALE_OFFSET, LogisticMixtureLikelihood, ScaleMap

    lik = LogisticMixtureLikelihood(3, end_masses=end_masses)
    g = torch.Generator().manual_seed(5)
    raw = torch.randn(2, 400, lik.nout, generator=g, dtype=torch.float64)
    raw[..., lik.nlogits + 3:] = raw[..., lik.nlogits + 3:] * 0.5 - 3  # scales of a few levels
    x = torch.randint(0, 256, (2, 400), generator=g)
    x[0, :20], x[1, :20] = 0, 255
    for scale_map in (None, ScaleMap(0.8, 0.7)):
        got = lik.log_prob(x, raw, scale_map)
        w = torch.softmax(raw[..., :lik.nlogits], -1)
        means = 127.5 * (raw[..., lik.nlogits: lik.nlogits + 3] + 1)
        log_scales = raw[..., lik.nlogits + 3:] + LOG_SCALE_OFFSET
        if scale_map is not None:
            log_scales = log_scales * scale_map.slope + scale_map.shift
        scales = torch.exp(log_scales.clamp(-4, 7))
        xs = x.unsqueeze(-1).double()
        upper = torch.where(xs == 255, torch.ones_like(means), torch.sigmoid((xs + 0.5 - means) / scales))
        lower = torch.where(xs == 0, torch.zeros_like(means), torch.sigmoid((xs - 0.5 - means) / scales))
        mass = upper - lower
        centre = (xs - means) / scales  # a bin's mass under 1e-5 is taken as the density there
        density = torch.exp(centre) / (scales * (1 + torch.exp(centre)) ** 2)
        open_bin = (xs == 0) | (xs == 255)  # one-sided: their mass exactly
        p = (w[..., :3] * torch.where((mass > 1e-5) | open_bin, mass, density)).sum(-1)
        if end_masses:
            p = p + torch.where(x == 0, w[..., 3], 0.0) + torch.where(x == 255, w[..., 4], 0.0)
        keep = p > 1e-6  # (below, the difference of two sigmoids loses digits)
        assert got.shape == x.shape and keep.float().mean() > 0.6
        assert torch.allclose(got[keep], torch.log(p[keep]), rtol=0, atol=1e-9)
    # raw outputs laid out parameter-major in memory (as the scale-map fit keeps them) give the same
    assert torch.equal(lik.log_prob(x, raw.permute(2, 0, 1).contiguous().permute(1, 2, 0)), lik.log_prob(x, raw))
    trained = raw.float().requires_grad_()
    lik.log_prob(x, trained).sum().backward()
    assert torch.isfinite(trained.grad).all() and trained.grad.abs().sum() > 0


def test_output_offsets_are_added_to_the_raw_parameters():
    """A map's offsets act as ``raw + offsets`` before the slope, in training's log-probability and
    in coding's entropy model alike (the same integers: the offsets are on the activation grid)."""
    from bbcodec.models.likelihoods import LogisticMixtureLikelihood, ScaleMap
    from bbcodec.scale_maps import scale_map

    lik = LogisticMixtureLikelihood(3)
    g = torch.Generator().manual_seed(2)
    raw = torch.round(torch.randn(500, lik.nout, generator=g, dtype=torch.float64) * 4096) / 4096
    raw[:, -3:] = raw[:, -3:] * 0.5 - 3
    x = torch.randint(0, 256, (500,), generator=g)
    offsets = [(29 * i) % 801 - 400 for i in range(lik.nout)]
    mapped = scale_map(0, 3, offsets)
    plain = ScaleMap(mapped.slope, 0.0)
    shifted = raw + mapped.offsets
    assert torch.equal(lik.log_prob(x, raw, mapped), lik.log_prob(x, shifted, plain))
    assert not torch.equal(lik.log_prob(x, raw, mapped), lik.log_prob(x, raw, plain))
    a, b = lik.entropy_model(raw, 24, mapped), lik.entropy_model(shifted, 24, plain)
    symbols = torch.arange(256)[:, None].expand(-1, 500)
    assert torch.equal(a.cumulative(symbols), b.cumulative(symbols))


def test_map_fit_beats_every_grid_map_and_keeps_what_it_cannot_improve():
    """The fitted slope and offsets code data spread wider and narrower than the model predicts in
    fewer bits than the best of every old (shift, slope) grid map; data that follows the model
    keeps the model's outputs; a saving too small to pay for offsets takes a map of the
    log-scales alone, and one too small for that, none."""
    from bbcodec.scale_maps import OFFSET_COST_BITS, SHIFT_COST_BITS, SCALE_SHIFT_RANGE, SCALE_SLOPE_RANGE, fit_group_maps, scale_map
    from bbcodec.models.likelihoods import LogisticMixtureLikelihood

    lik = LogisticMixtureLikelihood(2)
    g = torch.Generator().manual_seed(0)
    found = []
    for spread in [0.3, 1.0, 3.0, None]:
        m = 4000
        mean = torch.rand(m, generator=g) * 1.6 - 0.8
        model_log_scale = torch.rand(m, generator=g) * 3 - 5  # raw: scales of 1 to 20 levels
        u = torch.rand(m, generator=g).clamp(1e-6, 1 - 1e-6)
        true_scale = 127.5 * torch.exp(model_log_scale)  # None: as the model says
        if spread is not None:
            true_scale = true_scale ** 0.8 * spread  # a narrower range than the model's
        x = 127.5 * (mean + 1) + true_scale * torch.log(u / (1 - u))
        raw = torch.zeros(m, lik.nout, dtype=torch.float64)
        raw[:, 2:4] = -20.0  # no end masses
        raw[:, 4:6] = mean[:, None].double()
        raw[:, 6:8] = model_log_scale[:, None].double()
        found.append((x.round().clamp(0, 255).long(), raw))
    chosen = fit_group_maps(lik, found, weight=100.0)  # a sample of a large image: offsets pay
    assert chosen[3] is None  # the model is right: no map saves enough to be trusted

    def cost(group, mapping):
        sym, raw = found[group]
        return -float(lik.log_prob(sym, raw, mapping).sum())

    for group in range(3):
        grid = min(cost(group, scale_map(v, k)) for v in range(SCALE_SHIFT_RANGE[0], SCALE_SHIFT_RANGE[1] + 1, 2)
                   for k in range(-8, 5))
        shift, slope, offsets, saving_bits = chosen[group]
        assert saving_bits > 0 and shift == 0 and SCALE_SLOPE_RANGE[0] <= slope <= SCALE_SLOPE_RANGE[1] and len(offsets) == lik.nout
        assert cost(group, scale_map(shift, slope, offsets)) < grid
    # where the saving is a few bits, the offsets do not pay: a map of the log-scales alone, or none
    saving = (cost(1, None) - cost(1, scale_map(*chosen[1][:3]))) / math.log(2)
    weight = 0.5 * OFFSET_COST_BITS * lik.nout / saving
    (cheap,) = fit_group_maps(lik, [found[1]], weight=weight)
    assert cheap.offsets is None and (cost(1, None) - cost(1, scale_map(*cheap[:3]))) * weight / math.log(2) > SHIFT_COST_BITS
    assert fit_group_maps(lik, [found[1]], weight=0.1 * SHIFT_COST_BITS / saving) == [None]


def test_cli_adapt_option(tmp_path, colour_model):
    arr = smooth_images(1, 24, 40, 4)[0].permute(1, 2, 0).numpy()
    src = tmp_path / "p.png"
    Image.fromarray(arr, "RGB").save(src)
    for flag, stored in (("--adapt", True), ("--no-adapt", False)):
        run("compress", src, "-m", colour_model, "-q", "--no-fallback", "-f", flag)
        info = json.loads(run("info", str(src) + ".bbc", "--json").output)
        assert bool(info["coding"].get("output_offsets")) == stored
        assert ("values per level (--json lists them)" in run("info", str(src) + ".bbc").output) == stored
        run("decompress", str(src) + ".bbc", "-o", tmp_path / "q.png", "-m", colour_model, "-q", "-f")
        assert np.array_equal(np.asarray(Image.open(tmp_path / "q.png")), arr)


def test_one_channel_model_codes_grey_images_as_they_are(tmp_path):
    """A hierarchical model trained on luminance (channels=1) codes grey pictures directly."""
    from bbcodec.models.hierarchical_vae import HierarchicalVAE, HierarchicalVAEConfig
    from bbcodec.zoo import save_model

    torch.manual_seed(0)
    cfg = HierarchicalVAEConfig(patch=8, width=8, z1_channels=2, z2_channels=2, features=4, head_hidden=8,
                                context=3, components=2, channels=1)
    meta = {"coding": {"bits_per_image": 500.0, "batch": 8, "lanes_per_image": 8, "initial_lanes": 8,
                       "pyramid": 16, "tile": 16}}
    save_model(HierarchicalVAE(cfg).eval(), tmp_path / "grey", meta)
    x = torch.randint(0, 256, (2, 21, 19), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    data = api.compress_images(x, str(tmp_path / "grey"), fallback=False)
    assert torch.equal(api.decompress_images(data, str(tmp_path / "grey")), x)
    with pytest.raises(api.UsageError, match="1-channel"):
        api.compress_images(torch.zeros((1, 3, 8, 8), dtype=torch.uint8), str(tmp_path / "grey"))
