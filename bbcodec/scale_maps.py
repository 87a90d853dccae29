"""Scale maps: the encoder's adaptation of a tiled model to the data.

Per coded pyramid level and per pixel group of the likelihood, a :class:`ScaleMap`: output
offsets added to the raw likelihood parameters (mixture logits, means and log-scales), then
``slope * log_scale + shift`` of the log-scales. They are integers in units of
:data:`OFFSET_UNIT`, :data:`SCALE_SLOPE_UNIT` and :data:`SCALE_SHIFT_UNIT`, stored in the file
as ``output_offsets``, ``scale_slopes`` and ``scale_shifts`` (files before offsets existed have
only shifts and slopes; this encoder writes offsets and slopes). The encoder chooses them
(:func:`choose_level_maps`) from a sample of about :data:`ADAPT_PIXELS` pixels per level;
decoders only read them, so the choice need not be reproducible bit for bit. Offsets are on the
exact networks' activation grid, so the raw parameters plus offsets are exact in float64.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

from .models.fixedpoint import ACT_BITS
from .models.likelihoods import ScaleMap

SCALE_SHIFT_UNIT = 1 / 16  # scale shifts are multiples of this, in natural-log units
SCALE_SHIFT_RANGE = (-16, 32)  # e^-1 to e^2 times the scales
SCALE_SLOPE_UNIT = 1 / 16  # log-scale slopes are 1 + multiples of this
SCALE_SLOPE_RANGE = (-12, 8)  # slopes 0.25 to 1.5 (files before output offsets: -8 to 4)
OFFSET_UNIT = 2.0 ** -ACT_BITS  # output offsets are multiples of this (the activation grid)
OFFSET_LIMIT = 1 << 16  # |offset| <= 16 (in units: 2**16)
OFFSET_COST_BITS = 24  # about what one stored offset costs in the compressed header
SHIFT_COST_BITS = 16  # about what a stored shift and slope cost
CHEAP_MAPS_BELOW = 20  # fit maps of the log-scales alone where offsets save less than this times their cost
CHEAP_ROWS = 1024  # ... on this many rows
ADAPT_PIXELS = 1 << 16  # pixels per pyramid level that the encoder samples to choose scale maps
FIT_ROWS = 4096  # sampled sub-pixels per group that the fit uses
FIT_ROUNDS = 8  # Levenberg-Marquardt steps of offsets and slope
REFINE_ROUNDS = 2  # further steps of the offsets, the slope rounded
MIN_SAVING = 0.002  # a group keeps the model's outputs unless a map saves this fraction on the sample
ADAPT_THREADS = 2  # threads sampling and fitting levels (two cores are common; more gain little)


class FittedMap(NamedTuple):
    """A group's chosen map in the units of :func:`scale_map` (``offsets`` None for a map of the
    log-scales alone) and the bits it is estimated to save on the coded data, its cost deducted."""

    shift: int
    slope: int
    offsets: tuple | None
    saving_bits: float


def scale_map(shift, slope, offsets=None) -> ScaleMap:
    """The :class:`ScaleMap` of integer ``shift`` and ``slope`` (numbers or tensors) and ``offsets``
    (a sequence of ``nout`` integers, or None) in their units."""
    if offsets is not None:
        offsets = torch.tensor(offsets, dtype=torch.float64) * OFFSET_UNIT
    return ScaleMap(1 + slope * SCALE_SLOPE_UNIT, shift * SCALE_SHIFT_UNIT, offsets)


def check_level_maps(values, what: str, levels: int, groups: int, nout: int = 1) -> tuple:
    """``values`` (``scale_shifts``, ``scale_slopes`` or ``output_offsets`` as ``what`` says: per
    level, one integer per pixel group, or ``nout`` per group for offsets (or none at that level);
    or empty) as tuples; ``ValueError`` unless they fit ``levels`` levels of ``groups`` groups and
    the range."""
    lo, hi = {"scale_shifts": SCALE_SHIFT_RANGE, "scale_slopes": SCALE_SLOPE_RANGE,
              "output_offsets": (-OFFSET_LIMIT, OFFSET_LIMIT)}[what]
    values = tuple(tuple(level) for level in values)
    allowed = (0, groups * nout) if what == "output_offsets" else (groups,)  # a level may do without offsets
    if values and (len(values) != levels or any(len(level) not in allowed for level in values)
                   or any(type(v) is not int or not lo <= v <= hi for level in values for v in level)):
        raise ValueError(f"{what.replace('_', ' ')} do not fit the model and image shape")
    return values


def _sample_rows(found: list, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's ``(sub-pixels, raw parameters)`` at ``rows`` evenly spaced rows (cycled where a
    group has fewer), stacked: ``(G, rows)`` int64 and ``(G, rows, nout)`` float32, the latter
    parameter-major in memory (a permuted view), the layout that the likelihood's ``log_prob``
    computes in, so that neither it nor its backward pass transposes a copy."""
    sym, raw = [], []
    for s, r in found:
        idx = torch.linspace(0, len(s) - 1, min(rows, len(s))).long()
        idx = idx[torch.arange(rows) % len(idx)]
        sym.append(s[idx])
        raw.append(r[idx].to(torch.float32).t())
    return torch.stack(sym), torch.stack(raw, 1).permute(1, 2, 0)


