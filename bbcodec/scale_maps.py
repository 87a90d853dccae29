"""Scale maps: the encoder's adaptation of a tiled model to the data.

Per coded pyramid level and per pixel group of the likelihood, a :class:`ScaleMap`
``slope * log_scale + shift`` of the predicted log-scales, with integer shift and slope in units
of :data:`SCALE_SHIFT_UNIT` and :data:`SCALE_SLOPE_UNIT` (stored in the file as
``scale_shifts`` and ``scale_slopes``). The encoder chooses them (:func:`choose_level_maps`)
from a sample of about :data:`ADAPT_PIXELS` pixels per level; decoders only read them, so the
choice need not be reproducible bit for bit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from .models.likelihoods import ScaleMap

SCALE_SHIFT_UNIT = 1 / 16  # scale shifts are multiples of this, in natural-log units
SCALE_SHIFT_RANGE = (-16, 32)  # the shifts the encoder considers: e^-1 to e^2 times the scales
SCALE_SLOPE_UNIT = 1 / 16  # log-scale slopes are 1 + multiples of this
SCALE_SLOPE_RANGE = (-8, 4)  # slopes 0.5 to 1.25
ADAPT_PIXELS = 1 << 16  # pixels per pyramid level that the encoder samples to choose scale maps
MAX_ROUNDS = 8
MIN_SAVING = 0.002  # a group keeps the identity map unless another saves this fraction on the sample
FULL_GRID_BELOW = 4096  # groups of fewer sampled sub-pixels search the whole coarse grids
ADAPT_THREADS = 2  # threads sampling levels and searching groups (two cores are common; more gain little)


def scale_map(shift, slope) -> ScaleMap:
    """The :class:`ScaleMap` of integer ``shift`` and ``slope`` (numbers or tensors) in their units."""
    return ScaleMap(1 + slope * SCALE_SLOPE_UNIT, shift * SCALE_SHIFT_UNIT)


def check_level_maps(values, what: str, levels: int, groups: int) -> tuple:
    """``values`` (``scale_shifts`` or ``scale_slopes`` as ``what`` says: per level, one integer
    per pixel group, or empty) as tuples; ``ValueError`` unless they fit ``levels`` levels of
    ``groups`` groups and the range."""
    lo, hi = SCALE_SHIFT_RANGE if what == "scale_shifts" else SCALE_SLOPE_RANGE
    values = tuple(tuple(level) for level in values)
    if values and (len(values) != levels or any(len(level) != groups for level in values)
                   or any(type(v) is not int or not lo <= v <= hi for level in values for v in level)):
        raise ValueError(f"{what.replace('_', ' ')} do not fit the model and image shape")
    return values


def _refine(cost, best: int, lo: int, hi: int, sizes) -> int:
    """Local search from ``best``: for each step size, the best of ``best`` and its two neighbours
    that far away, within ``[lo, hi]`` (ties go to the value nearer zero)."""
    for size in sizes:
        near = [v for v in (best - size, best, best + size) if lo <= v <= hi]
        best = min(near, key=lambda v: (cost(v), abs(v)))
    return best


def _coarse(cost, lo: int, hi: int, step: int, whole: bool) -> int:
    """The best multiple of ``step`` in ``[lo, hi]`` (ties go to the value nearer zero): of all of
    them if ``whole``, else by descent from 0 in whichever direction lowers ``cost``, for as long
    as it falls, which finds the same for a unimodal cost in a few evaluations. Small samples
    search the whole grid: their costs can have two basins (and cost little to evaluate)."""
    def key(v):
        return cost(v), abs(v)

    if whole:
        return min(range(lo, hi + 1, step), key=key)
    best = 0
    for direction in (-step, step):
        v = best + direction
        while lo <= v <= hi and key(v) < key(best):
            best, v = v, v + direction
        if best:
            break
    return best


def choose_scale_maps(likelihood, samples: list[dict], groups: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per pixel group, the integer ``(shift, slope)`` of :func:`choose_group_map` on the group's
    part of ``samples`` (outputs of :meth:`HierarchicalVAECodec.sample_outputs`); zeros for groups
    without samples. Returns ``(shifts, slopes)``."""
    chosen = [choose_group_map(likelihood, [s[group] for s in samples if group in s]) for group in range(groups)]
    return tuple(shift for shift, _ in chosen), tuple(slope for _, slope in chosen)


