"""Input files: read images plus what is needed to restore the file exactly, and restore it.

Supported kinds and what decompression restores:

* ``idx``: MNIST IDX (uint8, rank 3), plain or gzipped: the file, byte for byte (a gzipped file
  is re-deflated with the zlib settings that reproduce it, found and verified at compression);
* ``npy``: uint8 ``.npy`` arrays ``(N, H, W)`` or ``(N, H, W, 3)``: the file, byte for byte;
* ``cifar``: CIFAR-10 binary batches (``.bin``, optionally gzipped): the file, byte for byte
  (labels travel as side data);
* ``png``: a PNG image: identical pixels, size and mode (not the same PNG bytes);
* ``pnm``: a binary PPM/PGM image (P6/P5): identical pixels, size and mode.

Every reader verifies that its writer reproduces the original before anything is compressed, so
an input that cannot be restored exactly is refused up front with a clear message.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .datasets import DataError, is_cifar_name, parse_cifar, parse_idx


@dataclass
class ImageFile:
    kind: str
    images: torch.Tensor  # (N, H, W) grey or (N, 3, H, W) colour, uint8
    restore: dict = field(default_factory=dict)  # small JSON-able facts needed to rebuild the file
    side_data: bytes = b""  # e.g. CIFAR labels, PNG alpha
    sha256: str = ""  # of the original file bytes (PNG: of the canonical pixel description)
    content_sha256: str = ""  # of the file's content inside any gzip wrapper (already verified)
    # read_image_bytes(..., finish_gzip_later=True): the rest of the gzip check, or None
    gzip_check: object = field(default=None, repr=False, compare=False)

    @property
    def pixels(self) -> str:
        """``"binary"`` when every value is 0 or 1, else ``"uint8"``."""
        return "binary" if bool((self.images <= 1).all()) else "uint8"


# ---------------------------------------------------------------------------------- gzip
_GZIP_TRIES = [(9, 8), (6, 8), (8, 8), (7, 8), (5, 8), (4, 8), (3, 8), (2, 8), (1, 8), (9, 9), (6, 9), (0, 8)]


def _gzip_header_end(raw: bytes) -> int:
    flags = raw[3]
    pos = 10
    if flags & 4:  # FEXTRA
        pos += 2 + struct.unpack_from("<H", raw, pos)[0]
    if flags & 8:  # FNAME
        pos = raw.index(b"\0", pos) + 1
    if flags & 16:  # FCOMMENT
        pos = raw.index(b"\0", pos) + 1
    if flags & 2:  # FHCRC
        pos += 2
    return pos


def _deflate(data: bytes, level: int, mem: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15, mem)
    return c.compress(data) + c.flush()


def _gzip_trailer(crc: int, size: int) -> bytes:
    return struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def _restore_info(header: bytes, level: int, mem: int) -> dict:
    """What a file records to rebuild its gzip wrapper: the header and the zlib setting."""
    return {"h": base64.b64encode(header).decode(), "l": level, "m": mem}


def gzip_rebuild(header: bytes, data: bytes, level: int, mem: int) -> bytes:
    return header + _deflate(data, level, mem) + _gzip_trailer(zlib.crc32(data), len(data))


GZIP_PIECE = 1 << 16  # bytes fed to a candidate deflater at a time when checking it
GZIP_QUICK = 1 << 20  # content bytes every setting is checked on before the rest may run in the background
GZIP_QUICK_OUTPUT = 1 << 16  # ... and at least this much of its output (deflate holds back its first block)


class _DeflateCheck:
    """Whether deflating ``data`` with one zlib setting gives exactly ``stream``, checked as the
    data is fed (:meth:`advance`) and dropped at the first byte that differs: what ``compress()``
    has returned is final (``flush()`` only appends), so it must be a prefix of ``stream``. The
    output does not depend on how the data is cut into pieces."""

    def __init__(self, stream: memoryview, data: bytes, level: int, mem: int):
        self.stream, self.data = stream, memoryview(data)
        self._z = zlib.compressobj(level, zlib.DEFLATED, -15, mem)
        self._fed = self._out = 0
        self._flushed = False
        self.ok = True  # no byte has differed so far

    def _take(self, out: bytes) -> None:
        if out:
            end = self._out + len(out)
            self.ok = end <= len(self.stream) and self.stream[self._out: end] == out
            self._out = end

    @property
    def fed_all(self) -> bool:
        return self._fed == len(self.data)

    def advance(self, until: int | None = None, min_output: int = 0) -> bool:
        """Feed the data up to byte ``until``, and on until ``min_output`` bytes of output have been
        compared (None: all of it, then flush and check the length too); whether every byte so far
        matches."""
        end = len(self.data) if until is None else min(until, len(self.data))
        while self.ok and not self.fed_all and (self._fed < end or self._out < min_output):
            piece = self.data[self._fed: self._fed + GZIP_PIECE]
            self._fed += len(piece)
            self._take(self._z.compress(piece))
        if self.ok and until is None and not self._flushed:
            self._flushed = True
            self._take(self._z.flush())
            self.ok = self.ok and self._out == len(self.stream)
        return self.ok


GUNZIPPED_HINT = "pass --gunzipped to code the data inside and restore it as the plain (gunzipped) file"


def _gunzip(raw: bytes, name: str):
    """``(content, header, deflate stream or None)`` of gzip bytes; the stream is None where the
    file is not one member (no single deflate stream to reproduce)."""
    import gzip

    try:
        data = gzip.decompress(raw)
        end = _gzip_header_end(raw)
    except (OSError, EOFError, ValueError, IndexError, struct.error, zlib.error) as exc:
        raise DataError(f"{name}: corrupt gzip data ({exc})") from exc
    single = len(raw) - end - 8 > 0 and raw[-8:] == _gzip_trailer(zlib.crc32(data), len(data))
    return data, raw[:end], memoryview(raw)[end: len(raw) - 8] if single else None


def _not_reproducible(name: str) -> DataError:
    return DataError(f"{name}: this gzip file was not made by zlib, so it cannot be restored byte for "
                     f"byte; gunzip it first, or {GUNZIPPED_HINT}")


def unwrap_gzip(raw: bytes, name: str, gunzipped: bool = False) -> tuple[bytes, dict | None]:
    """Return (content, gzip restore info or None). Raises DataError when the gzip file cannot be
    reproduced byte for byte, unless ``gunzipped``: then the content comes back with ``None``, to be
    restored as the plain file. The check costs one deflate of the content (plus a little for each
    wrong setting tried, which is dropped at its first differing byte)."""
    if raw[:2] != b"\x1f\x8b":
        return raw, None
    data, header, stream = _gunzip(raw, name)
    for level, mem in _GZIP_TRIES if stream is not None else ():
        if _DeflateCheck(stream, data, level, mem).advance():
            return data, _restore_info(header, level, mem)
    if gunzipped:
        return data, None
    raise _not_reproducible(name)


def unwrap_gzip_quickly(raw: bytes, name: str, gunzipped: bool = False):
    """:func:`unwrap_gzip` with its one long part left to the caller: every setting is first
    checked on the content's first :data:`GZIP_QUICK` bytes (and at least :data:`GZIP_QUICK_OUTPUT`
    bytes of its output), and the first that matches them is returned as ``(content, info,
    finish)``, where ``finish()`` checks the rest of the stream for that setting and returns
    whether it holds (a deflate of the content: run it alongside other work, zlib releases the
    GIL). Where it does not hold, :func:`unwrap_gzip` has the answer.
    ``finish`` is None where the answer is already final (no gzip wrapper, none of the settings
    matches, or the quick part took the whole content)."""
    if raw[:2] != b"\x1f\x8b":
        return raw, None, None
    data, header, stream = _gunzip(raw, name)
    for level, mem in _GZIP_TRIES if stream is not None else ():
        check = _DeflateCheck(stream, data, level, mem)
        if check.advance(GZIP_QUICK, min_output=GZIP_QUICK_OUTPUT):
            if check.fed_all:
                if not check.advance():
                    continue
                return data, _restore_info(header, level, mem), None
            return data, _restore_info(header, level, mem), check.advance
    if gunzipped:
        return data, None, None
    raise _not_reproducible(name)


def wrap_gzip(data: bytes, info: dict | None) -> bytes:
    if not info:
        return data
    return gzip_rebuild(base64.b64decode(info["h"]), data, info["l"], info["m"])


# ---------------------------------------------------------------------------------- readers
def read_image_file(path: Path) -> ImageFile:
    """Read any supported file; raises DataError with a one-line reason otherwise."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return read_image_bytes(raw, str(path))


