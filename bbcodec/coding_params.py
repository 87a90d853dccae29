"""The coding options, in one table (:data:`OPTIONS`) from which everything about them is derived.

Each row names an option, its type and range, whether a file stores it (the decoder needs it) or
only the encoder reads it, the value a file written before the option existed takes, and its
command-line help. Derived from the table:

* :class:`CodingParams`, the stored parameters, and :class:`EncoderOptions`, the encoder-only ones;
* :data:`STORED_KEYS`, the order in which a file stores the parameters (``container.CODING_KEYS``);
* :data:`CODING_LIMITS` and :func:`check_coding`, the ranges checked alike for what users ask and
  what files say;
* :data:`OLD_FILE_DEFAULTS` (applied by :func:`file_coding`);
* :func:`cli_options`, the command line's coding options.

**Adding an option** is a row at the end of :data:`OPTIONS` (files store the parameters as a
positional list, so rows are only ever appended), plus its use where it acts.

Only the standard library is imported here: the CLI reads the table at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, make_dataclass, field

MODEL_DEFAULT = None  # old_default: a file without the key takes the model's coding default


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # int, float, bool, or tuple (per pyramid level, a list of integers)
    bounds: tuple  # (lowest, highest) for int and float; for tuple, (most levels, most integers per level)
    default: object  # when neither the model's coding defaults nor the user give it
    stored: bool  # recorded in files (the decoder needs it), or read by the encoder alone
    doc: str
    old_default: object = MODEL_DEFAULT  # what a file written before the option existed means
    cli: str | None = None  # the command line's help, for options it offers


OPTIONS = (
    Option("batch", int, (1, 1 << 12), 64, True,
           "images (coding units) per bits-back step",
           cli="images per bits-back step (speed vs start-up cost)"),
    Option("lanes_per_image", int, (1, 1 << 12), 98, True,
           "coder lanes per image of a full batch (lanes grow towards lanes_per_image * batch)",
           cli="coder lanes per image in a batch (speed vs rate)"),
    Option("initial_lanes", int, (1, 1 << 16), 64, True, "the message's lanes at the start"),
    Option("bits_per_image", float, (1e-3, 1e9), 500.0, True,
           "net bits an image adds to the message, about its negative ELBO (an estimate that paces "
           "the start-up, see :mod:`bbcodec.plan`)"),
    Option("precision", int, (16, 31), 24, True, "pixel and posterior precision (bits)"),
    Option("pack", int, (1, 15), 14, True, "binary pixels per rANS symbol"),
    Option("tile", int, (0, 512), 0, True, "tiled models: the largest tile size to use (0: the model's "
           "training patch)", cli="tiled models: largest tile size (0: the model's patch)"),
    Option("plain_start", bool, (), False, True,
           "code the first images with fixed latents instead of seeded bits", old_default=False),
    Option("stored_plan", bool, (), False, True,
           "plan each batch from the bits really in the message; store the plan", old_default=False),
    Option("pyramid", int, (0, 1 << 31), 0, True,
           "tiled models: split images at least this big on the shorter side (0: never)", old_default=0,
           cli="tiled models: code images at least this big (shorter side) given a 4x-subsampled copy (0: never)"),
    Option("pop_bits_per_image", float, (0.0, 1e9), 400.0, True,
           "bits an image's latents' bits-back pop takes, about ``latent_dim * latent_bits - KL`` (an "
           "estimate that paces the start-up)"),
    Option("scale_shifts", tuple, (64, 64), (), True,
           "tiled models: per coded pyramid level, one integer per pixel group, the shift of the "
           "group's log-scales in units of :data:`bbcodec.scale_maps.SCALE_SHIFT_UNIT` (empty: none)"),
    Option("scale_slopes", tuple, (64, 64), (), True,
           "tiled models: as ``scale_shifts``, the slope of the log-scales minus one in units of "
           ":data:`bbcodec.scale_maps.SCALE_SLOPE_UNIT`"),
    Option("adapt", bool, (), False, False,
           "tiled models: choose scale_slopes and output_offsets for the data when encoding",
           cli="tiled models: fit each pixel step's scales to the data, stored in the file (default: the model's)"),
    Option("lead_tiles", tuple, (64, 64), None, True,
           "tiled models: per pyramid level, the tile sizes of its first rows of tiles (empty: one row of "
           "patch-sized tiles on the first level; the encoder's default, None, chooses them with "
           ":func:`bbcodec.plan.lead_tiles`)", old_default=()),
    Option("output_offsets", tuple, (64, 1 << 12), (), True,
           "tiled models: per coded pyramid level, for each pixel group in turn, the offsets added to its "
           "raw likelihood parameters, in units of :data:`bbcodec.scale_maps.OFFSET_UNIT` (empty: none)",
           old_default=()),
    Option("edge_tiles", bool, (), None, True,
           "tiled models: pad images to a multiple of the model's patch only and cut the rows and columns "
           "that do not fill a whole tile into smaller tiles, instead of padding to whole tiles (see "
           ":class:`bbcodec.tiling.Level`; the encoder's default, None, uses them where they change the "
           "tiling)", old_default=False),
    Option("units_reversed", bool, (), False, True,
           "whole-image models: each chunk's images are coded last first, so that they decode first "
           "first (decompression then deflates a gzip-wrapped file alongside the decoding; the encoder "
           "sets it for those files)", old_default=False),
)
_BY_NAME = {o.name: o for o in OPTIONS}

STORED_KEYS = tuple(o.name for o in OPTIONS if o.stored)  # a file's positional order
ENCODER_KEYS = tuple(o.name for o in OPTIONS if not o.stored)
OLD_FILE_DEFAULTS = {o.name: o.old_default for o in OPTIONS if o.stored and o.old_default is not MODEL_DEFAULT}
CODING_LIMITS = {o.name: (o.kind, *o.bounds) for o in OPTIONS}
MAX_LANES = 1 << 22  # batch * lanes_per_image


def _docstring(title: str, stored: bool) -> str:
    rows = "\n".join(f"* ``{o.name}``: {o.doc}" for o in OPTIONS if o.stored == stored)
    return f"{title}\n\n{rows}\n"


def _to_dict(self) -> dict:
    return dict(self.__dict__)


def _dataclass(name: str, stored: bool, doc: str):
    cls = make_dataclass(name, [(o.name, o.kind, field(default=o.default)) for o in OPTIONS if o.stored == stored],
                         namespace={"to_dict": _to_dict})
    cls.__module__, cls.__doc__ = __name__, _docstring(doc, stored)
    return cls


CodingParams = _dataclass("CodingParams", True, (
    "The coding parameters a file stores: knobs that trade rate for speed, the start-up's estimates "
    "(the plan is a deterministic function of them and the unit counts) and the encoder's "
    "adaptation of the model to the data."))
EncoderOptions = _dataclass("EncoderOptions", False, "Options only the encoder reads (files do not store them).")


def split_coding(coding: dict):
    """``(CodingParams, EncoderOptions)`` of a checked ``coding`` dict (see :func:`check_coding`)."""
    check_coding(coding)
    return (CodingParams(**{k: v for k, v in coding.items() if _BY_NAME[k].stored}),
            EncoderOptions(**{k: v for k, v in coding.items() if not _BY_NAME[k].stored}))


def file_coding(coding: dict) -> dict:
    """The coding parameters a file's header gives, with :data:`OLD_FILE_DEFAULTS` for the keys it
    lacks (files written before those options existed); other missing keys take the model's
    coding defaults."""
    return {**OLD_FILE_DEFAULTS, **coding}


def check_coding(coding: dict) -> None:
    """``ValueError`` naming the first unknown key or out-of-range value of ``coding``: no value
    inside :data:`CODING_LIMITS` can make planning loop or allocate without bound."""
    for key, value in coding.items():
        if key not in CODING_LIMITS:
            raise ValueError(f"unknown coding parameter {key!r:.40} (known: {', '.join(CODING_LIMITS)})")
        kind, *bounds = CODING_LIMITS[key]
        if kind is bool:
            ok = type(value) is bool
        elif kind is tuple:
            ok = isinstance(value, (list, tuple)) and len(value) <= bounds[0] and all(
                isinstance(level, (list, tuple)) and len(level) <= bounds[1] for level in value)
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


def cli_options() -> list[Option]:
    """The options the command line offers (``--name-with-dashes``; integers from their lowest
    value up, on/off flags for booleans), in table order."""
    return [o for o in OPTIONS if o.cli is not None]
