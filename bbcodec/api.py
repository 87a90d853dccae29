"""The Python API: compress and decompress files or tensors, evaluate rates, inspect files.

The CLI is a thin shell over these functions::

    import bbcodec
    bbcodec.compress("t10k-images-idx3-ubyte.gz")          # writes t10k-images-idx3-ubyte.gz.bbc
    bbcodec.decompress("t10k-images-idx3-ubyte.gz.bbc", "restored.gz")
    report = bbcodec.evaluate("t10k-images-idx3-ubyte.gz")  # negative ELBO vs achieved code length
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from .container import Container
from .errors import BBCodecError
from .formats import ImageFile, check_restorable, read_image_file, restored_sha, write_image_file
from .image_codec import CodingParams, ContextVAECodec
from .zoo import embedded_models, load_model

DEFAULT_CHUNK = 10_000
DEFAULT_MODELS = {("grey", "uint8"): "mnist-uint8", ("grey", "binary"): "mnist-binary"}


class UsageError(BBCodecError):
    """A request that cannot be carried out as asked (existing output, wrong model, ...)."""


# ------------------------------------------------------------------------------ models
def _colour(images: torch.Tensor) -> str:
    return "colour" if images.dim() == 4 else "grey"


def choose_model(images: torch.Tensor, pixels: str, model=None):
    """The model to code these images with: ``model`` (name or path) or the embedded default."""
    if model is None:
        name = DEFAULT_MODELS.get((_colour(images), pixels))
        if name is None or name not in embedded_models():
            raise UsageError(f"no embedded model for {_colour(images)} {pixels} images; pass --model")
        model = name
    loaded = load_model(model)
    check_compatible(loaded, images, pixels)
    return loaded


def check_compatible(loaded, images: torch.Tensor, pixels: str) -> None:
    cfg = loaded.config
    size = tuple(images.shape[-2:])
    want = (cfg.get("height"), cfg.get("width"))
    if _colour(images) != "grey" and cfg.get("arch") == "context_vae":
        raise UsageError(f"model {loaded.name} codes greyscale images; the data is colour")
    if cfg.get("arch") == "context_vae" and size != want:
        raise UsageError(f"model {loaded.name} codes {want[0]}x{want[1]} images; the data is {size[0]}x{size[1]}")
    if cfg.get("pixels") == "binary" and pixels != "binary":
        raise UsageError(f"model {loaded.name} codes binary (0/1) images; the data has 8-bit values")


def make_codec(loaded, coding: dict | None = None, seed: int = 0):
    params = CodingParams(**{**loaded.meta.get("coding", {}), **(coding or {})})
    return ContextVAECodec(loaded.model, params, seed=seed)


# ------------------------------------------------------------------------------ tensors
def _encode_chunks(loaded, images, coding, chunk, progress):
    codec = make_codec(loaded, coding)
    chunks, counts, stats = [], [], []
    for index, start in enumerate(range(0, len(images), chunk)):
        codec.seed = index
        data, st = codec.encode(images[start: start + chunk], progress=progress)
        chunks.append(data)
        counts.append(min(chunk, len(images) - start))
        stats.append(st)
    return codec.params.to_dict(), chunks, counts, stats


def _decode_chunks(loaded, container: Container, progress):
    codec = make_codec(loaded, container.coding)
    parts = []
    for index, (data, count) in enumerate(zip(container.chunks, container.chunk_images)):
        codec.seed = index
        try:
            parts.append(codec.decode(data, count, progress=progress))
        except BBCodecError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:
            raise BBCodecError(f"corrupt .bbc file: chunk {index} does not decode ({exc})") from exc
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8)


def _container_for(loaded, f: ImageFile, coding, chunk, progress):
    params, chunks, counts, stats = _encode_chunks(loaded, f.images, coding, chunk, progress)
    box = Container(loaded.name, loaded.sha256, f.sha256, f.kind, list(f.images.shape), f.pixels,
                    f.restore, params, chunks, counts, f.side_data)
    return box, stats


def compress_images(images: torch.Tensor, model=None, coding: dict | None = None, chunk: int = DEFAULT_CHUNK) -> bytes:
    """Compress a uint8 tensor ``(N, H, W)`` to ``.bbc`` bytes (kind ``raw``)."""
    import hashlib

    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise UsageError("expected a uint8 tensor of shape (N, H, W)")
    f = ImageFile("raw", images.contiguous(), {}, b"", hashlib.sha256(images.numpy().tobytes()).hexdigest())
    loaded = choose_model(images, f.pixels, model)
    box, _ = _container_for(loaded, f, coding, chunk, None)
    return box.to_bytes()


def decompress_images(data: bytes, model=None) -> torch.Tensor:
    """Inverse of :func:`compress_images` (also returns the images of any ``.bbc`` file)."""
    box = Container.from_bytes(data)
    loaded = _model_for(box, model)
    return _decode_chunks(loaded, box, None).reshape(box.shape)


# ------------------------------------------------------------------------------ files
def _atomic_write(path: Path, data: bytes, force: bool) -> None:
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists (use -f to overwrite)")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def compress(src, dst=None, model=None, force: bool = False, chunk: int = DEFAULT_CHUNK,
             coding: dict | None = None, progress=None) -> dict:
    """Compress the file ``src`` to ``dst`` (default ``src + '.bbc'``); returns a summary."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name + ".bbc")
    if _same_file(src, dst):
        raise UsageError(f"{dst}: output would overwrite the input")
    if dst.exists() and not force:
        raise UsageError(f"{dst}: already exists (use -f to overwrite)")
    t0 = time.perf_counter()
    f = read_image_file(src)
    check_restorable(f)
    loaded = choose_model(f.images, f.pixels, model)
    box, stats = _container_for(loaded, f, coding, chunk, progress)
    data = box.to_bytes()
    _atomic_write(dst, data, force)
    dims = f.images.numel()
    return {"input": str(src), "output": str(dst), "model": loaded.name, "images": len(f.images),
            "input_bytes": src.stat().st_size, "output_bytes": len(data), "bits_per_dim": 8 * len(data) / dims,
            "seconds": time.perf_counter() - t0}


