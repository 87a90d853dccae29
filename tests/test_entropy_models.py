"""Quantised entropy models: valid exact intervals whatever the parameters, deterministic."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from bbcodec import entropy_models as em


def all_intervals(model):
    """(start, freq) of every symbol, shape (*batch, n)."""
    if isinstance(model, em.CDFModel):  # one vectorised call: C(i) for i = 0..n
        idx = torch.arange(model.n + 1).reshape((model.n + 1,) + (1,) * len(model.shape)).expand((model.n + 1,) + model.shape)
        cum = torch.stack([model.cumulative(i.contiguous()) for i in idx.unbind(0)], -1) if model.n <= 64 else None
        if cum is not None:
            return cum[..., :-1], cum[..., 1:] - cum[..., :-1]
    sym = torch.arange(model.n).reshape((model.n,) + (1,) * len(model.shape)).expand((model.n,) + model.shape)
    starts, freqs = [], []
    for s in sym:
        a, b = model.interval(s.contiguous())
        starts.append(a)
        freqs.append(b)
    return torch.stack(starts, -1), torch.stack(freqs, -1)


def assert_valid(model):
    start, freq = all_intervals(model)
    assert bool((freq >= 1).all()), "a symbol got zero frequency"
    assert bool((freq.sum(-1) == (1 << model.precision)).all())
    assert bool((start[..., 0] == 0).all())
    assert torch.equal(start[..., 1:], torch.cumsum(freq, -1)[..., :-1])
    # lookup inverts interval, at both ends of the intervals of (up to 12) symbols
    picks = sorted(set([0, model.n - 1] + torch.randint(0, model.n, (10,)).tolist()))
    for slots in (start, start + freq - 1):
        for k in picks:
            sym, s, f = model.lookup(slots[..., k].contiguous())
            assert bool((sym == k).all())
            assert torch.equal(s, start[..., k]) and torch.equal(f, freq[..., k])


small_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple)
precisions = st.integers(8, 31)
extreme_floats = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, -1e30, 1e30, 1e-300])


@given(shape=small_shapes, p=st.floats(0, 1), precision=st.integers(2, 31))
def test_bernoulli_valid(shape, p, precision):
    assert_valid(em.Bernoulli(torch.full(shape, p), precision=precision))


@given(shape=small_shapes, logit=extreme_floats)
def test_bernoulli_logits_extreme(shape, logit):
    assert_valid(em.Bernoulli(logits=torch.full(shape, logit)))


@given(shape=small_shapes, n=st.integers(1, 40), precision=precisions, seed=st.integers(0, 99),
       kind=st.sampled_from(["dirichlet", "onehot", "zeros", "tiny", "unnormalised"]))
def test_categorical_probs_valid(shape, n, precision, seed, kind):
    g = torch.Generator().manual_seed(seed)
    if kind == "dirichlet":
        p = torch.distributions.Dirichlet(torch.full((n,), 0.3)).sample(shape)
    elif kind == "onehot":
        p = torch.nn.functional.one_hot(torch.randint(0, n, shape, generator=g), n).double()
    elif kind == "zeros":
        p = torch.zeros(shape + (n,))
    elif kind == "tiny":
        p = torch.rand(shape + (n,), generator=g, dtype=torch.float64) * 1e-300
    else:
        p = torch.rand(shape + (n,), generator=g) * 1e6
    assert_valid(em.Categorical(p, precision=max(precision, n.bit_length())))


@given(shape=small_shapes, n=st.integers(1, 20), scale=st.floats(1e-3, 1e4), seed=st.integers(0, 99))
def test_categorical_logits_valid(shape, n, scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape + (n,), generator=g, dtype=torch.float64) * scale
    assert_valid(em.Categorical(logits=logits))


@given(mean=st.floats(-1e3, 1e3), scale=st.floats(1e-6, 1e6), n=st.integers(2, 64), precision=st.integers(8, 31))
def test_logistic_valid(mean, scale, n, precision):
    assert_valid(em.DiscretizedLogistic(torch.full((3,), mean), torch.full((3,), scale), n, precision))


@given(seed=st.integers(0, 99), k=st.integers(1, 5), n=st.integers(2, 300))
def test_logistic_mixture_valid(seed, k, n):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(2, k, generator=g) * 1.4 - 0.2) * n
    scales = torch.exp(torch.randn(2, k, generator=g) * 3)
    assert_valid(em.LogisticMixture(means, scales, logits=torch.randn(2, k, generator=g) * 10, n=n))


@given(alpha=st.floats(1e-3, 1e3), beta=st.floats(1e-3, 1e3), n=st.integers(1, 255))
def test_beta_binomial_valid(alpha, beta, n):
    assert_valid(em.BetaBinomial(n, torch.tensor([alpha]), torch.tensor([beta])))


@given(mean=st.floats(-20, 20), scale=st.floats(1e-6, 1e3), bits=st.integers(1, 9),
       pm=st.floats(-5, 5), ps=st.floats(1e-3, 10))
def test_gaussian_bins_valid(mean, scale, bits, pm, ps):
    assert_valid(em.GaussianOnBins(torch.tensor([mean]), torch.tensor([scale]), bits, pm, ps, precision=24))


def test_uniform_valid():
    for n in (1, 2, 3, 255, 256, 1000):
        assert_valid(em.Uniform(n, (2,)))


@pytest.mark.parametrize("make", [
    lambda: em.Bernoulli(torch.tensor([0.5, float("nan")])),
    lambda: em.Bernoulli(logits=torch.tensor([float("nan")])),
    lambda: em.Bernoulli(torch.tensor([1.5])),
    lambda: em.Categorical(torch.tensor([[0.5, float("nan")]])),
    lambda: em.Categorical(torch.tensor([[0.5, -0.1]])),
    lambda: em.Categorical(logits=torch.tensor([[0.0, float("nan")]])),
    lambda: em.Categorical(torch.tensor(0.5)),
    lambda: em.DiscretizedLogistic(torch.zeros(3), torch.ones(2)),
    lambda: em.DiscretizedLogistic(torch.zeros(3), torch.zeros(3)),
    lambda: em.DiscretizedLogistic(torch.tensor([float("nan")]), torch.ones(1)),
    lambda: em.LogisticMixture(torch.zeros(3, 2), torch.ones(3, 2), weights=torch.zeros(3, 2)),
    lambda: em.GaussianOnBins(torch.zeros(2), torch.ones(3), 4),
    lambda: em.BetaBinomial(10, torch.tensor([0.0]), torch.tensor([1.0])),
    lambda: em.Bernoulli(torch.tensor([0.5]), precision=0),
    lambda: em.Categorical(torch.ones(1, 300), precision=8),
])
def test_invalid_parameters_raise(make):
    with pytest.raises(em.ModelError):
        make()


@pytest.mark.parametrize("bad", [torch.tensor([2]), torch.tensor([-1]), torch.tensor([[0]]), torch.tensor([0.5])])
def test_invalid_symbols_raise(bad):
    with pytest.raises(em.ModelError):
        em.Bernoulli(torch.tensor([0.5])).checked_interval(bad)


def _logistic_intervals(shape_view):
    g = torch.Generator().manual_seed(7)
    mean = torch.rand(6000, generator=g, dtype=torch.float64) * 255
    scale = torch.exp(torch.randn(6000, generator=g, dtype=torch.float64) * 2)
    x = torch.randint(0, 256, (6000,), generator=g)
    m = em.LogisticMixture(torch.stack([mean, 255 - mean], -1).reshape(shape_view + (2,)),
                           torch.stack([scale, scale * 2], -1).reshape(shape_view + (2,)),
                           logits=torch.zeros(shape_view + (2,)))
    return [t.reshape(-1) for t in m.interval(x.reshape(shape_view))]


def test_intervals_do_not_depend_on_batch_shape_or_threads():
    ref = _logistic_intervals((6000,))
    threads = torch.get_num_threads()
    try:
        for shape, nthreads in [((2, 3000), 1), ((6000,), 1), ((3, 2000), 2), ((6000, 1), 2)]:
            torch.set_num_threads(nthreads)
            got = _logistic_intervals(shape)
            assert all(torch.equal(a, b) for a, b in zip(got, ref))
    finally:
        torch.set_num_threads(threads)


def test_information_content():
    m = em.Bernoulli(torch.tensor([0.25]), precision=16)
    bits = m.information(torch.tensor([1]))
    assert abs(bits.item() - 2.0) < 1e-3


@given(shape=small_shapes, k=st.integers(1, 6), scale=st.floats(0, 80), seed=st.integers(0, 99),
       precision=st.integers(6, 31))
def test_packed_bernoulli_valid(shape, k, scale, seed, precision):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape + (k,), generator=g, dtype=torch.float64) * scale
    assert_valid(em.PackedBernoulli(logits=logits, precision=max(precision, k)))


def test_packed_bernoulli_pack_unpack_and_cost():
    bits = torch.randint(0, 2, (7, 16))
    assert torch.equal(em.PackedBernoulli.unpack(em.PackedBernoulli.pack(bits), 16), bits)
    p = torch.full((7, 16), 0.999999)
    model = em.PackedBernoulli(p)
    ones = em.PackedBernoulli.pack(torch.ones(7, 16, dtype=torch.long))
    # 16 near-certain bits cost about 16 * -log2(0.999999) bits, not 16 * 2**-15
    assert float(model.information(ones).max()) < 1e-3


@pytest.mark.parametrize("lanes", [7, 300, 3000])  # 16-way search below SMALL_SEARCH lanes, bisection above
def test_mixture_lookup_matches_brute_force(lanes):
    gen = torch.Generator().manual_seed(lanes)
    means = torch.rand(lanes, 3, generator=gen, dtype=torch.float64) * 300 - 20
    scales = torch.exp(torch.randn(lanes, 3, generator=gen, dtype=torch.float64) * 2)
    logits = torch.randn(lanes, 5, generator=gen, dtype=torch.float64) * 3
    model = em.LogisticMixture(means, scales, logits=logits, end_masses=True)
    table = torch.stack([model.cumulative(torch.full((lanes,), i)) for i in range(model.n + 1)], 1)
    slot = torch.randint(0, 1 << model.precision, (lanes,), generator=gen)
    expected = (table[:, 1:] <= slot.unsqueeze(1)).sum(1)  # largest i with C(i) <= slot
    sym, start, freq = model.lookup(slot)
    assert torch.equal(sym, expected)
    assert torch.equal(start, table.gather(1, sym.unsqueeze(1))[:, 0])
    assert torch.equal(start + freq, table.gather(1, sym.unsqueeze(1) + 1)[:, 0])


@pytest.mark.parametrize("kernels_off", [False, True])
def test_many_symbols_keep_their_prefix_sums_in_int32(monkeypatch, kernels_off):
    """Flat rows of 512 and more symbols once summed past 2**31 (22-bit weights each): negative
    frequencies. Above 511 symbols the weights get fewer bits; below, nothing changes."""
    from bbcodec.ans import Message
    from bbcodec.codecs import EntropyCodec

    if kernels_off:
        monkeypatch.setenv("BBCODEC_KERNELS", "torch")
    for model in (em.Categorical(torch.ones(3, 1000)), em.Categorical(logits=torch.zeros(3, 4096, dtype=torch.float64)),
                  em.BetaBinomial(700, torch.ones(3), torch.ones(3))):
        symbols = torch.tensor([0, model.n // 2, model.n - 1])
        start, freq = model.interval(symbols)
        assert bool((freq > 0).all()) and int(freq.sum()) <= 3 << model.precision
        msg = Message((3,))
        EntropyCodec(model).push(msg, symbols)
        assert torch.equal(EntropyCodec(model).pop(msg), symbols)
    small = em.Categorical(torch.ones(511))
    assert int(small._cum_q[-1]) == 511 << 22  # unchanged below 512 symbols
