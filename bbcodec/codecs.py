"""Codecs: composable push/pop pairs over ANS messages (in the spirit of craystack).

A codec has two methods, exact inverses of each other::

    codec.push(message, symbols)    # encode symbols onto the message (in place)
    symbols = codec.pop(message)    # decode them again (in place)

``message`` is a :class:`bbcodec.ans.Message` or a view of some of its lanes. Leaf codecs wrap an
:class:`bbcodec.entropy_models.EntropyModel` whose batch shape is ``(*rounds, *lane_shape)``: the
symbols of one round go one per lane, rounds are coded one after another, so a message with few
lanes can still carry a large tensor. Combinators build bigger codecs: :class:`Sequence`,
:class:`View` (a codec on some lanes, or on a reshape of them), :class:`Repeat`, and
:class:`BBANS`, bits-back coding with a latent variable.

Nothing here knows about neural networks: all a codec needs arrives as tensors or as callables
that return codecs.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence as Seq

import numpy as np
import torch

from . import entropy_models as em
from . import kernels


class Codec:
    """Base class: ``push(message, symbols)`` and ``pop(message) -> symbols``."""

    def push(self, message, symbols) -> None:
        raise NotImplementedError

    def pop(self, message):
        raise NotImplementedError


class EntropyCodec(Codec):
    """Codes symbols of an entropy model's batch shape ``(*rounds, *lane_shape)``.

    Push validates symbols (dtype, shape, range), computes every interval in one vectorised call,
    then pushes the rounds last-to-first so that :meth:`pop` returns them first-to-last.
    """

    def __init__(self, model: em.EntropyModel):
        self.model = model

    def _rounds(self, message):
        lanes = tuple(message.lane_shape)
        shape = tuple(self.model.shape)
        if len(shape) < len(lanes) or shape[len(shape) - len(lanes):] != lanes:
            raise em.ModelError(f"model batch shape {shape} does not end with the lane shape {lanes}")
        return shape[: len(shape) - len(lanes)]

    def push(self, message, symbols) -> None:
        rounds = self._rounds(message)
        if kernels.codes_rounds(self.model, message):  # every round in one compiled loop
            kernels.push_rounds(self.model, message, self.model.checked_symbols(symbols))
            return
        start, freq = self.model.checked_interval(symbols)
        p = self.model.precision
        if not rounds:
            message.push(start, freq, p)
            return
        lanes = tuple(message.lane_shape)
        start = start.reshape(-1, *lanes)
        freq = freq.reshape(-1, *lanes)
        for r in range(start.shape[0] - 1, -1, -1):
            message.push(start[r], freq[r], p)

    def pop(self, message) -> torch.Tensor:
        rounds = self._rounds(message)
        p = self.model.precision
        done, out = 0, []
        if kernels.codes_rounds(self.model, message):  # every round in one compiled loop
            count = int(math.prod(rounds))
            sym, done = kernels.pop_rounds(self.model, message, count)
            if done == count:
                return sym.reshape(self.model.shape)
            out = list(sym[: done * int(math.prod(message.lane_shape))].reshape(done, *message.lane_shape))
        if not rounds:
            sym, start, freq = self.model.lookup(message.peek(p))
            message.pop(start, freq, p)
            return sym
        for r in range(done, int(math.prod(rounds))):
            model = self.model[np.unravel_index(r, rounds)]
            sym, start, freq = model.lookup(message.peek(p))
            message.pop(start, freq, p)
            out.append(sym)
        return torch.stack(out).reshape(self.model.shape)


# --------------------------------------------------------------------------- leaf constructors
def Uniform(n: int, shape, device=None) -> EntropyCodec:
    """Uniform symbols over ``0..n-1`` for a batch of ``shape``."""
    return EntropyCodec(em.Uniform(n, shape, device))


def Bernoulli(probs=None, logits=None, precision: int = 24) -> EntropyCodec:
    """Bits with probability ``probs`` (or ``sigmoid(logits)``) of being 1."""
    return EntropyCodec(em.Bernoulli(probs, logits, precision))


def Categorical(probs=None, logits=None, precision: int = 24) -> EntropyCodec:
    """Symbols ``0..n-1`` with probabilities (or logits) along the last axis."""
    return EntropyCodec(em.Categorical(probs, logits, precision))


def BetaBinomial(n: int, alpha, beta, precision: int = 24) -> EntropyCodec:
    """Beta-binomial over ``0..n`` (``n=255`` for 8-bit pixels)."""
    return EntropyCodec(em.BetaBinomial(n, alpha, beta, precision))


def DiscretizedLogistic(mean, scale, n: int = 256, precision: int = 24) -> EntropyCodec:
    """Logistic discretised to ``0..n-1`` with open edge bins (PixelCNN++)."""
    return EntropyCodec(em.DiscretizedLogistic(mean, scale, n, precision))


def LogisticMixture(means, scales, weights=None, logits=None, n: int = 256, precision: int = 24) -> EntropyCodec:
    """Mixture of discretised logistics over ``0..n-1`` (components on the last axis)."""
    return EntropyCodec(em.LogisticMixture(means, scales, weights, logits, n, precision))


def StdGaussianLatent(shape, bits: int, device=None) -> EntropyCodec:
    """The N(0, 1) prior on its own ``2**bits`` max-entropy bins: exactly uniform bin indices."""
    return EntropyCodec(em.Uniform(1 << bits, shape, device))


def DiagGaussianLatent(mean, scale, bits: int, prior_mean=0.0, prior_scale=1.0, precision: int = 24) -> EntropyCodec:
    """A diagonal Gaussian posterior over bin indices of the prior ``N(prior_mean, prior_scale)``'s
    equal-mass bins (BB-ANS when the prior is N(0, 1); HiLLoC's dynamic discretisation when it is
    a conditional prior)."""
    return EntropyCodec(em.GaussianOnBins(mean, scale, bits, prior_mean, prior_scale, precision))


# --------------------------------------------------------------------------- combinators
class Sequence(Codec):
    """Codes a tuple of symbols, one per codec; the first codec's symbols are popped first."""

    def __init__(self, codecs: Seq[Codec]):
        self.codecs = list(codecs)

    def push(self, message, symbols) -> None:
        if len(symbols) != len(self.codecs):
            raise em.ModelError(f"Sequence of {len(self.codecs)} codecs got {len(symbols)} symbol groups")
        for codec, x in zip(reversed(self.codecs), reversed(list(symbols))):
            codec.push(message, x)

    def pop(self, message):
        return tuple(codec.pop(message) for codec in self.codecs)