def _model_for(box: Container, model=None):
    try:
        loaded = load_model(model if model is not None else box.model_name)
    except BBCodecError:
        raise BBCodecError(f"this file was made with model {box.model_name!r}, which is not installed "
                           "(pass --model PATH if you have it)") from None
    if loaded.sha256 != box.model_sha256:
        raise BBCodecError(f"this file was made with model {box.model_name!r} (weights {box.model_sha256[:12]}), "
                           f"but {loaded.name!r} has other weights ({loaded.sha256[:12]})")
    return loaded


def read_container(src) -> Container:
    src = Path(src)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise UsageError(f"{src}: cannot read ({exc.strerror or exc})") from exc
    return Container.from_bytes(data)


def decompress(src, dst=None, force: bool = False, model=None, progress=None) -> dict:
    """Decompress ``src`` (a ``.bbc`` file) to ``dst`` (default: ``src`` without ``.bbc``), verifying
    the restored data against the checksum recorded at compression."""
    src = Path(src)
    if dst is None:
        if src.suffix != ".bbc":
            raise UsageError(f"{src}: does not end in .bbc; give the output name with -o")
        dst = src.with_suffix("")
    dst = Path(dst)
    if _same_file(src, dst):
        raise UsageError(f"{dst}: output would overwrite the input")
    if dst.exists() and not force:
        raise UsageError(f"{dst}: already exists (use -f to overwrite)")
    t0 = time.perf_counter()
    box = read_container(src)
    loaded = _model_for(box, model)
    images = _decode_chunks(loaded, box, progress).reshape(box.shape)
    f = ImageFile(box.kind, images, box.restore, box.side_data)
    if box.kind == "raw":
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, images.numpy())
        data = buf.getvalue()
    else:
        data = write_image_file(f)
        if restored_sha(box.kind, data) != box.data_sha256:
            raise BBCodecError("decoded data does not match the checksum recorded at compression; output not written")
    _atomic_write(dst, data, force)
    return {"input": str(src), "output": str(dst), "images": len(images), "seconds": time.perf_counter() - t0}


def info(src) -> dict:
    """What a ``.bbc`` file holds."""
    box = read_container(src)
    dims = 1
    for s in box.shape:
        dims *= s
    total = len(box.to_bytes())
    return {"format_version": 1, "model": box.model_name, "model_sha256": box.model_sha256, "kind": box.kind,
            "shape": box.shape, "pixels": box.pixels, "images": sum(box.chunk_images), "chunks": len(box.chunks),
            "bytes": total, "bits_per_dim": 8 * total / dims, "data_sha256": box.data_sha256,
            "coding": box.coding, "restore": {k: v for k, v in box.restore.items() if k != "header"}}


def evaluate(src, model=None, limit: int | None = None, coding: dict | None = None, chunk: int = DEFAULT_CHUNK,
             progress=None, elbo_seed: int = 0) -> dict:
    """Compress and decompress ``src`` in memory (verified) and report, in bits per dimension, the
    model's negative ELBO next to the code length of the whole output file, with the overhead
    itemised, and the encode and decode speed."""
    src = Path(src)
    f = read_image_file(src)
    if limit:
        f = replace(f, images=f.images[:limit], side_data=f.side_data[:limit] if f.kind == "cifar" else f.side_data)
    images = f.images
    loaded = choose_model(images, f.pixels, model)
    codec = make_codec(loaded, coding)
    dims = images.numel()
    elbo = codec.negative_elbo(images, seed=elbo_seed)
    t0 = time.perf_counter()
    params, chunks, counts, stats = _encode_chunks(loaded, images, coding, chunk, progress)
    t_enc = time.perf_counter() - t0
    box = Container(loaded.name, loaded.sha256, f.sha256, f.kind, list(images.shape), f.pixels, f.restore,
                    params, chunks, counts, f.side_data)
    total_bits = 8 * len(box.to_bytes())
    t0 = time.perf_counter()
    decoded = _decode_chunks(loaded, box, progress)
    t_dec = time.perf_counter() - t0
    if not torch.equal(decoded.reshape(images.shape), images):
        raise BBCodecError("round trip failed: decoded images differ")  # never expected
    container_bits = 8 * box.header_bytes()
    framing_bits = sum(8 * len(c) - st.bits for c, st in zip(chunks, stats))
    initial_bits = sum(st.initial_bits for st in stats)
    length_fields = sum(5 * st.lanes for st in stats)
    overhead = {"container_header_bits": container_bits, "ans_framing_and_padding_bits": framing_bits,
                "initial_bits": initial_bits, "head_length_field_bits": length_fields}
    return {
        "input": str(src), "model": loaded.name, "images": len(images), "dims": dims,
        "negative_elbo_bits_per_dim": elbo["bits"] / dims,
        "kl_bits_per_dim": elbo["kl_bits"] / dims,
        "code_length_bits_per_dim": total_bits / dims,
        "code_length_over_elbo": total_bits / elbo["bits"] - 1,
        "overhead_bits": overhead,
        "overhead_bits_per_dim": sum(overhead.values()) / dims,
        "total_bits": total_bits,
        "final_lanes": [st.lanes for st in stats],
        "encode_images_per_s": len(images) / t_enc,
        "decode_images_per_s": len(images) / t_dec,
        "encode_seconds": t_enc, "decode_seconds": t_dec,
        "threads": torch.get_num_threads(),
        "coding": params,
    }
