"""The architecture registry: for each ``arch`` name a model config can carry, how to build the
network and how to code images with it. Everything that differs between architectures is here,
so no other module branches on the name.

* ``build(config) -> nn.Module``: the network, from its JSON config;
* ``codec(model, params, grey, tile, shifts, slopes) -> BatchedImageCodec`` (:mod:`bbcodec.image_codecs`);
* ``tiled``: codes tiles of images of any size (the pyramid, scale maps, grey mode apply), rather
  than whole images of one shape;
* ``check(loaded, images, pixels)``: raises a ``UsageError`` naming what does not fit;
* ``coding``: coding defaults a newly trained model of this architecture gets, beside the
  estimates measured from it (:func:`bbcodec.training.measured_coding`).

``register`` adds one (the model protocol's objects use ``"protocol"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable
    codec: Callable
    tiled: bool
    check: Callable
    coding: dict = field(default_factory=dict)  # coding defaults of newly trained models of this arch


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.name] = arch
    return arch


def architecture(name) -> Architecture:
    """The registered architecture ``name``; ``ValueError`` if there is none."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"unknown model architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[name]


def _usage(message: str):
    from .fileio import UsageError

    return UsageError(message)


def _check_pixels(loaded, pixels: str) -> None:
    if loaded.config.get("pixels") == "binary" and pixels != "binary":
        raise _usage(f"model {loaded.name} codes binary (0/1) images; the data has 8-bit values")


# ------------------------------------------------------------------------------ built-ins
def _build_context(config):
    from .models.context_vae import ContextVAE, ContextVAEConfig

    return ContextVAE(ContextVAEConfig.from_dict(config))


def _codec_context(model, params, **_):
    from .image_codecs.context import ContextVAECodec

    return ContextVAECodec(model, params)


def _check_context(loaded, images, pixels):
    cfg = loaded.config
    want, size = (cfg.get("height"), cfg.get("width")), tuple(images.shape[-2:])
    if images.dim() != 3:
        raise _usage(f"model {loaded.name} codes greyscale images; the data is colour")
    if size != want:
        raise _usage(f"model {loaded.name} codes {want[0]}x{want[1]} images; the data is {size[0]}x{size[1]}")
    _check_pixels(loaded, pixels)


def _build_hierarchical(config):
    from .models.hierarchical_vae import HierarchicalVAE, HierarchicalVAEConfig

    return HierarchicalVAE(HierarchicalVAEConfig.from_dict(config))


def _codec_hierarchical(model, params, grey=False, tile=None, shifts=None, slopes=None, offsets=None):
    from .image_codecs.hierarchical import HierarchicalVAECodec

    return HierarchicalVAECodec(model, params, grey=grey, tile=tile, scale_shifts=shifts, scale_slopes=slopes,
                                output_offsets=offsets)


def _check_hierarchical(loaded, images, pixels):
    channels = loaded.config.get("channels", 3)
    if images.dim() == 4 and images.shape[1] != channels:
        raise _usage(f"model {loaded.name} codes {channels}-channel images; the data has {images.shape[1]}")
    _check_pixels(loaded, pixels)


def _build_protocol(config):
    raise ValueError("protocol models are Python objects, not model files: pass the object itself")


def _codec_protocol(model, params, **_):
    from .image_codecs.generic import ProtocolCodec

    return ProtocolCodec(model, params)


def _check_protocol(loaded, images, pixels):
    want = tuple(loaded.model.image_shape)
    if tuple(images.shape[1:]) != want:
        raise _usage(f"model {loaded.name} codes images of shape {want}; the data has {tuple(images.shape[1:])}")
    _check_pixels(loaded, pixels)


register(Architecture("context_vae", _build_context, _codec_context, False, _check_context))
register(Architecture("hierarchical_vae", _build_hierarchical, _codec_hierarchical, True, _check_hierarchical,
                      {"pyramid": 256, "tile": 128, "adapt": True, "lanes_per_image": 16}))
register(Architecture("protocol", _build_protocol, _codec_protocol, False, _check_protocol))
