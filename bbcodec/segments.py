"""Segment coding: runs of coding units, each with its own codec, coded one after another on one
message (a chunk of a file), and the seeds of every message and sample.

A coding *unit* is what a codec codes as one of its "images": a whole image for whole-image
models, a tile for tiled ones (:mod:`bbcodec.layout` makes the segments).

**Seeds.** Every seed that shapes a file or a measurement comes from here: chunk ``index``'s
message uses :func:`chunk_seed` (its random start heads and the seeded words pops draw when it
runs dry; the decoder must use the same), and a negative ELBO's latent samples use
:data:`ELBO_SEED`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .ans import Message
from .plan import next_batch, plan_batches, plan_from_bytes, plan_to_bytes, split_plan

ELBO_SEED = 0  # the generator of the latent samples of a negative ELBO (evaluation, measurement)


def chunk_seed(index: int) -> int:
    """The seed of chunk ``index``'s message: the index itself."""
    return index


class Segment(NamedTuple):
    """Units coded one after another on a shared message by one codec. ``given`` (same shape as
    ``units``, or None) holds pixels already known to the decoder (see
    :meth:`~bbcodec.image_codecs.base.BatchedImageCodec._batch_codec`); only those entries of it
    are read."""

    codec: "BatchedImageCodec"  # noqa: F821
    units: torch.Tensor
    given: torch.Tensor | None = None


@dataclass
class EncoderState:
    """Where :func:`encode_segments` stopped: its message, the plan so far, the last batch's size,
    the units coded and its start time; ``resume=`` carries on from there."""

    msg: Message
    plan: list
    prev: int
    units_done: int
    started: float


class Starved(Exception):
    """:func:`encode_segments` stopped at the start of segment ``segment``, whose plan would code a
    first batch of ``units`` units without bits-back, the message not holding the bits their pop
    takes (see ``stop_if_starved``); ``state`` resumes the encoding there."""

    def __init__(self, segment: int, units: int, state: EncoderState):
        super().__init__(f"segment {segment} is starved of bits for the pops of {units} units")
        self.segment, self.units, self.state = segment, units, state


@dataclass
class CodingStats:
    bits: int = 0  # ANS message size (stream + packed heads)
    initial_bits: int = 0  # seeded bits consumed (random heads + seeded words)
    head_bits: int = 0
    lanes: int = 0
    batches: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def encode_segments(segments: list[Segment], chunk: int = 0, progress=None,
                    stop_if_starved: dict | None = None, resume: EncoderState | None = None) -> tuple[bytes, CodingStats]:
    """Encode the segments in order onto the message of chunk ``chunk``; returns the chunk bytes
    (the plan, if stored, then the ANS message) and statistics. Start-up settings
    (``initial_lanes``, ``plain_start``, ``stored_plan``) come from the first segment's codec.

    Raises :class:`Starved` where the plan would code the first batch of segment ``i`` without
    bits-back and of at least ``stop_if_starved[i]`` units. The caller may then cut the units from
    there on differently and pass the exception's ``state`` as ``resume``: the encoding carries on
    after its first ``state.units_done`` units (of ``segments`` as they are now; those must be the
    units it coded), with the bytes a fresh encoding of the new segments would give wherever that
    plans the same batches up to there, and a valid chunk in any case.

    With ``stored_plan`` each batch is planned from :meth:`Message.content_bits`, the bits really
    in the message, rather than from ``bits_per_image``; units that cost far less than the
    estimate (a white sky) then cannot starve the bits-back pops of later batches."""
    p = segments[0].codec.params
    fixed = None if p.stored_plan else plan_batches([(len(s.units), s.codec.params) for s in segments], p)
    if resume is None:
        msg = Message((p.initial_lanes if fixed is None else fixed[0].lanes,), seed=chunk_seed(chunk),
                      random_heads=not p.plain_start)
        plan, prev, done, t0 = [], 0, 0, time.perf_counter()
    else:
        msg, plan, prev, done, t0 = resume.msg, resume.plan, resume.prev, resume.units_done, resume.started
    stop_if_starved, before = stop_if_starved or {}, 0
    with torch.inference_mode():
        for index, (codec, units, given) in enumerate(segments):
            skip = min(len(units), max(0, done - before))  # units coded before a resume
            before += len(units)
            if skip == len(units):
                continue
            units = units[skip:].to(torch.int64)  # once: the batches are views of it
            given = None if given is None else given[skip:]
            start, n = 0, len(units)
            with codec.posteriors_ahead(units):
                while start < n:
                    lanes = msg.lane_shape[0]
                    batch = fixed[len(plan)] if fixed else next_batch(msg.content_bits(), n - start, lanes, prev,
                                                                      codec.params)
                    if (not batch.bits_back and start == skip == 0
                            and batch.units >= stop_if_starved.get(index, math.inf)):
                        raise Starved(index, batch.units, EncoderState(msg, plan, prev, done, t0))
                    if batch.lanes > lanes:
                        msg.grow((batch.lanes,))
                    part = slice(start, start + batch.units)
                    coder = codec._batch_codec(batch.units, batch.bits_back,
                                               None if given is None else given[part].to(torch.int64))
                    coder.push(msg, units[part])
                    plan.append(batch)
                    start += batch.units
                    done += batch.units
                    prev = batch.units
                    if progress:
                        progress(batch.units)
    stored = plan_to_bytes(plan) if fixed is None else b""
    stats = CodingStats(bits=msg.bits(), initial_bits=msg.initial_bits,
                        head_bits=msg.bits() - 32 * msg.stream_words, lanes=msg.lane_shape[0],
                        batches=len(plan), seconds=time.perf_counter() - t0,
                        extra={"plain_images": sum(b.units for b in plan if not b.bits_back),
                               "plan_bits": 8 * len(stored)})
    return stored + msg.to_bytes(), stats


def decode_segments(data: bytes, codecs: list, counts: list[int], given_for=None, chunk: int = 0,
                    progress=None, on_batch=None) -> list[torch.Tensor]:
    """Inverse of :func:`encode_segments`: the units of each segment. Segments come off the message
    last first; ``given_for(k, decoded)``, with ``decoded`` the dict of segments already decoded
    (all after ``k``), returns segment ``k``'s ``given`` tensor (or None). ``on_batch(units)``,
    where given, sees each batch as it comes off, last units first. Verifies that the message
    returns to its seeded start state."""
    p = codecs[0].params
    if p.stored_plan:
        plan, offset = plan_from_bytes(data, sum(counts))
        start_lanes = p.initial_lanes
    else:
        plan, offset = plan_batches(list(zip(counts, (c.params for c in codecs))), p), 0
        start_lanes = plan[0].lanes
    owner = split_plan(plan, counts)
    seed = chunk_seed(chunk)
    msg = Message.from_bytes(data[offset:], seed=seed)
    if msg.lane_shape != (plan[-1].lanes,):
        raise ValueError(f"message has {msg.lane_shape} lanes, the coding plan expects {plan[-1].lanes}")
    # Memory grows with the units really decoded (parts per segment, joined when it is done), and
    # a valid message never runs dry while decoding (its state retraces the encoder's), so a
    # header that claims more units than the chunk holds fails as soon as the bits run out.
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
            coder = codec._batch_codec(size, bits_back, None if given is None else given[part].to(torch.int64))
            parts.append(coder.pop(msg).to(torch.uint8))
            if msg.initial_words:
                raise ValueError("corrupt data: the message ran out before the images did")
            if on_batch is not None:
                on_batch(parts[-1])
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
