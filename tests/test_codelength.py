"""Code length against the ideal information content, and against constriction as an oracle."""
import numpy as np
import pytest
import torch

from bbcodec import codecs as C
from bbcodec import entropy_models as em
from bbcodec.ans import Message

LANES, ROUNDS = 1000, 1000  # a million symbols


def coded_bits(model, x, lanes):
    msg = Message(lanes)
    C.EntropyCodec(model).push(msg, x)
    decoded = C.EntropyCodec(model).pop(Message.from_bytes(msg.to_bytes()))
    assert torch.equal(decoded, x)
    return msg.bits()


def sample(model, gen):
    slot = torch.randint(0, 1 << model.precision, model.shape, generator=gen)
    return model.lookup(slot)[0]


MODELS = {
    "bernoulli": lambda g: em.Bernoulli(logits=torch.randn(ROUNDS, LANES, generator=g) * 4),
    "categorical16": lambda g: em.Categorical(torch.softmax(torch.randn(ROUNDS, LANES, 16, generator=g) * 3, -1)),
    "logistic_mixture": lambda g: em.LogisticMixture(
        torch.rand(ROUNDS, LANES, 2, generator=g) * 255, torch.exp(torch.randn(ROUNDS, LANES, 2, generator=g) * 2),
        logits=torch.randn(ROUNDS, LANES, 2, generator=g)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_million_symbols_within_0p1_percent_of_information(name):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MODELS[name](gen)
    x = sample(model, gen)
    info = model.information(x).sum().item()
    fixed_head_bits = LANES * (31 + 5)  # each head starts at 2**31 and stores a 5-bit length
    bits = coded_bits(model, x, (LANES,))
    assert bits >= info - LANES  # cannot beat the information content (up to rounding per lane)
    assert bits <= 1.001 * info + fixed_head_bits, (bits, info)


def test_constriction_oracle_same_integer_frequencies():
    constriction = pytest.importorskip("constriction")
    gen = torch.Generator().manual_seed(1)
    n, count = 256, 4000
    p = torch.distributions.Dirichlet(torch.full((n,), 0.3)).sample((count,))
    model = em.Categorical(p, precision=24)
    x = sample(model, gen)
    freqs = torch.stack([model.interval(torch.full((count,), k))[1] for k in range(n)], -1)
    probs = (freqs.double() / 2**24).numpy()  # exactly representable: constriction keeps them
    coder = constriction.stream.stack.AnsCoder()
    cmodel = constriction.stream.model.Categorical(perfect=False)
    coder.encode_reverse(x.numpy().astype(np.int32), cmodel, probs)
    info = model.information(x).sum().item()
    assert abs(coder.num_bits() - info) <= 64  # constriction codes our frequencies exactly
    ours = coded_bits(model[:, None], x[:, None], (1,))  # one lane: the same serial rANS
    assert abs(ours - coder.num_bits()) <= 96
    assert np.array_equal(coder.decode(cmodel, probs), x.numpy())