def _fit(likelihood, sym, raw, theta, free, rounds: int):
    """Levenberg-Marquardt on the empirical Fisher information: ``rounds`` damped Gauss-Newton steps
    of every group's parameters ``theta`` (``(G, nout + 2)``: output offsets, slope - 1, shift;
    only the columns ``free``), each group's step kept only where it lowers that group's code
    length (its damping then falls, else it rises). One backward pass gives every row's gradient,
    because a group's parameters act on each of its rows alone. Returns ``theta``."""
    groups, rows = sym.shape
    damping = torch.full((groups,), 1e-2, dtype=torch.float64)

    def cost(th):
        """Each group's code length of the rows and each row's gradient (of the ``free`` columns)."""
        shifted = (raw + th[:, None, :-2]).detach().requires_grad_()
        slopes = (1 + th[:, -2:-1]).expand(groups, rows).contiguous().requires_grad_()
        shifts = th[:, -1:].expand(groups, rows).contiguous().requires_grad_()
        per_row = -likelihood.log_prob(sym, shifted, ScaleMap(slopes.reshape(-1), shifts.reshape(-1)))
        per_row.sum().backward()
        jac = torch.cat([shifted.grad, slopes.grad.unsqueeze(-1), shifts.grad.unsqueeze(-1)], -1)
        return per_row.detach().sum(1), jac[..., free].to(torch.float64)

    current, jac = cost(theta)
    for _ in range(rounds):
        fisher = jac.transpose(1, 2) @ jac
        diagonal = torch.diagonal(fisher, dim1=1, dim2=2)
        # the floor keeps the system regular where parameters do not act (or act alike) on a sample
        floor = 1e-9 * diagonal.mean(1, keepdim=True) + 1e-12
        step, info = torch.linalg.solve_ex(fisher + torch.diag_embed(damping[:, None] * diagonal + floor),
                                           jac.sum(1).unsqueeze(-1))
        trial = theta.clone()
        trial[:, free] -= step.squeeze(-1).to(theta.dtype)
        tried, tried_jac = cost(trial)  # with its gradients: most steps are kept
        better = (tried < current) & (info == 0) & torch.isfinite(trial).all(1)
        theta = torch.where(better[:, None], trial, theta)
        current = torch.where(better, tried, current)
        jac = torch.where(better[:, None, None], tried_jac, jac)
        damping = torch.where(better, damping / 3, damping * 4)
    return theta


def _fit_rounded(likelihood, sym, raw, free: list[int], refine: list[int]) -> torch.Tensor:
    """``theta`` (see :func:`_fit`) from zero: :data:`FIT_ROUNDS` steps of the columns ``free``,
    then the slope rounded to its grid, then :data:`REFINE_ROUNDS` steps of the columns ``refine``."""
    theta = _fit(likelihood, sym, raw, torch.zeros(len(sym), raw.shape[-1] + 2), free, FIT_ROUNDS)
    lo, hi = SCALE_SLOPE_RANGE
    theta[:, -2] = torch.round(theta[:, -2] / SCALE_SLOPE_UNIT).clamp(lo, hi) * SCALE_SLOPE_UNIT
    return _fit(likelihood, sym, raw, theta, refine, REFINE_ROUNDS)


def _fit_offsets(likelihood, sym, raw) -> list[tuple[int, tuple]]:
    """Per group, the integer ``(slope, offsets)``: both fitted, then the offsets refined."""
    nout = raw.shape[-1]
    theta = _fit_rounded(likelihood, sym, raw, list(range(nout + 1)), list(range(nout)))
    slopes = torch.round(theta[:, -2] / SCALE_SLOPE_UNIT).long().tolist()
    offsets = torch.round(theta[:, :nout] / OFFSET_UNIT).clamp(-OFFSET_LIMIT, OFFSET_LIMIT).long().tolist()
    return [(slope, tuple(offset)) for slope, offset in zip(slopes, offsets)]


def _fit_shifts(likelihood, sym, raw) -> list[tuple[int, int]]:
    """Per group, the integer ``(shift, slope)`` of the log-scales alone (the maps of files before
    offsets): both fitted, then the shift refined."""
    nout = raw.shape[-1]
    theta = _fit_rounded(likelihood, sym, raw, [nout, nout + 1], [nout + 1])
    lo, hi = SCALE_SHIFT_RANGE
    shifts = torch.round(theta[:, -1] / SCALE_SHIFT_UNIT).clamp(lo, hi).long().tolist()
    return list(zip(shifts, torch.round(theta[:, -2] / SCALE_SLOPE_UNIT).long().tolist()))


