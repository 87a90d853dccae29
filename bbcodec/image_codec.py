"""Bits-back coding of image datasets with a :class:`~bbcodec.models.context_vae.ContextVAE`.

The images are coded in batches, one :class:`~bbcodec.codecs.BBANS` step per batch: pop the
batch's latents with the posterior, push the four pixel groups with the grouped autoregressive
likelihood, push the latents with the N(0, 1) prior on its max-entropy bins. All networks run in
exact fixed-point arithmetic, all distributions in deterministic float64, so decoding reproduces
the encoder's integers on any machine and thread count.

Start-up cost is kept small three ways. With ``plain_start`` the first images are coded without
bits-back, their latents fixed at the prior's central bins (for models whose latents carry little
information this costs far less than the seeded bits a first bits-back pop would consume), until
the message holds enough bits for the first pop. The batch size then doubles from one image up to
``batch``, so no step pops more than the message holds. And the message starts with few lanes and
grows towards ``lanes_per_image * batch`` only as fast as the data already coded can pay for the
new lanes (31 popped bits each, :meth:`bbcodec.ans.Message.grow`), so extra lanes cost almost
nothing but their 5-bit length field at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from . import codecs as C
from . import detmath
from . import entropy_models as em
from .ans import GROW_BITS, Message
from .varint import decode_varint, encode_varint
from .models.fixedpoint import ExactNumerics, to_grid
from .models.likelihoods import BernoulliLikelihood, ScaleMap


@dataclass
class CodingParams:
    """Knobs that trade rate for speed; recorded in compressed files.

    ``bits_per_image`` (net bits an image adds to the message, about its negative ELBO) and
    ``pop_bits_per_image`` (bits its latents' bits-back pop takes, about ``latent_dim *
    latent_bits - KL``) pace the start-up: a batch may only pop, and new lanes may only take, bits
    that earlier images have put in the message. Both are conservative estimates stored with the
    model; the plan is a deterministic function of them and the image count.

    ``scale_shifts`` and ``scale_slopes`` (tiled models): per coded level of the image pyramid,
    one integer per pixel step each, the :class:`~bbcodec.models.likelihoods.ScaleMap` of that
    step's log-scales in units of :data:`SCALE_SHIFT_UNIT` (shift) and :data:`SCALE_SLOPE_UNIT`
    (slope minus one): the encoder's adaptation of the model to the data, stored in the file
    (``adapt`` makes the encoder choose them, see :func:`choose_scale_maps`; empty: none).
    """

    batch: int = 64
    lanes_per_image: int = 98
    initial_lanes: int = 64
    bits_per_image: float = 500.0
    pop_bits_per_image: float = 400.0
    precision: int = 24  # pixel and posterior precision (bits)
    pack: int = 14  # binary pixels per rANS symbol
    plain_start: bool = False  # code the first images with fixed latents instead of seeded bits
    stored_plan: bool = False  # plan each batch from the bits really in the message; store the plan
    tile: int = 0  # tiled models: the largest tile size to use (0: the model's training patch)
    pyramid: int = 0  # tiled models: split images at least this big on the shorter side (0: never)
    adapt: bool = False  # tiled models: choose scale_shifts and scale_slopes for the data when encoding
    scale_shifts: tuple = ()
    scale_slopes: tuple = ()

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# The range of each coding parameter, checked alike for what users ask and what files say
# (:func:`check_coding`): no value outside these can make planning loop or allocate without bound.
CODING_LIMITS = {
    "batch": (int, 1, 1 << 12), "lanes_per_image": (int, 1, 1 << 12), "initial_lanes": (int, 1, 1 << 16),
    "bits_per_image": (float, 1e-3, 1e9), "pop_bits_per_image": (float, 0.0, 1e9),
    "precision": (int, 16, 31), "pack": (int, 1, 15), "tile": (int, 0, 512), "pyramid": (int, 0, 1 << 31),
    "plain_start": (bool,), "stored_plan": (bool,), "adapt": (bool,), "scale_shifts": (tuple,), "scale_slopes": (tuple,),
}
MAX_LANES = 1 << 22  # batch * lanes_per_image


def check_coding(coding: dict) -> None:
    """``ValueError`` naming the first unknown key or out-of-range value of ``coding``."""
    for key, value in coding.items():
        if key not in CODING_LIMITS:
            raise ValueError(f"unknown coding parameter {key!r:.40} (known: {', '.join(CODING_LIMITS)})")
        kind, *bounds = CODING_LIMITS[key]
        if kind is bool:
            ok = type(value) is bool
        elif kind is tuple:
            ok = isinstance(value, (list, tuple)) and len(value) <= 64 and all(
                isinstance(level, (list, tuple)) and len(level) <= 64 for level in value)
        elif kind is int:
            ok = type(value) is int and bounds[0] <= value <= bounds[1]
        else:
            ok = type(value) in (int, float) and math.isfinite(value) and bounds[0] <= value <= bounds[1]
        if not ok:
            if kind is bool:
                want = "true or false"
            elif kind is tuple:
                want = "a list of per-level lists"
            else:
                want = f"{'an integer' if kind is int else 'a number'} from {bounds[0]} to {bounds[1]}"
            raise ValueError(f"coding parameter {key} must be {want}, got {value!r:.40}")
    tile = coding.get("tile", 0)
    if tile % 4:
        raise ValueError(f"coding parameter tile must be a multiple of 4, got {tile}")
    if coding.get("batch", 1) * coding.get("lanes_per_image", 1) > MAX_LANES:
        raise ValueError(f"batch times lanes_per_image must be at most {MAX_LANES}")


SCALE_SHIFT_UNIT = 1 / 16  # scale shifts are multiples of this, in natural-log units
SCALE_SHIFT_RANGE = (-16, 32)  # the shifts the encoder considers: e^-1 to e^2 times the scales
SCALE_SLOPE_UNIT = 1 / 16  # log-scale slopes are 1 + multiples of this
SCALE_SLOPE_RANGE = (-8, 4)  # slopes 0.5 to 1.25

SAFETY = 0.7  # fraction of the estimated bits in the message that the plan lets a step spend


def coding_defaults(measured: dict) -> dict:
    """Coding defaults from :meth:`BatchedImageCodec.measure`: the estimates (rounded up); lanes
    in proportion to the bits an image adds (about one per 20 bits, as the embedded MNIST models
    use, at most 64); the stored plan (robust to estimates that are off); and the plain start
    where its extra cost over the first images (their code length with fixed latents beyond
    their negative ELBO) is below the seeded bits of a first bits-back pop."""
    bits = max(1, math.ceil(measured["bits_per_image"]))
    pop = max(0, math.ceil(measured["pop_bits_per_image"]))
    plain = measured["plain_bits_per_image"]
    plain_images = math.ceil(pop / max(1.0, SAFETY * plain))
    return {"bits_per_image": bits, "pop_bits_per_image": pop, "batch": 64,
            "lanes_per_image": int(min(64, max(1, round(bits / 20)))), "initial_lanes": 16,
            "plain_start": bool(plain_images * (plain - bits) < pop), "stored_plan": True}


class Step(NamedTuple):
    """One batch of the coding plan: how many images, the lane count, and whether bits-back is
    used (otherwise the latents are fixed at the prior's central bins)."""

    images: int
    lanes: int
    bits_back: bool = True


def next_step(budget: float, remaining: int, lanes: int, prev: int, p: CodingParams) -> Step:
    """The next batch given ``budget``, the bits the message holds beyond what is locked in lane
    heads. With ``plain_start``, images are coded without bits-back until ``SAFETY * budget`` covers
    one image's pop. Otherwise the batch pops at most ``SAFETY * budget`` bits, at most doubling the
    previous batch size; lanes grow towards ``lanes_per_image * batch`` with what is left of that
    share."""
    spend = SAFETY * budget
    pop = max(float(p.pop_bits_per_image), 1.0)
    if p.plain_start and spend < pop:
        need = math.ceil((pop - spend) / (SAFETY * max(float(p.bits_per_image), 1.0)))
        return Step(int(min(p.batch, remaining, max(1, need))), lanes, False)
    b = int(min(p.batch, remaining, max(1, 2 * prev), max(1, spend // pop)))
    want = max(lanes, p.lanes_per_image * b)
    new = int(min(want - lanes, max(0.0, (spend - pop * b) // GROW_BITS)))
    return Step(b, lanes + new)


def plan_batches(segments, p: CodingParams) -> list[Step]:
    """The batches planned from estimates alone, a deterministic function of the segments and the
    parameters. ``segments`` is an image count, or a list of ``(count, params)`` for images coded one
    segment after another (each with its own per-image estimates; no batch spans two segments).
    The budget starts at the random start heads' 31 bits each (none with ``plain_start``: the heads
    start empty) and grows by ``bits_per_image`` per coded image, less 31 per added lane."""
    if isinstance(segments, int):
        segments = [(segments, p)]
    plan, lanes, prev = [], p.initial_lanes, 0
    budget = 0.0 if p.plain_start else float(GROW_BITS * p.initial_lanes)
    for count, sp in segments:
        done = 0
        while done < count:
            step = next_step(budget, count - done, lanes, prev, sp)
            budget += sp.bits_per_image * step.images - GROW_BITS * (step.lanes - lanes)
            plan.append(step)
            done += step.images
            lanes, prev = step.lanes, step.images
    return plan


def plan_to_bytes(plan: list[Step]) -> bytes:
    """The plan as varint runs ``(repeat, images, lanes, bits_back)``, preceded by the run count."""
    runs = []
    for step in plan:
        if runs and runs[-1][1] == step:
            runs[-1][0] += 1
        else:
            runs.append([1, step])
    out = [encode_varint(len(runs))]
    for repeat, (images, lanes, bits_back) in runs:
        out += [encode_varint(repeat), encode_varint(images), encode_varint(lanes), encode_varint(int(bits_back))]
    return b"".join(out)


def plan_from_bytes(data: bytes, n_images: int) -> tuple[list[Step], int]:
    """Inverse of :func:`plan_to_bytes`: ``(plan, bytes read)``; ``ValueError`` unless the plan is
    well formed and codes exactly ``n_images`` images."""
    runs, pos = decode_varint(data, 0)
    plan, total = [], 0
    for _ in range(runs):
        fields = []
        for _ in range(4):
            value, pos = decode_varint(data, pos)
            fields.append(value)
        repeat, images, lanes, bits_back = fields
        total += repeat * images
        if repeat < 1 or images < 1 or lanes < 1 or bits_back > 1 or total > n_images or lanes > MAX_LANES:
            raise ValueError("corrupt coding plan")
        plan += [Step(images, lanes, bool(bits_back))] * repeat
    if sum(s.images for s in plan) != n_images or any(b.lanes < a.lanes for a, b in zip(plan, plan[1:])):
        raise ValueError("corrupt coding plan")
    return plan, pos


def split_plan(plan: list[Step], counts: list[int]) -> list[int]:
    """The segment of each step of ``plan`` for segments of ``counts`` images; ``ValueError`` if a
    batch spans two segments or the counts do not add up."""
    owner, seg, left = [], 0, list(counts)
    for step in plan:
        while seg < len(left) and left[seg] == 0:
            seg += 1
        if seg == len(left) or step.images > left[seg]:
            raise ValueError("corrupt coding plan: a batch spans two segments")
        owner.append(seg)
        left[seg] -= step.images
    if any(left):
        raise ValueError("corrupt coding plan: segment sizes do not add up")
    return owner


class Segment(NamedTuple):
    """Images coded one after another on a shared message by one codec. ``given`` (same shape as
    ``images``, or None) holds pixels already known to the decoder (see
    :meth:`BatchedImageCodec._batch_codec`); only those entries of it are read."""

    codec: "BatchedImageCodec"
    images: torch.Tensor
    given: torch.Tensor | None = None


def encode_segments(segments: list[Segment], seed: int = 0, progress=None) -> tuple[bytes, "CodingStats"]:
    """Encode the segments in order onto one message; returns the chunk bytes (the plan, if stored,
    then the ANS message) and statistics. Start-up settings (``initial_lanes``, ``plain_start``,
    ``stored_plan``) come from the first segment's codec.

    With ``stored_plan`` each batch is planned from :meth:`Message.content_bits`, the bits really
    in the message, rather than from ``bits_per_image``; images that cost far less than the
    estimate (a white sky) then cannot starve the bits-back pops of later batches."""
    import time

    t0 = time.perf_counter()
    p = segments[0].codec.params
    fixed = None if p.stored_plan else plan_batches([(len(s.images), s.codec.params) for s in segments], p)
    msg = Message((p.initial_lanes if fixed is None else fixed[0].lanes,), seed=seed, random_heads=not p.plain_start)
    plan, prev = [], 0
    with torch.inference_mode():
        for codec, images, given in segments:
            start, n = 0, len(images)
            while start < n:
                lanes = msg.lane_shape[0]
                step = fixed[len(plan)] if fixed else next_step(msg.content_bits(), n - start, lanes, prev, codec.params)
                if step.lanes > lanes:
                    msg.grow((step.lanes,))
                part = slice(start, start + step.images)
                batch = codec._batch_codec(step.images, step.bits_back, None if given is None else given[part].to(torch.int64))
                batch.push(msg, images[part].to(torch.int64))
                plan.append(step)
                start += step.images
                prev = step.images
                if progress:
                    progress(step.images)
    stored = plan_to_bytes(plan) if fixed is None else b""
    stats = CodingStats(bits=msg.bits(), initial_bits=msg.initial_bits,
                        head_bits=msg.bits() - 32 * msg.stream_words, lanes=msg.lane_shape[0],
                        batches=len(plan), seconds=time.perf_counter() - t0,
                        extra={"plain_images": sum(st.images for st in plan if not st.bits_back),
                               "plan_bits": 8 * len(stored)})
    return stored + msg.to_bytes(), stats


def decode_segments(data: bytes, codecs: list, counts: list[int], given_for=None, seed: int = 0,
                    progress=None) -> list[torch.Tensor]:
    """Inverse of :func:`encode_segments`: the images of each segment. Segments come off the message
    last first; ``given_for(k, decoded)``, with ``decoded`` the dict of segments already decoded
    (all after ``k``), returns segment ``k``'s ``given`` tensor (or None). Verifies that the message
    returns to its seeded start state."""
    p = codecs[0].params
    if p.stored_plan:
        plan, offset = plan_from_bytes(data, sum(counts))
        start_lanes = p.initial_lanes
    else:
        plan, offset = plan_batches(list(zip(counts, (c.params for c in codecs))), p), 0
        start_lanes = plan[0].lanes
    owner = split_plan(plan, counts)
    msg = Message.from_bytes(data[offset:], seed=seed)
    if msg.lane_shape != (plan[-1].lanes,):
        raise ValueError(f"message has {msg.lane_shape} lanes, the coding plan expects {plan[-1].lanes}")
    # Memory grows with the images really decoded (parts per segment, joined when it is done), and
    # a valid message never runs dry while decoding (its state retraces the encoder's), so a
    # header that claims more images than the chunk holds fails as soon as the bits run out.
    decoded, parts, end, given = {}, [], 0, None
    with torch.inference_mode():
        for i in range(len(plan) - 1, -1, -1):
            k = owner[i]
            codec = codecs[k]
            if not parts:
                end = counts[k]
                given = given_for(k, decoded) if given_for else None
            size, lanes, bits_back = plan[i]
            part = slice(end - size, end)
            batch = codec._batch_codec(size, bits_back, None if given is None else given[part].to(torch.int64))
            parts.append(batch.pop(msg).to(torch.uint8))
            if msg.initial_words:
                raise ValueError("corrupt data: the message ran out before the images did")
            end -= size
            if end == 0:
                decoded[k] = torch.cat(parts[::-1])
                parts = []
            before = plan[i - 1].lanes if i else start_lanes
            if before < lanes:
                msg.shrink((before,))
            if progress:
                progress(size)
    start = Message((start_lanes,), seed=seed, random_heads=not p.plain_start)
    if not torch.equal(msg.heads, start.heads) or not msg.holds_only_seeded_words():
        raise ValueError("corrupt data: the decoder did not return to the encoder's start state")
    return [decoded[k] for k in range(len(codecs))]


@dataclass
class CodingStats:
    bits: int = 0  # ANS message size (stream + packed heads)
    initial_bits: int = 0  # seeded bits consumed (random heads + seeded words)
    head_bits: int = 0
    lanes: int = 0
    batches: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class BatchedImageCodec:
    """Shared machinery: images coded batch after batch on one message whose lanes grow as the
    coded data pays for them. Subclasses provide the pieces of one batch (:meth:`_split` and
    :meth:`_join` between images and the likelihood's groups, :meth:`_prior`, :meth:`_posterior`,
    :meth:`_likelihood`, :meth:`_fixed_latents`), :meth:`image_shape` and :meth:`negative_elbo`."""

    def __init__(self, model, params: CodingParams | None = None, seed: int = 0):
        self.model = model
        self.cfg = getattr(model, "config", None)
        self.params = params or CodingParams()
        self.seed = seed
        self.num = ExactNumerics()

    def image_shape(self) -> tuple:
        raise NotImplementedError

    def _split(self, x):
        raise NotImplementedError

    def _join(self, parts):
        raise NotImplementedError

    def _prior(self, size: int) -> C.Codec:
        raise NotImplementedError

    def _posterior(self, x) -> C.Codec:
        raise NotImplementedError

    def _likelihood(self, z, given=None) -> C.Codec:
        raise NotImplementedError

    def _fixed_latents(self, size: int):
        """Latent bins used for batches coded without bits-back: the prior's central bins."""
        raise NotImplementedError

    def negative_elbo(self, images: torch.Tensor, batch: int = 500, seed: int = 0) -> dict:
        raise NotImplementedError

    def measure(self, images: torch.Tensor, sample: int = 64, seed: int = 0) -> dict:
        """What one image costs, measured by coding up to ``sample`` of ``images`` (spread over
        them): ``bits_per_image`` (its negative ELBO), ``pop_bits_per_image`` (what its latents'
        bits-back pop takes from a message), ``plain_bits_per_image`` (its code length without
        bits-back, latents fixed). The start-up plan's estimates come from these."""
        x = images[:: max(1, len(images) // sample)][:sample]
        n = len(x)
        with torch.inference_mode():
            bits = self.negative_elbo(x, seed=seed)["bits"] / n
            lanes = (64,)
            msg = Message(lanes, seed=seed, random_heads=True)
            before = msg.content_bits()
            self._posterior(self._join(self._split(x.to(torch.int64)))).pop(msg)
            pop = before - msg.content_bits() + 32 * msg.initial_words
            msg = Message(lanes, seed=seed)
            self._batch_codec(n, bits_back=False).push(msg, x.to(torch.int64))
            plain = msg.content_bits()
        return {"bits_per_image": bits, "pop_bits_per_image": pop / n, "plain_bits_per_image": plain / n}

    def _batch_codec(self, size: int, bits_back: bool = True, given=None) -> C.Codec:
        """A codec for a batch of ``size`` images: one bits-back step, or with ``bits_back=False``
        the likelihood alone given :meth:`_fixed_latents`. ``given`` (the batch's images as far as
        the decoder already knows them, or None) is passed on to :meth:`_likelihood`."""
        if bits_back:
            inner = C.BBANS(self._prior(size), lambda z: self._likelihood(z, given),
                            lambda parts: self._posterior(self._join(parts)))
        else:
            inner = self._likelihood(self._fixed_latents(size), given)
        return C.Transform(inner, self._split, self._join)

    # ------------------------------------------------------------------ whole datasets
    def encode(self, images: torch.Tensor, progress=None, given=None) -> tuple[bytes, CodingStats]:
        """Encode ``(N, *image_shape)`` uint8 images (one segment, see :func:`encode_segments`)."""
        return encode_segments([Segment(self, images, given)], seed=self.seed, progress=progress)

    def decode(self, data: bytes, n_images: int, progress=None, given=None) -> torch.Tensor:
        """Decode ``n_images`` images; verifies the message returns to its seeded start state."""
        return decode_segments(data, [self], [n_images], None if given is None else (lambda k, d: given),
                               seed=self.seed, progress=progress)[0]


class ContextVAECodec(BatchedImageCodec):
    """Codes uint8 image tensors ``(N, H, W)`` with a ContextVAE."""

    def __init__(self, model, params: CodingParams | None = None, seed: int = 0):
        super().__init__(model, params, seed)
        self.bits = self.cfg.latent_bits
        self.binary = isinstance(model.likelihood, BernoulliLikelihood)
        if self.binary:
            for n in model.group_sizes():
                if n % self.params.pack:
                    raise ValueError(f"pack={self.params.pack} does not divide the group size {n}")

    def image_shape(self):
        return (self.cfg.height, self.cfg.width)

    # ------------------------------------------------------------------ pieces of one batch
    def _split(self, x):
        return self.model.split_groups(x)

    def _join(self, parts):
        return self.model.join_groups(parts)

    def _fixed_latents(self, size):
        return torch.full((size, self.cfg.latent_dim), 1 << (self.bits - 1), dtype=torch.int64)

    def _posterior(self, x):
        mean, log_scale = self.model.posterior(x, self.num)
        return C.Spread(em.GaussianOnBins(mean, detmath.exp_scale(log_scale), self.bits, precision=self.params.precision))

    def _prior(self, size):
        return C.Spread(em.Uniform(1 << self.bits, (size, self.cfg.latent_dim)))

    def _group_codec(self, g, feats, previous):
        raw = self.model.head(g, feats, previous, self.num)
        if self.binary:
            pack = self.params.pack
            model = self.model.likelihood.packed_model(raw, pack)
            return C.Transform(C.Spread(model), lambda x: em.PackedBernoulli.pack(x.reshape(x.shape[0], -1, pack)),
                               lambda s: em.PackedBernoulli.unpack(s, pack).reshape(s.shape[0], -1))
        return C.Spread(self.model.likelihood.entropy_model(raw, self.params.precision))

    def _likelihood(self, z, given=None):
        if given is not None:
            raise ValueError("this codec cannot use known pixels")
        values = to_grid(em.bin_centres(z, self.bits))
        feats = self.model.features(values, self.num)
        return C.AutoregressiveGroups(lambda g, prev: self._group_codec(g, feats, prev), self.model.groups)

    # ------------------------------------------------------------------ the model's rate
    def negative_elbo(self, images: torch.Tensor, batch: int = 500, seed: int = 0) -> dict:
        """The model's negative ELBO in bits (exact networks, analytic KL, one latent sample per
        image from a seeded generator), summed over images."""
        gen = torch.Generator().manual_seed(seed)
        kl_bits = nll_bits = 0.0
        lik = self.model.likelihood
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = images[i: i + batch].to(torch.int64)
                mean, log_scale = self.model.posterior(x, self.num)
                kl = 0.5 * (mean ** 2 + torch.exp(2 * log_scale) - 1 - 2 * log_scale).sum()
                eps = torch.randn(mean.shape, generator=gen, dtype=torch.float64)
                z = to_grid(mean + eps * torch.exp(log_scale))
                feats = self.model.features(z, self.num)
                groups = self.model.split_groups(x)
                for g in range(self.model.groups):
                    raw = self.model.head(g, feats, groups[:g], self.num)
                    nll_bits -= lik.log_prob(groups[g], raw).sum().item() / math.log(2)
                kl_bits += kl.item() / math.log(2)
        return {"kl_bits": kl_bits, "nll_bits": nll_bits, "bits": kl_bits + nll_bits}


class ProtocolCodec(BatchedImageCodec):
    """Codes uint8 images ``(N, *model.image_shape)`` with any model of the protocol
    (:class:`bbcodec.protocol.BitsBackModel`): one bits-back step per batch over all its latent
    layers, popped in order with the posterior and pushed with the prior (each layer given the
    ones before it)."""

    def image_shape(self):
        return tuple(self.model.image_shape)

    def _split(self, x):
        return x

    def _join(self, x):
        return x

    def _layers(self, make) -> C.Codec:
        return C.AutoregressiveGroups(lambda k, above: C.Spread(make(k, list(above))), len(self.model.latent_shapes))

    def _prior(self, size):
        return self._layers(lambda k, above: self.model.prior(size, k, above))

    def _posterior(self, x):
        return self._layers(lambda k, above: self.model.posterior(x, k, above))

    def _likelihood(self, z, given=None):
        if given is not None:
            raise ValueError("this codec cannot use known pixels")
        lik = self.model.likelihood(list(z))
        return lik if isinstance(lik, C.Codec) else C.Spread(lik)

    def _fixed_latents(self, size):
        return tuple(self.model.fixed_latents(size))

    def negative_elbo(self, images: torch.Tensor, batch: int = 500, seed: int = 0) -> dict:
        """The model's negative ELBO in bits, summed over images (its own definition)."""
        kl_bits = nll_bits = 0.0
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                part = self.model.negative_elbo(images[i: i + batch].to(torch.int64))
                kl_bits += float(part["kl_bits"].sum())
                nll_bits += float(part["nll_bits"].sum())
        return {"kl_bits": kl_bits, "nll_bits": nll_bits, "bits": kl_bits + nll_bits}


class _Copy(C.Codec):
    """A group whose symbols are a known function of earlier groups: costs nothing."""

    def __init__(self, value):
        self.value = value

    def push(self, message, symbols) -> None:
        if not torch.equal(torch.as_tensor(symbols), self.value):
            raise em.ModelError("symbols differ from the value implied by earlier groups")

    def pop(self, message):
        return self.value


class HierarchicalVAECodec(BatchedImageCodec):
    """Codes uint8 colour tiles ``(N, C, T, T)`` with a :class:`HierarchicalVAE`.

    One batch is one bits-back step over the latent pair ``(z2, z1)`` (HiLLoC order): pop ``z2``
    with ``q(z2|x)`` on N(0, 1)'s max-entropy bins, pop ``z1`` with ``q(z1|x)`` on the bins of equal
    mass under ``p(z1|z2)``, push the sub-pixel steps, push ``z1`` and ``z2`` as uniform bin
    indices. With ``grey=True`` only the first channel is coded; the others are copies of it.

    ``tile`` (a multiple of 4; default the model's training patch) is the coded unit's size: the
    networks are fully convolutional, and larger tiles lose less context at their borders. The
    per-image estimates in ``params`` are per training patch and are scaled to the tile's area.
    With ``given`` tiles (see :meth:`_batch_codec`), the first pixel level (every fourth pixel of
    every fourth row, all channels) is taken from them instead of being coded. ``scale_shifts``
    and ``scale_slopes`` (one integer per pixel step each, default zeros) map each step's
    log-scales, see :class:`CodingParams`.
    """

    def __init__(self, model, params: CodingParams | None = None, seed: int = 0, grey: bool = False,
                 tile: int | None = None, scale_shifts=None, scale_slopes=None):
        super().__init__(model, params, seed)
        shifts, slopes = tuple(scale_shifts or (0,) * model.steps), tuple(scale_slopes or (0,) * model.steps)
        if len(shifts) != model.steps or len(slopes) != model.steps:
            raise ValueError(f"scale shifts and slopes must be given for all {model.steps} pixel steps")
        self.scale_maps = [scale_map(shift, slope) for shift, slope in zip(shifts, slopes)]
        self.bits = self.cfg.latent_bits
        self.grey = grey
        t = self.tile = int(tile or self.cfg.patch)
        if t < 4 or t % 4:
            raise ValueError(f"tile size {t} is not a positive multiple of 4")
        area = (t / self.cfg.patch) ** 2
        pp = self.params
        self.params = replace(pp, batch=max(1, int(pp.batch / area)), bits_per_image=pp.bits_per_image * area,
                              pop_bits_per_image=pp.pop_bits_per_image * area,
                              lanes_per_image=max(1, round(pp.lanes_per_image * area)))
        self.z1_shape = (self.cfg.z1_channels, t // 2, t // 2)
        self.z2_shape = (self.cfg.z2_channels, t // 4, t // 4)
        self.given_steps = self.cfg.channels  # the first level: one step per channel

    def image_shape(self):
        return (self.cfg.channels, self.tile, self.tile)

    def _z2_values(self, bins):
        return to_grid(em.bin_centres(bins, self.bits))

    def _prior1(self, z2_bins):
        pm, log_ps = self.model.prior1(self._z2_values(z2_bins), self.num)
        return pm, detmath.exp_scale(log_ps)

    def _posterior(self, x):
        (m1, s1), (m2, s2) = self.model.posterior(x, self.num)
        p = self.params.precision

        def layer(i, previous):
            if i == 0:
                return C.Spread(em.GaussianOnBins(m2, detmath.exp_scale(s2), self.bits, precision=p))
            pm, ps = self._prior1(previous[0])
            return C.Spread(em.GaussianOnBins(m1, detmath.exp_scale(s1), self.bits, pm, ps, precision=p))

        return C.AutoregressiveGroups(layer, 2)

    def _prior(self, size):
        return C.Sequence([C.Spread(em.Uniform(1 << self.bits, (size,) + self.z2_shape)),
                           C.Spread(em.Uniform(1 << self.bits, (size,) + self.z1_shape))])

    def _step_codec(self, step, feats, previous, given_parts):
        if given_parts is not None and step < self.given_steps:
            return _Copy(given_parts[step])
        if self.grey and step % self.cfg.channels:
            return _Copy(previous[step - step % self.cfg.channels])
        t = self.tile
        raw = self.model.head(step, feats, self.model.known_from_parts(previous, t, t), t, t, self.num)
        return C.Spread(self.model.likelihood.entropy_model(raw, self.params.precision, self.scale_maps[step]))

    def _coded_steps(self, given: bool) -> list[int]:
        """The pixel steps that are coded: not given, and not copies of the first channel."""
        first = self.given_steps if given else 0
        return [s for s in range(first, self.model.steps) if not (self.grey and s % self.cfg.channels)]

    def _head_outputs(self, x, z1, given: bool):
        """``(step, sub-pixels, raw likelihood parameters)`` of each coded step of tiles ``x``."""
        t = self.tile
        feats = self.model.features(z1, self.num)
        parts = self.model.split_steps(x)
        known = self.model.known_from_image(x)
        for step in self._coded_steps(given):
            yield step, parts[step], self.model.head(step, feats, known, t, t, self.num)

    def sample_outputs(self, images: torch.Tensor, given: bool = False) -> dict:
        """For choosing scale maps: ``{step: (sub-pixels (M,), raw parameters (M, nout))}`` of the
        coded steps of tiles ``images``, decoded from their posterior means (exact networks)."""
        with torch.inference_mode():
            x = images.to(torch.int64)
            (m1, _), _ = self.model.posterior(x, self.num)
            return {step: (sym.reshape(-1), raw.reshape(-1, raw.shape[-1]))
                    for step, sym, raw in self._head_outputs(x, to_grid(m1), given)}

    def _likelihood(self, z, given=None):
        z2_bins, z1_bins = z
        pm, ps = self._prior1(z2_bins)
        z1 = to_grid(em.bin_centres(z1_bins, self.bits, pm, ps))
        feats = self.model.features(z1, self.num)
        given_parts = None if given is None else self._split(given)
        return C.AutoregressiveGroups(lambda s, prev: self._step_codec(s, feats, prev, given_parts), self.model.steps)

    def _split(self, x):
        return self.model.split_steps(x)

    def _join(self, parts):
        return self.model.join_steps(parts, self.tile, self.tile)

    def _fixed_latents(self, size):
        centre = 1 << (self.bits - 1)
        return (torch.full((size,) + self.z2_shape, centre, dtype=torch.int64),
                torch.full((size,) + self.z1_shape, centre, dtype=torch.int64))

    def negative_elbo(self, images: torch.Tensor, batch: int = 200, seed: int = 0, given: bool = False) -> dict:
        """Negative ELBO in bits (exact networks, analytic KLs given one seeded z2 sample, one z1
        sample), summed over tiles. In grey mode only the first channel's terms count; with
        ``given`` the first level's terms do not count."""
        from .models.hierarchical_vae import gaussian_kl

        gen = torch.Generator().manual_seed(seed)
        kl_bits = nll_bits = 0.0
        lik = self.model.likelihood
        batch = max(1, int(batch * (self.cfg.patch / self.tile) ** 2))
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = images[i: i + batch].to(torch.int64)
                (m1, s1), (m2, s2) = self.model.posterior(x, self.num)
                z2 = to_grid(m2 + torch.randn(m2.shape, generator=gen, dtype=torch.float64) * torch.exp(s2))
                pm, log_ps = self.model.prior1(z2, self.num)
                z1 = to_grid(m1 + torch.randn(m1.shape, generator=gen, dtype=torch.float64) * torch.exp(s1))
                kl = gaussian_kl(m1, s1, pm, log_ps).sum() + gaussian_kl(m2, s2, 0.0, 0.0).sum()
                for step, sym, raw in self._head_outputs(x, z1, given):
                    nll_bits -= lik.log_prob(sym, raw, self.scale_maps[step]).sum().item() / math.log(2)
                kl_bits += kl.item() / math.log(2)
        return {"kl_bits": kl_bits, "nll_bits": nll_bits, "bits": kl_bits + nll_bits}


def scale_map(shift, slope) -> ScaleMap:
    """The :class:`ScaleMap` of integer ``shift`` and ``slope`` (numbers or tensors) in their units."""
    return ScaleMap(1 + slope * SCALE_SLOPE_UNIT, shift * SCALE_SHIFT_UNIT)


def _refine(cost, best: int, lo: int, hi: int, sizes) -> int:
    """Local search from ``best``: for each step size, the best of ``best`` and its two neighbours
    that far away, within ``[lo, hi]`` (ties go to the value nearer zero)."""
    for size in sizes:
        near = [v for v in (best - size, best, best + size) if lo <= v <= hi]
        best = min(near, key=lambda v: (cost(v), abs(v)))
    return best


MAX_ROUNDS = 8
MIN_SAVING = 0.002  # a step keeps the identity map unless another saves this fraction on the sample


def choose_scale_maps(likelihood, samples: list[dict], steps: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per pixel step, the integer ``(shift, slope)`` in :data:`SCALE_SHIFT_RANGE` and
    :data:`SCALE_SLOPE_RANGE` that minimise the code length of the sampled sub-pixels
    (``samples``: outputs of :meth:`HierarchicalVAECodec.sample_outputs`), by coordinate descent:
    the shift on a grid of 4 units refined to 1 at slope 1, then the slope on a grid of 2 refined
    to 1, then each refined in turn until neither moves (at most ``MAX_ROUNDS`` times; the cost
    is smooth and unimodal in practice). Steps without samples, or where the best map saves less
    than ``MIN_SAVING`` of the sample's code length (a gain that small does not carry over from
    the sample to the data), get zeros. Returns ``(shifts, slopes)``. The choice is the encoder's
    alone (decoders read it), so it need not be reproducible bit for bit.
    """
    shifts, slopes = [0] * steps, [0] * steps
    (s_lo, s_hi), (k_lo, k_hi) = SCALE_SHIFT_RANGE, SCALE_SLOPE_RANGE
    for step in range(steps):
        found = [s[step] for s in samples if step in s]
        if not found:
            continue
        sym = torch.cat([f[0] for f in found])
        raw = torch.cat([f[1] for f in found]).to(torch.float64)
        costs: dict[tuple[int, int], float] = {}

        def cost(shift: int, slope: int) -> float:
            if (shift, slope) not in costs:
                costs[shift, slope] = -float(likelihood.log_prob(sym, raw, scale_map(shift, slope)).sum())
            return costs[shift, slope]

        shift = min(range(s_lo, s_hi + 1, 4), key=lambda v: (cost(v, 0), abs(v)))
        shift = _refine(lambda v: cost(v, 0), shift, s_lo, s_hi, (2, 1))
        slope = min(range(k_lo, k_hi + 1, 2), key=lambda v: (cost(shift, v), abs(v)))
        slope = _refine(lambda v: cost(shift, v), slope, k_lo, k_hi, (1,))
        for _ in range(MAX_ROUNDS):  # the two interact: alternate until neither moves
            before = (shift, slope)
            shift = _refine(lambda v: cost(v, slope), shift, s_lo, s_hi, (2, 1))
            slope = _refine(lambda v: cost(shift, v), slope, k_lo, k_hi, (1,))
            if (shift, slope) == before:
                break
        if cost(shift, slope) < (1 - MIN_SAVING) * cost(0, 0):  # else too small to trust
            shifts[step], slopes[step] = shift, slope
    return tuple(shifts), tuple(slopes)
