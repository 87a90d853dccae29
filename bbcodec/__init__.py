"""bbcodec: lossless compression by bits-back coding with variational autoencoders.

Python API (the command-line tool is a thin shell over it)::

    import bbcodec
    bbcodec.compress("digits.idx.gz")                 # -> digits.idx.gz.bbc
    bbcodec.decompress("digits.idx.gz.bbc", "out.gz")  # byte-identical to the input
    bbcodec.evaluate("digits.idx.gz")                  # negative ELBO vs achieved code length
    bbcodec.train("train-idx3-ubyte.gz", "my-model", epochs=5)  # as `bbcodec train`

The package namespace holds :data:`__all__`: ``compress``, ``decompress``, ``evaluate``, ``info``,
``compress_images``, ``decompress_images`` (from :mod:`bbcodec.api`), ``train`` (the function
:func:`bbcodec.training.train`; the module is :mod:`bbcodec.training`), the model protocol's
``BitsBackModel`` and ``GaussianVAE`` (:mod:`bbcodec.protocol`) and ``exact`` (exact networks,
:mod:`bbcodec.exact`), ``BBCodecError`` and ``__version__``. They are imported on first use, so ``import bbcodec`` does not import torch.

Layers, from the bottom: :mod:`bbcodec.ans` (vectorised rANS), :mod:`bbcodec.entropy_models`
(exactly quantised distributions), :mod:`bbcodec.codecs` (composable push/pop codecs, bits-back),
:mod:`bbcodec.models` (networks), :mod:`bbcodec.image_codecs` (models + codecs),
:mod:`bbcodec.plan`, :mod:`bbcodec.segments` and :mod:`bbcodec.layout` (coding units in chunks),
:mod:`bbcodec.api` (files), :mod:`bbcodec.zoo` (model files, embedded and user models),
:mod:`bbcodec.training` (training).
"""

__version__ = "0.1.0"

from .errors import BBCodecError

_LAZY = {  # name -> the submodule that defines it, imported on first use
    "compress": "api", "decompress": "api", "evaluate": "api", "info": "api",
    "compress_images": "api", "decompress_images": "api",
    "train": "training",
    "BitsBackModel": "protocol", "GaussianVAE": "protocol", "exact": "exact",
}

__all__ = ["compress", "decompress", "evaluate", "info", "compress_images", "decompress_images", "train",
           "BitsBackModel", "GaussianVAE", "exact", "BBCodecError", "__version__"]


def __getattr__(name):  # lazy: importing bbcodec stays cheap
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
