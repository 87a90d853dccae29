"""The compiled CPU kernels give the torch reference's integers exactly."""

import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

from bbcodec import entropy_models as em
from bbcodec import kernels

pytestmark = pytest.mark.skipif(kernels.numba is None, reason="numba is not installed")


def _both(monkeypatch, fn):
    """``fn()`` with the kernels, then with the torch reference."""
    fast = fn()
    monkeypatch.setenv("BBCODEC_KERNELS", "torch")
    slow = fn()
    monkeypatch.delenv("BBCODEC_KERNELS")
    return fast, slow


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _mixture(seed, lanes, k, spread, end_masses=True, n=256):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(lanes, k, generator=g, dtype=torch.float64) * (n + 40) - 20
    scales = torch.exp(torch.randn(lanes, k, generator=g, dtype=torch.float64) * spread)
    logits = torch.randn(lanes, k + (2 if end_masses else 0), generator=g, dtype=torch.float64) * spread
    return em.LogisticMixture(means, scales, logits=logits, n=n, end_masses=end_masses), g


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 6), spread=st.sampled_from([0.1, 1.0, 4.0, 12.0]),
       end_masses=st.booleans(), n=st.sampled_from([2, 5, 256, 1024]))
def test_mixture_interval_and_lookup_match_torch(seed, k, spread, end_masses, n):
    model, g = _mixture(seed, 300, k, spread, end_masses, n)
    symbols = torch.randint(0, n, (300,), generator=g)
    slots = torch.randint(0, 1 << model.precision, (300,), generator=g)
    mp = pytest.MonkeyPatch()
    try:
        fast, slow = _both(mp, lambda: model.interval(symbols))
        assert _equal(fast, slow)
        fast, slow = _both(mp, lambda: model.lookup(slots))
        assert _equal(fast, slow)
    finally:
        mp.undo()


def test_lookup_inverts_interval_on_every_slot_edge(monkeypatch):
    """Slots at the first and last value of every symbol's interval decode to that symbol."""
    model, g = _mixture(7, 256, 4, 3.0)
    symbols = torch.arange(256)
    start, freq = model.interval(symbols)
    for slots in (start, start + freq - 1):
        sym, lo, f = model.lookup(slots)
        assert torch.equal(sym, symbols) and torch.equal(lo, start) and torch.equal(f, freq)


@pytest.mark.parametrize("n", [1, 3, 1000, 1 << 12, 1 << 16])
def test_uniform_lookup_matches_torch_on_every_slot(n):
    model = em.Uniform(n, (1 << 16,), precision=16)
    slots = torch.arange(1 << 16)
    ours = kernels.lookup(model, slots)
    theirs = model.lookup(slots)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_batch_shapes_and_broadcast_parameters(monkeypatch):
    """Models of any batch shape, with broadcast (non-contiguous) parameters."""
    means = torch.linspace(0, 255, 6, dtype=torch.float64).reshape(1, 1, 6).expand(3, 5, 6)
    model = em.LogisticMixture(means, torch.full((3, 5, 6), 2.0, dtype=torch.float64),
                               logits=torch.zeros(8, dtype=torch.float64), end_masses=True)
    symbols = torch.randint(0, 256, (3, 5))
    fast, slow = _both(monkeypatch, lambda: model.interval(symbols))
    assert _equal(fast, slow) and fast[0].shape == (3, 5)
    slots = torch.randint(0, 1 << 24, (3, 5))
    fast, slow = _both(monkeypatch, lambda: model.lookup(slots))
    assert _equal(fast, slow) and fast[0].shape == (3, 5)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("BBCODEC_KERNELS", "torch")
    assert not kernels.enabled(torch.zeros(1))
    monkeypatch.delenv("BBCODEC_KERNELS")
    assert kernels.enabled(torch.zeros(1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), bits=st.integers(1, 10), spread=st.sampled_from([0.01, 0.3, 1.0, 5.0]),
       conditional=st.booleans())
