"""Reading image datasets for training and evaluation (uint8 tensors), in their standard formats.

* IDX (MNIST's format), gzipped or not: a ``(N, H, W)`` uint8 array;
* ``.npy`` uint8 arrays ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB);
* CIFAR-10 "binary version" batches (``.bin``, optionally ``.gz``): records of one label byte and
  3072 bytes of R, G and B planes, giving ``(N, 3, 32, 32)``;
* a folder of PNG images of one size (grey or RGB).

Several paths concatenate. Images come back as ``(N, H, W)`` for grey and ``(N, 3, H, W)`` for
colour.

Photographs of different sizes (training on crops): :func:`load_photos` reads them into a list of
``(C, H, W)`` tensors, :func:`random_crops` draws square crops from them (an image with
probability proportional to its area, a uniform position, random flips) and :func:`grid_crops`
cuts them into non-overlapping crops in raster order (a fixed validation set).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

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


# ---------------------------------------------------------------------------- photos and crops
def luminance(images: torch.Tensor) -> torch.Tensor:
    """RGB uint8 images ``(..., 3, H, W)`` to their luminance ``(..., 1, H, W)``, exactly as PIL's
    ``convert("L")`` computes it (``(19595 R + 38470 G + 7471 B + 32768) >> 16``)."""
    x = images.to(torch.int32)
    y = (x[..., 0, :, :] * 19595 + x[..., 1, :, :] * 38470 + x[..., 2, :, :] * 7471 + 0x8000) >> 16
    return y.to(torch.uint8).unsqueeze(-3)


def _png_sources(paths) -> list[Path] | None:
    """The PNG files that ``paths`` name (folders: their PNGs, sorted), or None if any path is
    something else (another dataset format, or missing)."""
    files = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix.lower() == ".png")
            if not found:
                return None
            files += found
        elif path.is_file() and path.suffix.lower() == ".png":
            files.append(path)
        else:
            return None
    return files


def png_shapes(paths) -> set | None:
    """The distinct ``(grey, width, height)`` of the PNGs in ``paths``, read from their headers
    only, or None where ``paths`` are not all PNG files or folders of PNGs. More than one means
    :func:`load_images` cannot stack them (photos: use :func:`load_photos`)."""
    from PIL import Image

    files = _png_sources(paths)
    if files is None:
        return None
    shapes = set()
    for f in files:
        try:
            with Image.open(f) as im:
                shapes.add((im.mode in ("L", "1"), *im.size))
        except OSError as exc:
            raise DataError(f"{f}: cannot read as PNG ({exc})") from exc
    return shapes


def _photo_channels(x: torch.Tensor, grey: bool) -> torch.Tensor:
    """``(N, H, W)`` or ``(N, 3, H, W)`` uint8 to ``(N, 1, H, W)`` if grey, else ``(N, 3, H, W)``."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if grey:
        return luminance(x) if x.shape[1] == 3 else x
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def load_photos(paths, grey: bool = False) -> list:
    """Every image in ``paths`` (PNG files, folders of PNGs, or any dataset :func:`load_images`
    reads), of any sizes, as a list of uint8 tensors ``(C, H, W)``: RGB (grey images are converted
    to RGB), or with ``grey`` one channel, the luminance (PIL's ``convert("L")``)."""
    from PIL import Image

    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataError(f"{path}: no such file or directory")
        files = _png_sources([path])
        if files is None:
            if path.is_dir():
                raise DataError(f"{path}: no PNG files")
            out += list(_photo_channels(torch.from_numpy(_load_one(path)), grey))
            continue
        for f in files:
            try:
                with Image.open(f) as im:
                    a = np.array(im.convert("L" if grey else "RGB"))
            except OSError as exc:
                raise DataError(f"{f}: cannot read as PNG ({exc})") from exc
            out.append(torch.from_numpy(a[None] if grey else np.ascontiguousarray(a.transpose(2, 0, 1))))
    if not out:
        raise DataError(f"no images in {', '.join(map(str, paths))}")
    return out


