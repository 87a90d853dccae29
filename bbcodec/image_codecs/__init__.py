"""The per-architecture codecs: batched bits-back coding of coding units with a model.

:mod:`.base` holds what they share (:class:`BatchedImageCodec`, the measured start-up estimates);
:mod:`.context` codes whole images with the context VAE, :mod:`.hierarchical` colour tiles with the
hierarchical VAE, :mod:`.generic` any model of :mod:`bbcodec.protocol`. The registry
(:mod:`bbcodec.registry`) picks one per architecture.
"""

from .base import BatchedImageCodec, coding_defaults
from .context import ContextVAECodec
from .generic import ProtocolCodec
from .hierarchical import HierarchicalVAECodec

__all__ = ["BatchedImageCodec", "coding_defaults", "ContextVAECodec", "HierarchicalVAECodec", "ProtocolCodec"]