class View(Codec):
    """Applies ``codec`` to a view of the lanes: ``lanes`` is any index of the lane tensor, or use
    ``shape=`` to see all lanes with another shape."""

    def __init__(self, codec: Codec, lanes=None, shape=None):
        if (lanes is None) == (shape is None):
            raise ValueError("give exactly one of lanes and shape")
        self.codec, self.lanes, self.shape = codec, lanes, shape

    def _view(self, message):
        return message.view(self.lanes) if self.shape is None else message.reshape(self.shape)

    def push(self, message, symbols) -> None:
        self.codec.push(self._view(message), symbols)

    def pop(self, message):
        return self.codec.pop(self._view(message))


class Repeat(Codec):
    """Codes a list of ``count`` symbol groups with the same codec; popped in list order."""

    def __init__(self, codec: Codec, count: int):
        self.codec, self.count = codec, count

    def push(self, message, symbols) -> None:
        if len(symbols) != self.count:
            raise em.ModelError(f"Repeat expects {self.count} symbol groups, got {len(symbols)}")
        for x in reversed(list(symbols)):
            self.codec.push(message, x)

    def pop(self, message):
        return [self.codec.pop(message) for _ in range(self.count)]


class Spread(Codec):
    """Codes the symbols of an entropy model of *any* batch shape over the lanes of a message:
    flattened in row-major order, cut into rounds of one symbol per lane, the last (partial) round
    on the first lanes only. This is how a large tensor travels through a message of few lanes."""

    def __init__(self, model: em.EntropyModel):
        self.model = model

    def _parts(self, message):
        lanes = int(math.prod(message.lane_shape))
        count = int(math.prod(self.model.shape))
        rounds, rest = divmod(count, lanes)
        flat = self.model.reshape((count,))
        line = message.reshape((lanes,))
        parts = []
        if rounds:
            parts.append((EntropyCodec(flat[: rounds * lanes].reshape((rounds, lanes))), line, rounds * lanes))
        if rest:
            parts.append((EntropyCodec(flat[rounds * lanes:]), line.view(slice(0, rest)), rest))
        return parts

    def push(self, message, symbols) -> None:
        symbols = torch.as_tensor(symbols)
        if tuple(symbols.shape) != tuple(self.model.shape):
            raise em.ModelError(f"symbols have shape {tuple(symbols.shape)}, model expects {tuple(self.model.shape)}")
        flat = symbols.reshape(-1)
        offset = flat.numel()
        for codec, view, size in reversed(self._parts(message)):
            offset -= size
            codec.push(view, flat[offset: offset + size].reshape(codec.model.shape))

    def pop(self, message) -> torch.Tensor:
        out = [codec.pop(view).reshape(-1) for codec, view, _ in self._parts(message)]
        return torch.cat(out).reshape(self.model.shape)