def test_gaussian_on_bins_matches_torch(seed, bits, spread, conditional):
    g = torch.Generator().manual_seed(seed)
    lanes = 200
    mean = torch.randn(lanes, generator=g, dtype=torch.float64) * 3
    scale = torch.exp(torch.randn(lanes, generator=g, dtype=torch.float64)) * spread
    pm, ps = (torch.randn(lanes, generator=g, dtype=torch.float64), torch.exp(torch.randn(lanes, generator=g, dtype=torch.float64))) \
        if conditional else (0.0, 1.0)
    model = em.GaussianOnBins(mean, scale, bits, pm, ps)
    symbols = torch.randint(0, 1 << bits, (lanes,), generator=g)
    slots = torch.randint(0, 1 << model.precision, (lanes,), generator=g)
    mp = pytest.MonkeyPatch()
    try:
        assert _equal(*_both(mp, lambda: model.interval(symbols)))
        assert _equal(*_both(mp, lambda: model.lookup(slots)))
    finally:
        mp.undo()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 5), spread=st.sampled_from([0.1, 1.0, 10.0, 80.0]),
       end_masses=st.booleans())
def test_mixture_setup_matches_torch(seed, k, spread, end_masses):
    """The compiled constructor gives the torch constructor's parameters bit for bit (softmax by
    table, both normalisations, the sigmoid coordinate map), extreme logits included."""
    mp = pytest.MonkeyPatch()
    try:
        fast, slow = _both(mp, lambda: _mixture(seed, 257, k, spread, end_masses)[0])
    finally:
        mp.undo()
    for name in ("slopes", "intercepts", "weights", "low_mass"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 5), end_masses=st.booleans())
def test_mixture_from_log_scales_matches_exp_scale(seed, k, end_masses):
    """``log_scales=`` stands for ``scales=detmath.exp_scale(log_scales)`` bit for bit, with the
    compiled setup and with the torch one: log-scales on the table's cell edges, beyond its ends
    (clamped) and in between."""
    from bbcodec import detmath

    g = torch.Generator().manual_seed(seed)
    lanes = 300
    means = torch.rand(lanes, k, generator=g, dtype=torch.float64) * 296 - 20
    logits = torch.randn(lanes, k + (2 if end_masses else 0), generator=g, dtype=torch.float64) * 4
    edges = torch.randint(-40 * 2048, 40 * 2048, (lanes, k), generator=g).double() / 2048
    log_scales = torch.where(torch.rand(lanes, k, generator=g) < 0.5, edges,
                             torch.randn(lanes, k, generator=g, dtype=torch.float64) * 12)
    mp = pytest.MonkeyPatch()
    try:
        for make in (lambda: em.LogisticMixture(means, log_scales=log_scales, logits=logits, end_masses=end_masses),
                     lambda: em.LogisticMixture(means, detmath.exp_scale(log_scales), logits=logits,
                                                end_masses=end_masses)):
            fast, slow = _both(mp, make)
            for name in ("slopes", "intercepts", "weights", "low_mass"):
                assert torch.equal(getattr(fast, name), getattr(slow, name)), name
        by_log = em.LogisticMixture(means, log_scales=log_scales, logits=logits, end_masses=end_masses)
    finally:
        mp.undo()
    for name in ("slopes", "intercepts", "weights", "low_mass"):
        assert torch.equal(getattr(by_log, name), getattr(fast, name)), name


def test_mixture_needs_exactly_one_of_scales_and_log_scales():
    means, logits = torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
    with pytest.raises(em.ModelError):
        em.LogisticMixture(means, logits=logits)
    with pytest.raises(em.ModelError):
        em.LogisticMixture(means, torch.ones(2, 1), logits=logits, log_scales=torch.zeros(2, 1))


def test_mixture_setup_split_over_threads_is_identical(coding_threads):
    """The compiled constructor split by lanes over three threads gives the same parameters."""
    one = _mixture(7, 257, 4, 10.0)[0]
    coding_threads(3)
    many = _mixture(7, 257, 4, 10.0)[0]
    for name in ("slopes", "intercepts", "weights", "low_mass"):
        assert torch.equal(getattr(one, name), getattr(many, name)), name


def _message_state(msg):
    return msg.heads.clone(), msg.stream.clone(), msg.initial_words