def fit_group_maps(likelihood, found: list, weight: float = 1.0) -> list:
    """Per pixel group, the scale map that minimises the code length of its sampled sub-pixels plus
    what the map costs to store (a :class:`FittedMap`), or None to keep the model's outputs.
    ``found``: per group, ``(sub-pixels (M,), raw parameters (M, nout))``; ``weight``: the coded
    sub-pixels each sampled one stands for.

    All groups are fitted at once, each on :data:`FIT_ROWS` of its rows, in float32, by
    Levenberg-Marquardt: the slope and ``nout`` output offsets (about :data:`OFFSET_COST_BITS`
    each to store); and, for groups whose saving would not dwarf that cost, the slope and a shift of
    the log-scales alone (a few bits). A group keeps the model's outputs unless a map saves, on its
    whole sample, :data:`MIN_SAVING` of the code length and more than the map costs. The choice
    is the encoder's alone (decoders read it), so it need not be reproducible bit for bit."""
    if not found:
        return []
    nout = found[0][1].shape[-1]
    with torch.enable_grad():
        sym, raw = _sample_rows(found, FIT_ROWS)
        offset_maps = _fit_offsets(likelihood, sym, raw)

    found32 = [(s, r.to(torch.float32)) for s, r in found]

    def bits(group: int, mapping) -> float:
        s, r = found32[group]
        return -float(likelihood.log_prob(s, r, mapping).sum(dtype=torch.float64)) * weight / math.log(2)

    with torch.no_grad():
        plain = [bits(g, None) for g in range(len(found))]
        candidates = [[(plain[g], None)] for g in range(len(found))]
        for g, (slope, offsets) in enumerate(offset_maps):
            candidates[g].append((bits(g, scale_map(0, slope, offsets)) + OFFSET_COST_BITS * nout, (0, slope, offsets)))
    cheap = [g for g in range(len(found)) if plain[g] - candidates[g][1][0] < CHEAP_MAPS_BELOW * OFFSET_COST_BITS * nout]
    if cheap:  # two parameters need fewer rows
        with torch.enable_grad():
            shift_maps = _fit_shifts(likelihood, *_sample_rows([found[g] for g in cheap], CHEAP_ROWS))
        with torch.no_grad():
            for g, (shift, slope) in zip(cheap, shift_maps):
                candidates[g].append((bits(g, scale_map(shift, slope)) + SHIFT_COST_BITS, (shift, slope, None)))
    chosen = []
    for g, options in enumerate(candidates):
        best_bits, best = min(options, key=lambda option: option[0])
        keep = best is not None and best_bits < (1 - MIN_SAVING) * plain[g]
        chosen.append(FittedMap(*best, plain[g] - best_bits) if keep else None)
    return chosen


def sample_images(images: torch.Tensor, pixels_per_image: int) -> torch.Tensor:
    """Every k-th of ``images``, about :data:`ADAPT_PIXELS` pixels in all (at least one image)."""
    return images[:: max(1, len(images) * pixels_per_image // ADAPT_PIXELS)]


def choose_level_maps(model, segments, levels: list[int], n_levels: int) -> tuple[tuple, float]:
    """``((scale_shifts, scale_slopes, output_offsets), saving_bits)``: the maps per pyramid level (per group for shifts and
    slopes, ``nout`` per group for offsets, or none at a level that needs none; zeros where a group
    keeps the model's outputs or does without), fitted (:func:`fit_group_maps`) on the coded groups of about :data:`ADAPT_PIXELS`
    pixels of that level's units, spread over its ``segments`` (each a
    :class:`~bbcodec.segments.Segment` of a tiled codec; ``levels``: the level of each).

    Each level's sample and fit is a task for :data:`ADAPT_THREADS` threads (torch and its kernels
    release the GIL). The choice does not depend on it. ``saving_bits``: the bits the maps are
    estimated to save, what each group's map costs deducted."""
    level_pixels = [0] * n_levels
    for seg, k in zip(segments, levels):
        level_pixels[k] += seg.units[:, 0].numel()
    groups, nout = model.steps, model.likelihood.nout

    def level_maps(k: int) -> tuple:
        every = max(1, level_pixels[k] // ADAPT_PIXELS)
        sampled = [(seg.units[::every], seg.codec.sample_outputs(seg.units[::every], given=seg.given is not None))
                   for seg, level in zip(segments, levels) if level == k]
        weight = level_pixels[k] / max(1, sum(units[:, 0].numel() for units, _ in sampled))
        present = [g for g in range(groups) if any(g in out for _, out in sampled)]
        fitted = dict(zip(present, fit_group_maps(
            model.likelihood, [(torch.cat([out[g][0] for _, out in sampled if g in out]),
                                torch.cat([out[g][1] for _, out in sampled if g in out])) for g in present], weight)))
        chosen = [fitted.get(g) or FittedMap(0, 0, None, 0.0) for g in range(groups)]
        offsets = tuple(v for c in chosen for v in (c.offsets or (0,) * nout))
        return (tuple(c.shift for c in chosen), tuple(c.slope for c in chosen), offsets if any(offsets) else (),
                sum(c.saving_bits for c in chosen))

    with ThreadPoolExecutor(ADAPT_THREADS) as pool:
        chosen = list(pool.map(level_maps, range(n_levels)))
    return tuple(tuple(level[i] for level in chosen) for i in range(3)), sum(level[3] for level in chosen)
