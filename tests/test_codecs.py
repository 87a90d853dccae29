"""Every codec round-trips exactly, over random shapes and extreme distributions."""
import pytest
import torch
from hypothesis import given, strategies as st

from bbcodec import codecs as C
from bbcodec import entropy_models as em
from bbcodec.ans import Message

lane_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=2).map(tuple)
round_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def roundtrip(codec, x, lanes, device="cpu", prefill=True):
    msg = Message(lanes, device=device, random_heads=True)
    if prefill:
        msg.push_bits(torch.randint(0, 1 << 30, lanes, device=device), 30)
    ref = msg.clone()
    codec.push(msg, x)
    msg = Message.from_bytes(msg.to_bytes(), device=device)
    y = codec.pop(msg)
    assert same(y, x)
    assert torch.equal(msg.heads, ref.heads) and torch.equal(msg.stream, ref.stream)
    return y


def same(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
    return torch.equal(torch.as_tensor(a).cpu().long(), torch.as_tensor(b).cpu().long())


def sample_symbols(gen, model):
    """Symbols drawn from the quantised model itself (so extreme models give typical symbols),
    mixed with uniformly random ones (so rare symbols are exercised too)."""
    slot = torch.randint(0, 1 << model.precision, model.shape, generator=gen)
    drawn, _, _ = model.lookup(slot)
    rare = torch.randint(0, model.n, model.shape, generator=gen)
    return torch.where(torch.rand(model.shape, generator=gen) < 0.2, rare, drawn)


def check_model_codec(model, seed, lanes):
    gen = torch.Generator().manual_seed(seed)
    roundtrip(C.EntropyCodec(model), sample_symbols(gen, model), lanes)


@given(lanes=lane_shapes, rounds=round_shapes, seed=st.integers(0, 10**6), scale=st.floats(0, 60))
def test_bernoulli_codec(lanes, rounds, seed, scale):
    g = torch.Generator().manual_seed(seed)
    check_model_codec(em.Bernoulli(logits=torch.randn(rounds + lanes, generator=g) * scale), seed, lanes)


@given(lanes=lane_shapes, rounds=round_shapes, seed=st.integers(0, 10**6), n=st.integers(1, 300),
       conc=st.floats(0.001, 10))
def test_categorical_codec(lanes, rounds, seed, n, conc):
    p = torch.distributions.Dirichlet(torch.full((n,), conc)).sample(rounds + lanes)
    check_model_codec(em.Categorical(p), seed, lanes)


@given(lanes=lane_shapes, seed=st.integers(0, 10**6), n=st.integers(2, 256), temp=st.floats(0.01, 1e4))
def test_categorical_logits_codec(lanes, seed, n, temp):
    g = torch.Generator().manual_seed(seed)
    check_model_codec(em.Categorical(logits=torch.randn(lanes + (n,), generator=g) * temp), seed, lanes)


@given(lanes=lane_shapes, seed=st.integers(0, 10**6), n=st.integers(1, 255), log_conc=st.floats(-5, 6))
def test_beta_binomial_codec(lanes, seed, n, log_conc):
    g = torch.Generator().manual_seed(seed)
    a = torch.exp(torch.randn(lanes, generator=g) + log_conc)
    b = torch.exp(torch.randn(lanes, generator=g) + log_conc)
    check_model_codec(em.BetaBinomial(n, a, b), seed, lanes)


@given(lanes=lane_shapes, rounds=round_shapes, seed=st.integers(0, 10**6), log_scale=st.floats(-12, 8))
def test_logistic_codec(lanes, rounds, seed, log_scale):
    g = torch.Generator().manual_seed(seed)
    mean = torch.rand(rounds + lanes, generator=g) * 300 - 20
    scale = torch.exp(torch.randn(rounds + lanes, generator=g) + log_scale)
    check_model_codec(em.DiscretizedLogistic(mean, scale), seed, lanes)


@given(lanes=lane_shapes, seed=st.integers(0, 10**6), k=st.integers(1, 6), log_scale=st.floats(-10, 6))
def test_logistic_mixture_codec(lanes, seed, k, log_scale):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(lanes + (k,), generator=g) * 255
    scales = torch.exp(torch.randn(lanes + (k,), generator=g) * 2 + log_scale)
    check_model_codec(em.LogisticMixture(means, scales, logits=torch.randn(lanes + (k,), generator=g) * 5), seed, lanes)


@given(lanes=lane_shapes, seed=st.integers(0, 10**6), bits=st.integers(1, 12), log_scale=st.floats(-14, 3),
       conditional=st.booleans())
def test_gaussian_latent_codecs(lanes, seed, bits, log_scale, conditional):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(lanes, generator=g) * 3
    scale = torch.exp(torch.randn(lanes, generator=g) + log_scale)
    if conditional:
        pm, ps = torch.randn(lanes, generator=g), torch.exp(torch.randn(lanes, generator=g))
    else:
        pm, ps = 0.0, 1.0
    check_model_codec(em.GaussianOnBins(mean, scale, bits, pm, ps), seed, lanes)
    roundtrip(C.StdGaussianLatent(lanes, bits), torch.randint(0, 1 << bits, lanes, generator=g), lanes)


@given(lanes=lane_shapes, n=st.integers(1, 2**31), seed=st.integers(0, 10**6))
def test_uniform_codec(lanes, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(lanes, generator=g, dtype=torch.float64) * n).long()
    roundtrip(C.Uniform(n, lanes), x, lanes)


def test_combinators():
    lanes = (4, 6)
    g = torch.Generator().manual_seed(0)
    codec = C.Sequence([
        C.Bernoulli(torch.rand(lanes, generator=g)),
        C.View(C.Categorical(torch.rand(2, 3, 9, generator=g)), lanes=(slice(1, 3), slice(0, 3))),
        C.View(C.Uniform(100, (24,)), shape=(24,)),
        C.Repeat(C.View(C.Uniform(7, (4,)), lanes=(slice(None), 5)), 3),
    ])
    x = (torch.randint(0, 2, lanes, generator=g), torch.randint(0, 9, (2, 3), generator=g),
         torch.randint(0, 100, (24,), generator=g), [torch.randint(0, 7, (4,), generator=g) for _ in range(3)])
    roundtrip(codec, x, lanes)


def toy_bbans(shape, bits=8):
    """A latent-variable model over bits: z ~ N(0,1); x | z ~ Bernoulli(sigmoid(3z))."""
    prior = C.StdGaussianLatent(shape, bits)

    def likelihood(z):
        return C.Bernoulli(logits=3 * em.bin_centres(z, bits))

    def posterior(x):
        return C.DiagGaussianLatent(x.double() * 1.2 - 0.6, torch.full(shape, 0.5, dtype=torch.float64), bits)

    return C.BBANS(prior, likelihood, posterior)


def test_bbans_roundtrip_and_startup_from_empty_message(device):
    shape = (5, 7)
    codec = toy_bbans(shape)
    msg = Message(shape, device=device, random_heads=True)
    xs = [torch.randint(0, 2, shape, device=device) for _ in range(30)]
    start = msg.heads.clone()
    for x in xs:
        codec.push(msg, x)
    msg = Message.from_bytes(msg.to_bytes(), device=device)
    for x in reversed(xs):
        assert torch.equal(codec.pop(msg), x)
    assert torch.equal(msg.heads, start)


def test_codec_rejects_bad_symbols():
    codec = C.Bernoulli(torch.full((3,), 0.5))
    for bad in (torch.tensor([0, 1]), torch.tensor([0, 1, 2]), torch.tensor([0.0, 1.0, 0.0])):
        with pytest.raises(em.ModelError):
            codec.push(Message((3,)), bad)
    with pytest.raises(em.ModelError):
        C.Bernoulli(torch.full((2, 5), 0.5)).push(Message((3,)), torch.zeros(2, 5, dtype=torch.long))


def test_codecs_on_device(device):
    g = torch.Generator().manual_seed(5)
    lanes = (16,)
    p = torch.softmax(torch.randn(3, 16, 256, generator=g), -1).to(device)
    x = torch.distributions.Categorical(p.cpu()).sample().to(device)
    roundtrip(C.Categorical(p), x, lanes, device=device)
    mean, scale = (torch.rand(16, generator=g) * 255).to(device), torch.rand(16, generator=g).to(device) + 0.1
    roundtrip(C.DiscretizedLogistic(mean, scale), torch.randint(0, 256, (16,), generator=g).to(device), lanes, device=device)


@given(lanes=lane_shapes, rounds=round_shapes, seed=st.integers(0, 10**6), k=st.integers(1, 16), scale=st.floats(0, 40))
def test_packed_bernoulli_codec(lanes, rounds, seed, k, scale):
    g = torch.Generator().manual_seed(seed)
    check_model_codec(em.PackedBernoulli(logits=torch.randn(rounds + lanes + (k,), generator=g) * scale), seed, lanes)


@given(lanes=st.integers(1, 12), shape=st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple),
       seed=st.integers(0, 10**6))