def choose_group_map(likelihood, found: list) -> tuple[int, int]:
    """The integer ``(shift, slope)`` in :data:`SCALE_SHIFT_RANGE` and :data:`SCALE_SLOPE_RANGE`
    that minimise the code length of one pixel group's sampled sub-pixels (``found``: a list of
    ``(sub-pixels, raw parameters)``), by coordinate descent: the shift on a grid of 4 units
    refined to 1 at slope 1, then the slope on a grid of 2 refined to 1 (grids searched by
    :func:`_coarse`), then each refined in turn until neither moves (at most ``MAX_ROUNDS`` times;
    the cost is smooth, and unimodal on large samples). ``(0, 0)`` without samples, or where the
    best map saves less than ``MIN_SAVING`` of the sample's code length (a gain that small does
    not carry over from the sample to the data). The choice is the encoder's alone (decoders read
    it), so it need not be reproducible bit for bit.
    """
    if not found:
        return 0, 0
    (s_lo, s_hi), (k_lo, k_hi) = SCALE_SHIFT_RANGE, SCALE_SLOPE_RANGE
    sym = torch.cat([f[0] for f in found])
    # float32 is plenty to rank maps (the choice is the encoder's alone) and 20% quicker than float64
    raw = torch.cat([f[1] for f in found]).to(torch.float32)
    log_prob = likelihood.log_prob_by_map(sym, raw)
    costs: dict[tuple[int, int], float] = {}

    def cost(shift: int, slope: int) -> float:
        if (shift, slope) not in costs:
            costs[shift, slope] = -float(log_prob(scale_map(shift, slope)).sum(dtype=torch.float64))
        return costs[shift, slope]

    whole = len(sym) < FULL_GRID_BELOW
    shift = _coarse(lambda v: cost(v, 0), s_lo, s_hi, 4, whole)
    shift = _refine(lambda v: cost(v, 0), shift, s_lo, s_hi, (2, 1))
    slope = _coarse(lambda v: cost(shift, v), k_lo, k_hi, 2, whole)
    slope = _refine(lambda v: cost(shift, v), slope, k_lo, k_hi, (1,))
    for _ in range(MAX_ROUNDS):  # the two interact: alternate until neither moves
        before = (shift, slope)
        shift = _refine(lambda v: cost(v, slope), shift, s_lo, s_hi, (2, 1))
        slope = _refine(lambda v: cost(shift, v), slope, k_lo, k_hi, (1,))
        if (shift, slope) == before:
            break
    if cost(shift, slope) < (1 - MIN_SAVING) * cost(0, 0):  # else too small to trust
        return shift, slope
    return 0, 0


def sample_images(images: torch.Tensor, pixels_per_image: int) -> torch.Tensor:
    """Every k-th of ``images``, about :data:`ADAPT_PIXELS` pixels in all (at least one image)."""
    return images[:: max(1, len(images) * pixels_per_image // ADAPT_PIXELS)]


def choose_level_maps(model, segments, levels: list[int], n_levels: int) -> tuple[tuple, tuple]:
    """``(scale_shifts, scale_slopes)``, per pyramid level, chosen on the coded groups of about
    :data:`ADAPT_PIXELS` pixels of that level's units, spread over its ``segments`` (each a
    :class:`~bbcodec.segments.Segment` of a tiled codec; ``levels``: the level of each).

    Each level's sample and each group's search is a task for :data:`ADAPT_THREADS` threads (torch
    and its kernels release the GIL): on two cores a Kodak image's maps took 0.80 s instead of
    1.09 s (medians of 10). The choice does not depend on it."""
    level_pixels = [0] * n_levels
    for seg, k in zip(segments, levels):
        level_pixels[k] += seg.units[:, 0].numel()

    def level_outputs(k: int) -> list[dict]:
        every = max(1, level_pixels[k] // ADAPT_PIXELS)
        return [seg.codec.sample_outputs(seg.units[::every], given=seg.given is not None)
                for seg, level in zip(segments, levels) if level == k]

    groups = model.steps
    with ThreadPoolExecutor(ADAPT_THREADS) as pool:
        outputs = [pool.submit(level_outputs, k) for k in range(n_levels)]
        searches = [[pool.submit(choose_group_map, model.likelihood, [s[g] for s in level.result() if g in s])
                     for g in range(groups)] for level in outputs]
        chosen = [[search.result() for search in level] for level in searches]
    return (tuple(tuple(shift for shift, _ in level) for level in chosen),
            tuple(tuple(slope for _, slope in level) for level in chosen))
