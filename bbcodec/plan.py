"""The coding plan: the batches a message's units are coded in, and the lanes each batch uses.

Start-up cost is kept small three ways. With ``plain_start`` the first units are coded without
bits-back, their latents fixed at the prior's central bins (for models whose latents carry little
information this costs far less than the seeded bits a first bits-back pop would consume), until
the message holds enough bits for the first pop. The batch size then doubles from one unit up to
``batch``, so no batch pops more than the message holds. And the message starts with few lanes
and grows towards ``lanes_per_image * batch`` only as fast as the data already coded can pay for
the new lanes (31 popped bits each, :meth:`bbcodec.ans.Message.grow`), so extra lanes cost almost
nothing but their 5-bit length field at the end. For tiled models a fourth: the first rows of tiles
are cut smaller (:func:`lead_tiles`), so that no tile's pop outgrows what the rows before it put
in the message. And a small chunk starts with fewer lanes (:func:`capped_initial_lanes`).

The plan is either a deterministic function of the estimates in
:class:`~bbcodec.coding_params.CodingParams` and the unit counts (:func:`plan_batches`, which the
decoder recomputes), or, with ``stored_plan``, made batch by batch from the bits really in the
message (:func:`next_batch`) and stored in the chunk (:func:`plan_to_bytes`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .ans import GROW_BITS
from .coding_params import MAX_LANES, CodingParams
from .varint import decode_varint, encode_varint

SAFETY = 0.7  # fraction of the estimated bits in the message that the plan lets a batch spend
INITIAL_LANE_SHARE = 0.002  # the most of a chunk's estimated bits its initial lanes may cost


class Batch(NamedTuple):
    """One batch of the coding plan: how many units, the lane count, and whether bits-back is used
    (otherwise the latents are fixed at the prior's central bins)."""

    units: int
    lanes: int
    bits_back: bool = True


def next_batch(budget: float, remaining: int, lanes: int, prev: int, p: CodingParams) -> Batch:
    """The next batch given ``budget``, the bits the message holds beyond what is locked in lane
    heads. With ``plain_start``, units are coded without bits-back until ``SAFETY * budget`` covers
    one unit's pop. Otherwise the batch pops at most ``SAFETY * budget`` bits, at most doubling the
    previous batch size; lanes grow towards ``lanes_per_image * batch`` with what is left of that
    share."""
    spend = SAFETY * budget
    pop = max(float(p.pop_bits_per_image), 1.0)
    if p.plain_start and spend < pop:
        need = math.ceil((pop - spend) / (SAFETY * max(float(p.bits_per_image), 1.0)))
        return Batch(int(min(p.batch, remaining, max(1, need))), lanes, False)
    b = int(min(p.batch, remaining, max(1, 2 * prev), max(1, spend // pop)))
    want = max(lanes, p.lanes_per_image * b)
    new = int(min(want - lanes, max(0.0, (spend - pop * b) // GROW_BITS)))
    return Batch(b, lanes + new)


def plan_batches(segments, p: CodingParams) -> list[Batch]:
    """The batches planned from estimates alone, a deterministic function of the segments and the
    parameters. ``segments`` is a unit count, or a list of ``(count, params)`` for units coded one
    segment after another (each with its own per-unit estimates; no batch spans two segments).
    The budget starts at the random start heads' 31 bits each (none with ``plain_start``: the heads
    start empty) and grows by ``bits_per_image`` per coded unit, less 31 per added lane."""
    if isinstance(segments, int):
        segments = [(segments, p)]
    plan, lanes, prev = [], p.initial_lanes, 0
    budget = 0.0 if p.plain_start else float(GROW_BITS * p.initial_lanes)
    for count, sp in segments:
        done = 0
        while done < count:
            batch = next_batch(budget, count - done, lanes, prev, sp)
            budget += sp.bits_per_image * batch.units - GROW_BITS * (batch.lanes - lanes)
            plan.append(batch)
            done += batch.units
            lanes, prev = batch.lanes, batch.units
    return plan


def plan_to_bytes(plan: list[Batch]) -> bytes:
    """The plan as varint runs ``(repeat, units, lanes, bits_back)``, preceded by the run count."""
    runs = []
    for batch in plan:
        if runs and runs[-1][1] == batch:
            runs[-1][0] += 1
        else:
            runs.append([1, batch])
    out = [encode_varint(len(runs))]
    for repeat, (units, lanes, bits_back) in runs:
        out += [encode_varint(repeat), encode_varint(units), encode_varint(lanes), encode_varint(int(bits_back))]
    return b"".join(out)


def plan_from_bytes(data: bytes, n_units: int) -> tuple[list[Batch], int]:
    """Inverse of :func:`plan_to_bytes`: ``(plan, bytes read)``; ``ValueError`` unless the plan is
    well formed and codes exactly ``n_units`` units."""
    runs, pos = decode_varint(data, 0)
    plan, total = [], 0
    for _ in range(runs):
        fields = []
        for _ in range(4):
            value, pos = decode_varint(data, pos)
            fields.append(value)
        repeat, units, lanes, bits_back = fields
        total += repeat * units
        if repeat < 1 or units < 1 or lanes < 1 or bits_back > 1 or total > n_units or lanes > MAX_LANES:
            raise ValueError("corrupt coding plan")
        plan += [Batch(units, lanes, bool(bits_back))] * repeat
    if sum(b.units for b in plan) != n_units or any(b.lanes < a.lanes for a, b in zip(plan, plan[1:])):
        raise ValueError("corrupt coding plan")
    return plan, pos


def split_plan(plan: list[Batch], counts: list[int]) -> list[int]:
    """The segment of each batch of ``plan`` for segments of ``counts`` units; ``ValueError`` if a
    batch spans two segments or the counts do not add up."""
    owner, seg, left = [], 0, list(counts)
    for batch in plan:
        while seg < len(left) and left[seg] == 0:
            seg += 1
        if seg == len(left) or batch.units > left[seg]:
            raise ValueError("corrupt coding plan: a batch spans two segments")
        owner.append(seg)
        left[seg] -= batch.units
    if any(left):
        raise ValueError("corrupt coding plan: segment sizes do not add up")
    return owner


def lead_tiles(tile: int, rows: int, row_pixels: int, patch: int, bits_per_patch: float,
               pop_bits_per_patch: float) -> tuple[int, ...]:
    """The tile sizes of the first rows of a level of ``rows`` rows of ``tile``-sized tiles coded on
    an empty message (``row_pixels`` pixels per row): row ``r`` uses the largest of ``patch * 2**k``
    up to ``tile`` whose estimated pop, ``pop_bits_per_patch`` per patch of its area, is at most
    ``SAFETY`` times the estimated bits of the rows before it (``bits_per_patch`` per patch area);
    the sizes end at the first row that can use ``tile``. So the first row uses ``patch``, and a
    model whose latents pop far more than its pixels cost (a greyscale model's) ramps up over a
    few rows instead of coding its first big tiles without bits-back. A level of one row is cut
    smaller only if it holds at least ``4x`` the patches coded without bits-back before the first
    pop (measured on 64x64 crops, fewer lose more context at the extra tile borders than bits-back
    gains)."""
    plain = pop_bits_per_patch / (SAFETY * max(bits_per_patch, 1e-9))
    if rows == 1 and row_pixels / patch ** 2 < 4 * plain:
        return ()
    sizes: list[int] = []
    for row in range(rows):
        budget = SAFETY * bits_per_patch * row * row_pixels / patch ** 2
        size = patch
        while size < tile and pop_bits_per_patch * (2 * size / patch) ** 2 <= budget:
            size *= 2
        if size >= tile:
            break
        sizes.append(size)
    return tuple(sizes)


def capped_initial_lanes(lanes: int, chunk_bits: float) -> int:
    """``lanes``, or fewer for a chunk of ``chunk_bits`` estimated bits: each lane a message starts
    with costs about ``GROW_BITS + 5`` bits at the end (its unused head and its length field),
    where lanes added later are paid for by popped bits, so the initial ones may cost at most
    :data:`INITIAL_LANE_SHARE` of the chunk."""
    return max(1, min(lanes, int(chunk_bits * INITIAL_LANE_SHARE / (GROW_BITS + 5))))
