"""Reference lossless codecs measured on the same data as bbcodec (used by the benches).

Every size is the whole output, and every codec is checked to decode back exactly.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma

import numpy as np


def general_purpose(raw: bytes) -> dict:
    """Byte-stream compressors on a file's raw (uncompressed) bytes: {name: bytes}."""
    out = {"gzip -9": len(gzip.compress(raw, 9, mtime=0)), "bz2 -9": len(bz2.compress(raw, 9)),
           "xz -9e": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))}
    try:
        import zstandard

        out["zstd -19"] = len(zstandard.ZstdCompressor(level=19).compress(raw))
    except ImportError:
        pass
    return out


def _roundtrip(encode, decode, img: np.ndarray) -> int:
    data = encode(img)
    back = decode(data)
    if not np.array_equal(np.asarray(back).reshape(img.shape), img):
        raise AssertionError("baseline codec is not lossless on this image")
    return len(data)


def image_codecs(images: np.ndarray) -> dict:
    """Per-image lossless image codecs, summed over images ``(N, H, W)`` or ``(N, H, W, 3)``:
    {name: total bytes}. Codecs missing from this machine are left out."""
    from PIL import Image

    _grey = images.ndim == 3

    def pil(fmt, **kw):
        def enc(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format=fmt, **kw)
            return buf.getvalue()

        def dec(d):
            im = Image.open(io.BytesIO(d))
            return np.asarray(im.convert("L") if im.mode != "L" and _grey else im)

        return enc, dec

    codecs = {"PNG (optimize)": pil("PNG", optimize=True), "WebP lossless (m6, q100)": pil("WEBP", lossless=True, quality=100, method=6)}
    try:
        import imagecodecs

        if imagecodecs.JPEGXL.available:
            codecs["JPEG-XL lossless (e9)"] = (lambda a: imagecodecs.jpegxl_encode(a, lossless=True, effort=9),
                                               imagecodecs.jpegxl_decode)
        if imagecodecs.JPEG2K.available:
            codecs["JPEG 2000 lossless"] = (lambda a: imagecodecs.jpeg2k_encode(a, level=0, reversible=True),
                                            imagecodecs.jpeg2k_decode)
    except ImportError:
        pass
    totals = {}
    for name, (enc, dec) in codecs.items():
        try:
            totals[name] = sum(_roundtrip(enc, dec, img) for img in images)
        except (AssertionError, ValueError, RuntimeError, OSError) as exc:  # a codec that fails is reported, not hidden
            totals[name] = f"failed: {exc}"
    return totals