class AutoregressiveGroups(Codec):
    """Codes a tuple of ``groups`` symbol groups, each with a codec that may depend on the groups
    before it: ``group_codec(g, previous)`` returns the codec of group ``g`` given the tuple of
    groups ``0..g-1``. Popped in order, so the decoder knows ``previous`` when it needs it."""

    def __init__(self, group_codec: Callable[[int, tuple], Codec], groups: int):
        self.group_codec, self.groups = group_codec, groups

    def push(self, message, symbols) -> None:
        if len(symbols) != self.groups:
            raise em.ModelError(f"expected {self.groups} groups, got {len(symbols)}")
        symbols = tuple(symbols)
        for g in reversed(range(self.groups)):
            self.group_codec(g, symbols[:g]).push(message, symbols[g])

    def pop(self, message):
        out = []
        for g in range(self.groups):
            out.append(self.group_codec(g, tuple(out)).pop(message))
        return tuple(out)


class Transform(Codec):
    """Applies ``codec`` to ``forward(symbols)``; pop returns ``inverse(codec.pop(...))``.
    ``inverse(forward(x))`` must equal ``x``."""

    def __init__(self, codec: Codec, forward: Callable, inverse: Callable):
        self.codec, self.forward, self.inverse = codec, forward, inverse

    def push(self, message, symbols) -> None:
        self.codec.push(message, self.forward(symbols))

    def pop(self, message):
        return self.inverse(self.codec.pop(message))


class BBANS(Codec):
    """Bits-back coding of ``x`` with a latent ``z``.

    ``prior`` is a codec for ``z``; ``likelihood(z)`` returns a codec for ``x`` given ``z``;
    ``posterior(x)`` returns a codec for ``z`` given ``x``. Push pops ``z`` from the message with
    the posterior (getting bits back), pushes ``x`` with the likelihood, then ``z`` with the prior;
    pop runs the same steps backwards. The expected net code length is the negative ELBO.
    """

    def __init__(self, prior: Codec, likelihood: Callable[[object], Codec], posterior: Callable[[object], Codec]):
        self.prior, self.likelihood, self.posterior = prior, likelihood, posterior

    def push(self, message, x) -> None:
        z = self.posterior(x).pop(message)
        self.likelihood(z).push(message, x)
        self.prior.push(message, z)

    def pop(self, message):
        z = self.prior.pop(message)
        x = self.likelihood(z).pop(message)
        self.posterior(x).push(message, z)
        return x