class CropPlan(NamedTuple):
    """Where crops come from: per crop the image index, top row, left column and flips."""

    index: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    hflip: torch.Tensor
    vflip: torch.Tensor

    def __len__(self):
        return len(self.index)

    def subset(self, sel) -> "CropPlan":
        return CropPlan(*(t[sel] for t in self))


def plan_crops(images, size: int, count: int, generator: torch.Generator | None = None, flips: bool = True,
               vflips: bool = False) -> CropPlan:
    """Draw ``count`` crops of ``size x size``: each from an image chosen with probability
    proportional to its area (images smaller than the crop are never chosen), at a uniform
    position, flipped left-right with probability 1/2 if ``flips`` (and upside down if ``vflips``).
    Deterministic given ``generator``'s state."""
    hw = torch.tensor([tuple(im.shape[-2:]) for im in images], dtype=torch.int64).reshape(-1, 2)
    h, w = hw[:, 0], hw[:, 1]
    fits = (h >= size) & (w >= size)
    if not bool(fits.any()):
        raise DataError(f"no image is at least {size}x{size} (the largest is {int(h.max())}x{int(w.max())})")
    weights = (h * w).to(torch.float64) * fits
    index = torch.multinomial(weights, count, replacement=True, generator=generator)
    top = (torch.rand(count, generator=generator, dtype=torch.float64) * (h[index] - size + 1)).long()
    left = (torch.rand(count, generator=generator, dtype=torch.float64) * (w[index] - size + 1)).long()
    no = torch.zeros(count, dtype=torch.bool)
    hflip = torch.rand(count, generator=generator) < 0.5 if flips else no
    vflip = torch.rand(count, generator=generator) < 0.5 if vflips else no
    return CropPlan(index, top, left, hflip, vflip)


def cut_crops(images, plan: CropPlan, size: int) -> torch.Tensor:
    """The crops ``plan`` describes, ``(len(plan), C, size, size)`` uint8: sliced (views, copied
    once by the stack), then flipped for the whole batch at once."""
    if not len(plan):
        return torch.empty((0, images[0].shape[0], size, size), dtype=images[0].dtype)
    out = torch.stack([images[i][:, t: t + size, l: l + size]
                       for i, t, l in zip(plan.index.tolist(), plan.top.tolist(), plan.left.tolist())])
    if bool(plan.hflip.any()):
        out = torch.where(plan.hflip[:, None, None, None], out.flip(-1), out)
    if bool(plan.vflip.any()):
        out = torch.where(plan.vflip[:, None, None, None], out.flip(-2), out)
    return out


def random_crops(images, size: int, count: int, generator: torch.Generator | None = None, flips: bool = True,
                 vflips: bool = False) -> torch.Tensor:
    """``count`` random ``size x size`` crops ``(count, C, size, size)`` of ``images`` (a list of
    ``(C, H, W)`` tensors, as :func:`load_photos` gives): see :func:`plan_crops`."""
    return cut_crops(images, plan_crops(images, size, count, generator, flips, vflips), size)


def grid_crops(images, size) -> torch.Tensor:
    """Every image cut into non-overlapping crops of ``size`` (an int, or ``(height, width)``), in
    raster order, image after image; the right and bottom remainders are left out. Deterministic,
    so that a validation set of crops is the same at every epoch."""
    sh, sw = (size, size) if isinstance(size, int) else tuple(size)
    parts = []
    for im in images:
        c, h, w = im.shape
        nh, nw = h // sh, w // sw
        if nh and nw:
            grid = im[:, : nh * sh, : nw * sw].reshape(c, nh, sh, nw, sw)
            parts.append(grid.permute(1, 3, 0, 2, 4).reshape(nh * nw, c, sh, sw))
    if not parts:
        c = images[0].shape[0] if len(images) else 3
        return torch.empty((0, c, sh, sw), dtype=torch.uint8)
    return torch.cat(parts)
