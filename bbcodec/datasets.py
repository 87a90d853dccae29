"""Reading image datasets for training and evaluation (uint8 tensors), in their standard formats.

* IDX (MNIST's format), gzipped or not: a ``(N, H, W)`` uint8 array;
* ``.npy`` uint8 arrays ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB);
* CIFAR-10 "binary version" batches (``.bin``, optionally ``.gz``): records of one label byte and
  3072 bytes of R, G and B planes, giving ``(N, 3, 32, 32)``;
* a folder of PNG images of one size (grey or RGB).

Several paths concatenate. Images come back as ``(N, H, W)`` for grey and ``(N, 3, H, W)`` for
colour.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import BBCodecError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
CIFAR_RECORD = 1 + 3 * 32 * 32


class DataError(BBCodecError, ValueError):
    """A dataset file that cannot be read as images."""


def read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from exc
    return raw


def parse_idx(data: bytes, name: str = "IDX") -> np.ndarray:
    """Parse IDX bytes to an array (any IDX dtype and rank); raises :class:`DataError`. The header's
    sizes are checked against the body (with Python integers, so that no product of dimensions
    overflows) before anything is allocated."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file (bad magic)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        shape = "x".join(map(str, dims)) or "a scalar"
        raise DataError(f"{name}: IDX body has {body} bytes, header says {expected} ({shape} of {dtype.itemsize}-byte values)")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def parse_cifar(data: bytes, name: str = "CIFAR-10") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batch bytes to (labels (N,), images (N, 3, 32, 32)) uint8."""
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DataError(f"{name}: size {len(data)} is not a multiple of the {CIFAR_RECORD}-byte CIFAR-10 record")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return rec[:, 0].copy(), rec[:, 1:].reshape(-1, 3, 32, 32).copy()


def is_cifar_name(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".bin") or name.endswith(".bin.gz")


def load_images(paths) -> torch.Tensor:
    """Load and concatenate image datasets; returns a uint8 tensor ``(N, H, W)`` or ``(N, 3, H, W)``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    arrays = [_load_one(Path(p)) for p in paths]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"datasets have different image shapes: {sorted(shapes)}")
    return torch.from_numpy(np.concatenate(arrays))


def _load_one(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        return _load_png_folder(path)
    if path.suffix.lower() == ".npy":
        arr = _load_npy(path)
        if arr.dtype != np.uint8:
            raise DataError(f"{path}: expected a uint8 array, got {arr.dtype}")
        if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
            raise DataError(f"{path}: expected (N, H, W) or (N, H, W, 3), got {arr.shape}")
        if arr.size == 0:
            raise DataError(f"{path}: holds no images (shape {arr.shape})")
        if arr.ndim == 4:
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        return arr
    if path.suffix.lower() == ".png":
        return _load_png_files([path])
    if is_cifar_name(path):
        return parse_cifar(read_maybe_gzip(path), str(path))[1]
    arr = parse_idx(read_maybe_gzip(path), str(path))
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise DataError(f"{path}: expected a uint8 IDX array of rank 3, got {arr.dtype} rank {arr.ndim}")
    if arr.size == 0:
        raise DataError(f"{path}: holds no images (IDX dimensions {'x'.join(map(str, arr.shape))})")
    return arr


def _load_npy(path: Path) -> np.ndarray:
    """``np.load``, after checking that the header's shape fits the file (so that an absurd shape
    is an error, not an allocation)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = read_header(fh)
            body = path.stat().st_size - fh.tell()
        if any(type(d) is not int or d < 0 for d in shape):
            raise ValueError(f"bad shape {shape}")
        if body != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"data has {body} bytes, its shape {shape} needs {math.prod(shape) * dtype.itemsize}")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, MemoryError) as exc:
        raise DataError(f"{path}: cannot read as .npy ({exc})".replace("\n", " ")) from exc


def _load_png_files(files) -> np.ndarray:
    from PIL import Image

    out = []
    for f in files:
        with Image.open(f) as im:
            if im.mode in ("L", "1", "P") and im.mode != "P":
                out.append(np.asarray(im.convert("L")))
            else:
                out.append(np.asarray(im.convert("RGB")).transpose(2, 0, 1))
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise DataError(f"images of different sizes: {sorted(shapes)}")
    return np.stack(out)


def _load_png_folder(path: Path) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise DataError(f"{path}: no PNG files")
    return _load_png_files(files)


def binarize(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The standard stochastic binarisation: ``RandomState(seed).random_sample(x.shape) < x/255``."""
    rng = np.random.RandomState(seed)
    x = images.numpy()
    return torch.from_numpy((rng.random_sample(x.shape) < x / 255).astype(np.uint8))