KINDS = ("idx", "npy", "cifar", "png", "pnm")
_KIND_NAMES = {"idx": "an IDX file", "npy": "a .npy file", "cifar": "a CIFAR-10 batch", "png": "a PNG image",
               "pnm": "a binary PPM/PGM image"}


def _magic_kind(raw: bytes) -> str | None:
    """The kind told by the file's first bytes, for the kinds that have a magic number."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if raw[:2] in (b"P5", b"P6") and raw[2:3].isspace():
        return "pnm"
    if raw[:6] == b"\x93NUMPY":
        return "npy"
    return None


def looks_like_cifar(content: bytes) -> bool:
    """Whether ``content`` could be CIFAR-10 records: a whole number of 3073-byte records whose
    label bytes are all below 10. (CIFAR has no magic number, so this is a guess.)"""
    from .datasets import CIFAR_RECORD

    return bool(content) and len(content) % CIFAR_RECORD == 0 and max(content[::CIFAR_RECORD]) < 10


def read_image_bytes(raw: bytes, name: str, kind: str | None = None, gunzipped: bool = False,
                     finish_gzip_later: bool = False) -> ImageFile:
    """Read a supported file from its bytes; raises DataError with a one-line reason otherwise.

    ``name`` names it in messages. ``kind`` (one of :data:`KINDS`) says what the data is; by
    default it is told by the content: PNG, PNM and .npy by their magic numbers, inside any gzip
    wrapper an IDX header, and CIFAR-10 by the file name's ending (``.bin``, ``.bin.gz``) or, for
    data that is not a valid IDX file, by a length that is a whole number of records with labels
    below 10. ``gunzipped``: a gzip file that zlib cannot reproduce is read as its content (to be
    restored as the plain file) instead of being refused. ``finish_gzip_later``: the long part of
    the gzip check (see :func:`unwrap_gzip_quickly`) is left as the file's ``gzip_check`` (None
    where nothing is left), for the caller to run before it trusts ``restore``; where that
    returns False, the file must be read again without this option."""
    path = Path(name)
    if kind is not None and kind not in KINDS:
        raise DataError(f"{path}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    if not raw:
        raise DataError(f"{path}: empty file")
    sha = hashlib.sha256(raw).hexdigest()
    magic = _magic_kind(raw)
    if kind in ("png", "pnm", "npy") or (kind is None and magic is not None):
        want = kind or magic
        if magic != want:
            raise DataError(f"{path}: not {_KIND_NAMES[want]}")
        if want == "npy":
            return _read_npy(raw, path, sha)
        f = _read_png(raw, path)
        f.kind = want
        return f
    check = None
    if finish_gzip_later:
        content, gz, check = unwrap_gzip_quickly(raw, str(path), gunzipped)
    else:
        content, gz = unwrap_gzip(raw, str(path), gunzipped)
    if gz is None and content is not raw:  # --gunzipped: the plain content is what comes back
        sha = hashlib.sha256(content).hexdigest()
    if not content:
        raise DataError(f"{path}: holds no images")
    arr = None
    if kind is None:
        kind, arr = _content_kind(content, path)
    if kind == "cifar":
        labels, images = parse_cifar(content, str(path))
        return ImageFile("cifar", torch.from_numpy(images), {"gzip": gz}, labels.tobytes(), sha,
                         hashlib.sha256(content).hexdigest(), check)
    if arr is None:
        arr = parse_idx(content, str(path))
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise DataError(f"{path}: only uint8 IDX image files of rank 3 are supported (got {arr.dtype}, rank {arr.ndim})")
    if 0 in arr.shape:
        raise DataError(f"{path}: holds no images (IDX dimensions {'x'.join(map(str, arr.shape))})")
    return ImageFile("idx", torch.from_numpy(arr.copy()), {"gzip": gz}, b"", sha, hashlib.sha256(content).hexdigest(),
                     check)


def _content_kind(content: bytes, path: Path):
    """``(kind, parsed IDX array or None)`` for content with no magic number (see
    :func:`read_image_bytes`)."""
    if is_cifar_name(path):
        return "cifar", None
    idx_error = None
    if len(content) >= 4 and content[0] == 0 and content[1] == 0:
        try:
            return "idx", parse_idx(content, str(path))
        except DataError as exc:
            idx_error = exc
    if looks_like_cifar(content):
        return "cifar", None
    if idx_error is not None:
        raise idx_error
    raise DataError(f"{path}: unsupported file type (expected IDX, .npy, PNG, PPM/PGM or CIFAR-10 .bin; "
                    "--kind says which)")


def count_images(raw: bytes, name: str = "", kind: str | None = None) -> int | None:
    """The number of images in a supported file, read cheaply from its header (or its size), or
    None when that is not easy to tell. A hint only (for progress bars): never raises."""
    try:
        magic = _magic_kind(raw)
        if kind in ("png", "pnm") or (kind is None and magic in ("png", "pnm")):
            return 1
        if magic == "npy":
            buf = io.BytesIO(raw)
            version = np.lib.format.read_magic(buf)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return int(read(buf)[0][0])
        if raw[:2] == b"\x1f\x8b":
            head = zlib.decompressobj(31).decompress(raw[:1 << 16], 16)
            size = struct.unpack("<I", raw[-4:])[0]
        else:
            head, size = raw[:16], len(raw)
        from .datasets import CIFAR_RECORD

        cifar = kind == "cifar" or is_cifar_name(Path(name))
        if not cifar and kind != "cifar" and len(head) >= 8 and head[:2] == b"\0\0" and head[3] >= 1:
            return struct.unpack(">I", head[4:8])[0]
        if size % CIFAR_RECORD == 0:
            return size // CIFAR_RECORD
    except Exception:  # noqa: BLE001 - a hint, never an error
        return None
    return None


def _read_npy(raw: bytes, path: Path, sha: str) -> ImageFile:
    fmt = np.lib.format
    buf = io.BytesIO(raw)
    try:
        version = fmt.read_magic(buf)
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read_header(buf)
    except (ValueError, SyntaxError, TypeError, KeyError, OverflowError, MemoryError, RecursionError) as exc:
        raise DataError(f"{path}: corrupt .npy header ({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
    offset = buf.tell()
    if dtype != np.uint8:
        raise DataError(f"{path}: expected a uint8 array, got {dtype}")
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)):
        raise DataError(f"{path}: expected shape (N, H, W) or (N, H, W, 3), got {shape}")
    if any(type(d) is not int or d < 0 for d in shape):
        raise DataError(f"{path}: corrupt .npy header (shape {shape})")
    count = math.prod(shape)  # Python ints: no overflow, whatever the header says
    if len(raw) - offset != count:
        raise DataError(f"{path}: .npy data has {len(raw) - offset} bytes, its shape {shape} needs {count}")
    if count == 0:
        raise DataError(f"{path}: holds no images (shape {shape})")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape, order="F" if fortran else "C")
    if arr.ndim == 4:
        arr = arr.transpose(0, 3, 1, 2)
    header = raw[:offset]
    restore = {"f": int(bool(fortran)), "c": int(arr.ndim == 4)}
    if header != _npy_header(tuple(shape), bool(fortran)):  # store it only when NumPy would not write it
        restore["h"] = base64.b64encode(header).decode()
    return ImageFile("npy", torch.from_numpy(np.array(arr, order="C")), restore, b"", sha)


def _npy_header(shape: tuple, fortran: bool) -> bytes:
    """The header ``np.save`` writes for a uint8 array of this shape and order."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def _png_sha(mode: str, size, pixels: np.ndarray) -> str:
    h = hashlib.sha256(f"{mode}:{size[0]}x{size[1]}:".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def _read_png(raw: bytes, path: Path) -> ImageFile:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            mode, size = im.mode, im.size
            if mode == "1":
                arr = np.asarray(im, dtype=np.uint8)  # 0/1
            elif mode in ("L", "RGB", "RGBA", "LA"):
                arr = np.asarray(im)
            elif mode == "I;16" or mode.startswith("I"):
                raise DataError(f"{path}: 16-bit PNG images are not supported (8-bit only)")
            else:
                raise DataError(f"{path}: PNG mode {mode!r} is not supported (use greyscale, RGB or RGBA)")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt image ({exc})") from exc
    sha = _png_sha(mode, size, arr)
    side = b""
    if mode in ("RGBA", "LA"):
        side = arr[..., -1].tobytes()
        arr = arr[..., :-1] if mode == "RGBA" else arr[..., 0]
    if arr.ndim == 3:
        images = torch.from_numpy(np.array(arr.transpose(2, 0, 1), order="C"))[None]
    else:
        images = torch.from_numpy(np.array(arr, order="C"))[None]
    return ImageFile("png", images, {"mode": mode, "size": list(size)}, side, sha)


# ---------------------------------------------------------------------------------- writers
def _content_head(kind: str, shape) -> bytes:
    """What an IDX or CIFAR file's content holds before its first image (IDX: its header)."""
    return struct.pack(">BBBB3I", 0, 0, 0x08, 3, *shape) if kind == "idx" else b""


def _content_records(kind: str, images: np.ndarray, labels: bytes) -> bytes:
    """The content bytes of a run of images (CIFAR: each after its label byte)."""
    if kind == "idx":
        return images.tobytes()
    return np.concatenate([np.frombuffer(labels, dtype=np.uint8)[:, None], images.reshape(len(images), -1)],
                          axis=1).tobytes()


def _content(f: ImageFile) -> bytes:
    """The bytes inside any gzip wrapper, for IDX and CIFAR files."""
    return _content_head(f.kind, f.images.shape) + _content_records(f.kind, f.images.numpy(), f.side_data)


class GzipFileWriter:
    """A gzip-wrapped IDX or CIFAR file rebuilt (the bytes :func:`write_image_file` gives) from its
    images fed in order, run by run (:meth:`feed`), while later ones are still being decoded: the
    deflate runs in a background thread (zlib releases the GIL). Deflate's output does not depend
    on how its input is cut, so the bytes are the same. :meth:`finish` returns them; :meth:`close`
    stops the thread when the images will not all come."""

    def __init__(self, kind: str, shape, restore: dict, side_data: bytes = b""):
        import queue
        import threading

        info = restore["gzip"]
        self.kind, self.shape, self._labels, self._fed = kind, tuple(shape), side_data, 0
        self._header = base64.b64decode(info["h"])
        self._z = zlib.compressobj(info["l"], zlib.DEFLATED, -15, info["m"])
        self._crc, self._size, self._out, self._error = 0, 0, [], None
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._deflate, daemon=True)
        self._thread.start()
        self._queue.put(_content_head(kind, shape))

    def _deflate(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._crc = zlib.crc32(piece, self._crc)
                    self._size += len(piece)
                    self._out.append(self._z.compress(piece))
                except BaseException as exc:  # noqa: BLE001 - raised by finish()
                    self._error = exc

    def feed(self, images: torch.Tensor) -> None:
        """The next run of images, uint8 of the file's image shape (or flattened per image)."""
        n = len(images)
        if self._fed + n > self.shape[0]:
            raise ValueError("more images than the file holds")
        labels = self._labels[self._fed: self._fed + n] if self.kind == "cifar" else b""
        self._queue.put(_content_records(self.kind, images.reshape(n, -1).cpu().numpy(), labels))
        self._fed += n

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def finish(self) -> bytes:
        """The whole file's bytes, once every image has been fed."""
        self.close()
        if self._error is not None:
            raise self._error
        if self._fed != self.shape[0]:
            raise ValueError(f"{self._fed} of the file's {self.shape[0]} images were fed")
        return self._header + b"".join(self._out) + self._z.flush() + _gzip_trailer(self._crc, self._size)


def write_image_file(f: ImageFile, stored: bool = False) -> bytes:
    """Rebuild the original file's bytes (PNG: a PNG with the same pixels, size and mode; with
    ``stored``, its pixel data not deflated, for checks: the same pixels, ten times quicker)."""
    imgs = f.images.numpy()
    if f.kind in ("idx", "cifar"):
        return wrap_gzip(_content(f), f.restore.get("gzip"))
    if f.kind == "npy":
        arr = imgs.transpose(0, 2, 3, 1) if f.restore.get("c") else imgs
        fortran = bool(f.restore.get("f"))
        body = arr.tobytes(order="F" if fortran else "C")
        header = base64.b64decode(f.restore["h"]) if "h" in f.restore else _npy_header(arr.shape, fortran)
        return header + body
    if f.kind in ("png", "pnm"):
        return _write_picture(f, "PNG" if f.kind == "png" else "PPM", stored)
    raise DataError(f"unknown file kind {f.kind!r}")


def _write_picture(f: ImageFile, fmt: str, stored: bool = False) -> bytes:
    from PIL import Image

    mode = f.restore["mode"]
    img = f.images[0].numpy()
    if img.ndim == 3:
        img = img.transpose(1, 2, 0)
    if mode in ("RGBA", "LA"):
        alpha = np.frombuffer(f.side_data, dtype=np.uint8).reshape(img.shape[:2])
        img = np.dstack([img, alpha]) if img.ndim == 3 else np.dstack([img, alpha])
    if mode == "1":
        im = Image.fromarray((img * 255).astype(np.uint8), "L").convert("1")
    else:
        im = Image.fromarray(np.ascontiguousarray(img), mode)
    out = io.BytesIO()
    im.save(out, format=fmt, **({"compress_level": 0} if stored and fmt == "PNG" else {}))
    return out.getvalue()


def png_pixels_sha(data: bytes) -> str:
    """SHA-256 of a picture's canonical pixel description (mode, size, pixels)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        arr = np.asarray(im, dtype=np.uint8) if im.mode == "1" else np.asarray(im)
        return _png_sha(im.mode, im.size, arr)


def restored_sha(kind: str, data: bytes) -> str:
    """The checksum a restored file is verified against (same definition as at reading)."""
    return png_pixels_sha(data) if kind in ("png", "pnm") else hashlib.sha256(data).hexdigest()


def check_restorable(f: ImageFile) -> None:
    """Raise DataError unless :func:`write_image_file` reproduces the original exactly. (A gzip
    wrapper was already verified when read, so only the content inside it is rebuilt here.)"""
    if f.kind in ("idx", "cifar") and f.content_sha256:
        if hashlib.sha256(_content(f)).hexdigest() != f.content_sha256:
            raise DataError("this file cannot be restored exactly from its pixels (unusual layout); not compressed")
        return
    if restored_sha(f.kind, write_image_file(f, stored=True)) != f.sha256:
        raise DataError("this file cannot be restored exactly from its pixels (unusual layout); not compressed")
