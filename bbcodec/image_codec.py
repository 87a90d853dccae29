"""Deprecated: this module was split into coding_params, plan, segments, scale_maps and image_codecs.
Kept only because bbcodec.protocol still imports ProtocolCodec and coding_defaults from here."""
from .coding_params import CodingParams, check_coding  # noqa: F401
from .image_codecs import (BatchedImageCodec, ContextVAECodec, HierarchicalVAECodec,  # noqa: F401
                           ProtocolCodec, coding_defaults)
