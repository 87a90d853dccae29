"""The rANS message: exact push/pop inverses, serialisation, lane growth, start-up bits."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from bbcodec.ans import HEAD_MIN, ANSError, Message, check_interval

shapes = st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple)


def random_intervals(gen, shape, precision, rounds):
    out = []
    for _ in range(rounds):
        total = 1 << precision
        freq = torch.randint(1, total + 1, shape, generator=gen)
        # bias towards small frequencies (many renormalisations)
        small = torch.rand(shape, generator=gen) < 0.5
        freq = torch.where(small, torch.clamp(freq >> torch.randint(0, precision, shape, generator=gen), min=1), freq)
        start = (torch.rand(shape, generator=gen, dtype=torch.float64) * (total - freq + 1)).long()
        out.append((start, freq))
    return out


@given(shape=shapes, precision=st.integers(1, 31), rounds=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_push_pop_inverse(shape, precision, rounds, seed):
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    msg = Message(shape, device=device)
    intervals = random_intervals(gen, shape, precision, rounds)
    for start, freq in intervals:
        check_interval(start, freq, precision)
        msg.push(start.to(device), freq.to(device), precision)
    again = Message.from_bytes(msg.to_bytes(), device=device)
    assert torch.equal(again.heads, msg.heads) and torch.equal(again.stream, msg.stream)
    for start, freq in reversed(intervals):
        slot = again.peek(precision).cpu()
        assert bool(((slot >= start) & (slot < start + freq)).all())
        again.pop(start.to(device), freq.to(device), precision)
    assert bool((again.heads == HEAD_MIN).all()) and again.stream_words == 0 and again.initial_words == 0


def test_push_pop_on_device(device):
    gen = torch.Generator().manual_seed(1)
    msg = Message((64, 3), device=device)
    intervals = random_intervals(gen, (64, 3), 24, 50)
    for s, f in intervals:
        msg.push(s.to(device), f.to(device), 24)
    for s, f in reversed(intervals):
        msg.pop(s.to(device), f.to(device), 24)
    assert bool((msg.heads == HEAD_MIN).all()) and msg.stream_words == 0


@given(nbits=st.integers(1, 31), lanes=st.integers(1, 50), seed=st.integers(0, 1000))
def test_pop_then_push_is_identity_and_counts_initial_bits(nbits, lanes, seed):
    """Bits-back order: popping from an empty message draws counted seeded words."""
    msg = Message((lanes,), seed=seed, random_heads=True)
    start = msg.heads.clone()
    assert msg.initial_bits == 31 * lanes
    values = msg.pop_bits(nbits)
    assert msg.initial_words == lanes  # every lane fell below 2**31 and read one seeded word
    assert bool((values >= 0).all()) and bool((values < (1 << nbits)).all())
    msg.push_bits(values, nbits)
    assert torch.equal(msg.heads, start)
    assert msg.stream_words == lanes  # the seeded words come back as junk at the bottom
    assert msg.holds_only_seeded_words()
    msg._words[0] ^= 1
    assert not msg.holds_only_seeded_words()


def test_fresh_plain_heads_pop_zero_but_random_heads_do_not():
    plain = Message((200,)).pop_bits(16)
    assert bool((plain == 0).all())
    rand = Message((200,), random_heads=True).pop_bits(16)
    assert rand.unique().numel() > 150


def test_seeded_words_depend_on_seed_and_are_deterministic():
    a, b, c = (Message((8,), seed=s, random_heads=True) for s in (1, 1, 2))
    va, vb, vc = a.pop_bits(31), b.pop_bits(31), c.pop_bits(31)
    assert torch.equal(a.pop_bits(31), b.pop_bits(31))
    assert torch.equal(va, vb) and not torch.equal(va, vc)


@given(old=st.integers(1, 20), extra=st.integers(0, 70), seed=st.integers(0, 100))
def test_grow_shrink_inverse(old, extra, seed):
    gen = torch.Generator().manual_seed(seed)
    msg = Message((old,))
    for s, f in random_intervals(gen, (old,), 16, 30):
        msg.push(s, f, 16)
    for row in torch.randint(0, 1 << 31, (-(-extra * 32 // old) + 1, old), generator=gen):
        msg.push_bits(row, 31)
    ref = msg.clone()
    msg.grow((old + extra,))
    assert msg.lane_shape == (old + extra,)
    assert bool((msg.heads >= HEAD_MIN).all())
    msg.shrink((old,))
    assert torch.equal(msg.heads, ref.heads) and torch.equal(msg.stream, ref.stream)
    assert msg.initial_words == ref.initial_words


def test_grow_without_data_draws_counted_seeded_words_and_still_inverts():
    msg = Message((2,))
    msg.push_bits(torch.tensor([5, 6]), 8)
    heads = msg.heads.clone()
    msg.grow((10,))
    assert msg.initial_words > 0
    msg.shrink((2,))
    assert torch.equal(msg.heads, heads)


def test_grown_lanes_cost_no_startup_bits_when_data_is_there():
    gen = torch.Generator().manual_seed(0)
    msg = Message((4,))
    for s, f in random_intervals(gen, (4,), 31, 200):
        msg.push(s, f, 31)
    before = msg.bits()
    msg.grow((64,))
    assert msg.initial_words == 0
    # 60 new heads of ~31 bits each were paid for by popping 60 * 31 bits
    assert abs(msg.bits() - before) < 60 * 8


def test_views_compose_and_order_is_deterministic():
    msg = Message((4, 5))
    v = msg.view((slice(1, 3), slice(None)))
    vv = v.view((0, slice(0, 2)))
    s = torch.tensor([3, 4])
    vv.push(s, torch.ones_like(s), 4)
    assert msg.heads[1, 0].item() != HEAD_MIN and msg.heads[0, 0].item() == HEAD_MIN
    r = msg.reshape((20,))
    assert r.lane_shape == (20,)
    slot = vv.peek(4)
    assert torch.equal(slot, s)
    vv.pop(s, torch.ones_like(s), 4)
    assert bool((msg.heads == HEAD_MIN).all())


@pytest.mark.parametrize("cut", [0, 3, 10, -1, -5])
def test_truncated_bytes_raise(cut):
    msg = Message((3, 2))
    msg.push_bits(torch.arange(6).reshape(3, 2), 20)
    for _ in range(5):
        msg.push_bits(torch.full((3, 2), 12345), 31)
    data = msg.to_bytes()
    with pytest.raises(ANSError):
        Message.from_bytes(data[:cut] if cut >= 0 else data[:cut])


def test_bad_magic_and_padding_raise():
    data = Message((2,)).to_bytes()
    with pytest.raises(ANSError):
        Message.from_bytes(b"xxxx" + data[4:])
    with pytest.raises(ANSError):
        Message.from_bytes(data + b"\x00\x00\x00")


def test_bits_matches_serialised_size():
    gen = torch.Generator().manual_seed(3)
    msg = Message((33,))
    for s, f in random_intervals(gen, (33,), 20, 25):
        msg.push(s, f, 20)
    data = msg.to_bytes()
    header = 4 + 1 + 8 + 8
    assert len(data) - header == (msg.bits() + 7) // 8 or len(data) - header == -(-(msg.bits() - 32 * msg.stream_words) // 8) + 4 * msg.stream_words


def test_shape_mismatch_raises():
    msg = Message((3,))
    with pytest.raises(ANSError):
        msg.push(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), 8)


def test_check_interval_rejects_bad_input():
    with pytest.raises(ANSError):
        check_interval(torch.tensor([0]), torch.tensor([0]), 8)
    with pytest.raises(ANSError):
        check_interval(torch.tensor([250]), torch.tensor([10]), 8)
    with pytest.raises(ANSError):
        check_interval(torch.tensor([0]), torch.tensor([1]), 32)