@pytest.fixture
def coding_threads(monkeypatch):
    """``use(n)``: ``n`` coding threads, and every searched round or mixture of at least two lanes
    split over them."""
    from bbcodec import threads

    before = torch.get_num_threads()

    def use(n):
        if n > 1:
            torch.set_num_threads(1)  # as configure() leaves it for coding
            monkeypatch.setattr(threads, "_coding_threads", n)
            monkeypatch.setattr(kernels, "SPLIT_LANES", 1)
    yield use
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["mixture", "gaussian", "uniform", "bernoulli", "categorical", "betabinomial",
                                  "packed"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("lanes", ["all", "slice", "index"])
def test_rounds_in_one_loop_equal_round_by_round(monkeypatch, coding_threads, kind, lanes, threads):
    """EntropyCodec push and pop through the compiled round loops leave the message exactly as the
    round-by-round reference does: heads, stream words and their order, seeded words drawn when
    popping from a message that runs dry; also with each round's lookups and the intervals split
    over three threads."""
    from bbcodec.ans import Message
    from bbcodec.codecs import EntropyCodec

    coding_threads(threads)

    g = torch.Generator().manual_seed(3)
    width, rounds = 12, 9
    shape = (rounds, 5) if lanes != "all" else (rounds, width)
    if kind == "mixture":
        model = em.LogisticMixture(torch.rand(*shape, 3, generator=g, dtype=torch.float64) * 255,
                                   torch.exp(torch.randn(*shape, 3, generator=g, dtype=torch.float64) * 2),
                                   logits=torch.randn(*shape, 5, generator=g, dtype=torch.float64), end_masses=True)
    elif kind == "gaussian":
        model = em.GaussianOnBins(torch.randn(shape, generator=g, dtype=torch.float64),
                                  torch.rand(shape, generator=g, dtype=torch.float64) + 0.05, 8)
    elif kind == "bernoulli":
        model = em.Bernoulli(torch.rand(shape, generator=g) ** 3)
    elif kind == "packed":
        model = em.PackedBernoulli(torch.rand(*shape, 14, generator=g, dtype=torch.float64) ** 4)
    elif kind == "categorical":
        model = em.Categorical(torch.rand(*shape, 300, generator=g) ** 4)
    elif kind == "betabinomial":
        model = em.BetaBinomial(255, torch.rand(shape, generator=g) * 3 + 0.1, torch.rand(shape, generator=g) + 0.1)
    else:
        model = em.Uniform(1000, shape)
    symbols = torch.randint(0, model.n, shape, generator=g)

    def view(msg):
        if lanes == "slice":
            return msg.view(slice(3, 8))
        if lanes == "index":
            return msg.view(torch.tensor([9, 0, 4, 7, 2]))
        return msg

    def run():
        msg = Message((width,), seed=5, random_heads=True)
        popped = EntropyCodec(model).pop(view(msg))  # bits back from a fresh message: runs dry
        after_pop = _message_state(msg)
        EntropyCodec(model).push(view(msg), symbols)
        after_push = _message_state(msg)
        again = EntropyCodec(model).pop(view(msg))
        return popped, after_pop, after_push, again, _message_state(msg)

    fast, slow = _both(monkeypatch, run)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[3], symbols) and torch.equal(slow[3], symbols)
    for a, b in zip(fast[1:3] + fast[4:], slow[1:3] + slow[4:]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


@pytest.mark.parametrize("lanes", [1, 4000])
def test_categorical_from_probs_split_over_threads_codes_exactly(coding_threads, lanes):
    """Threads that compute categorical intervals or lookups from probabilities at once each write
    their own row scale and quantised row: 4,000 symbols of 256 values pushed and popped over two
    threads come back exactly, with the stream a single thread writes (a shared scale buffer once
    made about 85% of them wrong)."""
    from bbcodec.ans import Message
    from bbcodec.codecs import EntropyCodec

    g = torch.Generator().manual_seed(1)
    probs = torch.distributions.Dirichlet(torch.full((256,), 0.3)).sample((4000,))
    model = em.Categorical(probs.reshape(4000 // lanes, lanes, 256), precision=24)
    symbols = torch.multinomial(probs, 1, generator=g).reshape(4000 // lanes, lanes)

    def coded():
        msg = Message((lanes,))
        EntropyCodec(model).push(msg, symbols)
        data = msg.to_bytes()
        return data, EntropyCodec(model).pop(Message.from_bytes(data))

    one, decoded_one = coded()
    coding_threads(2)
    two, decoded_two = coded()
    assert torch.equal(decoded_one, symbols) and torch.equal(decoded_two, symbols) and one == two


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.sampled_from([2, 3, 17, 256, 1000]), power=st.sampled_from([1, 4, 12]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_categorical_from_probs_codes_like_torch(seed, n, power, dtype):
    """Categorical straight from probabilities (the compiled rounds quantise each row as they go):
    the same intervals, lookups on every interval's edges and message as the torch reference, on
    skewed rows, all-zero (uniform) rows and rows with one huge entry."""
    from bbcodec.ans import Message
    from bbcodec.codecs import EntropyCodec

    g = torch.Generator().manual_seed(seed)
    probs = (torch.rand(6, 7, n, generator=g, dtype=torch.float64) ** power).to(dtype)
    probs[0, 0] = 0
    probs[1, 2, n // 2] = 1e6
    symbols = torch.randint(0, n, (6, 7), generator=g)
    mp = pytest.MonkeyPatch()

    def run():
        model = em.Categorical(probs)
        start, freq = model._interval(symbols) if hasattr(model, "_interval") else model.interval(symbols)
        edges = [model.lookup(start)[0], model.lookup(start + freq - 1)[0]]
        msg = Message((7,), seed=seed % 1000, random_heads=True)
        EntropyCodec(em.Categorical(probs)).push(msg, symbols)
        state = (msg.to_bytes(),)
        return start, freq, *edges, EntropyCodec(em.Categorical(probs)).pop(msg), state

    try:
        fast, slow = _both(mp, run)
    finally:
        mp.undo()
    assert _equal(fast[:5], slow[:5]) and fast[5] == slow[5]
    assert torch.equal(fast[2], symbols) and torch.equal(fast[3], symbols) and torch.equal(fast[4], symbols)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_categorical_prefix_sums_and_checks_match_torch(monkeypatch, dtype):
    g = torch.Generator().manual_seed(11)
    probs = (torch.rand(50, 40, generator=g, dtype=torch.float64) ** 6).to(dtype)
    probs[3] = 0  # an all-zero row: uniform
    probs[4, 7] = 1e-30
    fast, slow = _both(monkeypatch, lambda: em.Categorical(probs)._cum_q)
    assert torch.equal(fast, slow)
    for bad, message in ((float("nan"), "NaN"), (-1.0, "non-negative"), (float("inf"), "finite")):
        p = probs.clone()
        p[5, 2] = bad
        with pytest.raises(em.ModelError, match=message):
            em.Categorical(p)
        monkeypatch.setenv("BBCODEC_KERNELS", "torch")
        with pytest.raises(em.ModelError, match=message):
            em.Categorical(p)
        monkeypatch.delenv("BBCODEC_KERNELS")


_ROUND_TRIP = """
import torch
from bbcodec import kernels, entropy_models as em
from bbcodec.ans import Message
from bbcodec.codecs import EntropyCodec
model = em.Uniform(1000, (3, 16))
symbols = torch.arange(48).reshape(3, 16) * 17
msg = Message((16,), seed=1)
EntropyCodec(model).push(msg, symbols)
assert kernels.codes_rounds(model, msg)
assert torch.equal(EntropyCodec(model).pop(msg), symbols)
print(bool(kernels._REGISTRIES_LOADED))
"""


def test_kernels_load_from_a_cold_and_a_warm_cache(tmp_path):
    """A fresh numba cache: the kernels compile (numba's registries are loaded first); the next
    process loads them from the cache without loading the registries at all."""
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", _ROUND_TRIP], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert [r.stdout.split() for r in runs] == [["True"], ["False"]]
    assert any(tmp_path.rglob("*.nbi"))


@pytest.mark.parametrize("name", ["sigmoid_table", "normal_cdf_table", "exp_neg_table", "exp_table"])
def test_table_matches_torch(name):
    from bbcodec import detmath

    table = getattr(detmath, name)()
    g = torch.Generator().manual_seed(7)
    steps = torch.arange(-3 * 2**12, 3 * 2**12, dtype=torch.float64) / 2**9  # cell edges and between
    t = torch.cat([torch.randn(20000, generator=g, dtype=torch.float64) * 25, steps,
                   torch.tensor([-1e300, -61.0, -20.0, 0.0, 20.0, 1e300, float("inf"), float("-inf")],
                                dtype=torch.float64)]).reshape(4, -1)
    assert torch.equal(kernels.table(table, t), table(t))


def test_bernoulli_models_from_logits_match_torch(monkeypatch):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 2, 14, generator=g, dtype=torch.float64) * 12
    fast, slow = _both(monkeypatch, lambda: (em.PackedBernoulli(logits=logits, precision=24)._p0,
                                             em.Bernoulli(logits=logits[:, 0, 0], precision=24)._freq1))
    assert _equal(fast, slow)