def test_spread_any_shape_over_lanes(lanes, shape, seed):
    g = torch.Generator().manual_seed(seed)
    model = em.Categorical(torch.rand(shape + (5,), generator=g))
    roundtrip(C.Spread(model), sample_symbols(g, model), (lanes,))
    roundtrip(C.Spread(model), sample_symbols(g, model), (2, lanes))


def test_autoregressive_groups():
    g = torch.Generator().manual_seed(0)
    lanes = (6,)

    def group_codec(i, previous):
        # group i's distribution depends on the sum of the groups before it
        bias = sum((p.double() for p in previous), torch.zeros(4, dtype=torch.float64))
        return C.Spread(em.Bernoulli(logits=bias - 1.5 + i))

    x = tuple(torch.randint(0, 2, (4,), generator=g) for _ in range(3))
    roundtrip(C.AutoregressiveGroups(group_codec, 3), x, lanes)


def test_mixture_with_end_masses():
    g = torch.Generator().manual_seed(3)
    model = em.LogisticMixture(torch.rand(5, 2, generator=g) * 255, torch.rand(5, 2, generator=g) * 9 + 0.1,
                               logits=torch.randn(5, 4, generator=g) * 3, end_masses=True)
    x = torch.tensor([0, 255, 17, 0, 255])
    roundtrip(C.EntropyCodec(model), x, (5,))
    assert float(model.information(torch.zeros(5, dtype=torch.long)).max()) < 30
