"""bbcodec: lossless compression by bits-back coding with variational autoencoders.

Python API (the command-line tool is a thin shell over it)::

    import bbcodec
    bbcodec.compress("digits.idx.gz")                 # -> digits.idx.gz.bbc
    bbcodec.decompress("digits.idx.gz.bbc", "out.gz")  # byte-identical to the input
    bbcodec.evaluate("digits.idx.gz")                  # negative ELBO vs achieved code length

Layers, from the bottom: :mod:`bbcodec.ans` (vectorised rANS), :mod:`bbcodec.entropy_models`
(exactly quantised distributions), :mod:`bbcodec.codecs` (composable push/pop codecs, bits-back),
:mod:`bbcodec.models` (networks), :mod:`bbcodec.image_codec` (models + codecs),
:mod:`bbcodec.api` (files).
"""

__version__ = "0.1.0"

from .errors import BBCodecError  # noqa: F401


def __getattr__(name):  # lazy: importing bbcodec stays cheap
    if name in ("compress", "decompress", "evaluate", "info", "compress_images", "decompress_images"):
        from . import api

        return getattr(api, name)
    if name in ("train",):
        from . import train

        return train
    raise AttributeError(name)
