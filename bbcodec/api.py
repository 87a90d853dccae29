"""The Python API: compress and decompress files or tensors, evaluate rates, inspect files.

The CLI is a thin shell over these functions::

    import bbcodec
    bbcodec.compress("t10k-images-idx3-ubyte.gz")          # writes t10k-images-idx3-ubyte.gz.bbc
    bbcodec.decompress("t10k-images-idx3-ubyte.gz.bbc", "restored.gz")
    report = bbcodec.evaluate("t10k-images-idx3-ubyte.gz")  # negative ELBO vs achieved code length
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from .allocator import keep_freed_memory
from .coding_params import file_coding
from .container import CODED, METHODS, ZLIB, Container, describe
from .errors import BBCodecError
from .fileio import (STDIO, UsageError, atomic_write as _atomic_write, check_output as _check_output,
                     display_name, hint_images, input_mode, is_stdio, read_input as _read_input, write_output)
from .formats import (GzipFileWriter, ImageFile, check_restorable, read_image_bytes, read_image_file, restored_sha,
                      write_image_file)
from .layout import MAP_KEYS, Layout
from .parallel import resolve_jobs, workers_for
from .protocol import default_coding, is_protocol_model
from .registry import architecture
from .segments import ELBO_SEED
from .threads import coding_threads
from .zoo import COLOUR_MODEL, GREY_PHOTO_MODEL, MNIST_MODELS, PHOTO_MODEL, PHOTO_SIZE  # noqa: F401 (the defaults)
from .zoo import embedded_models, load_model

DEFAULT_CHUNK = 10_000


# ------------------------------------------------------------------------------ models
def _colour(images: torch.Tensor) -> str:
    return "colour" if images.dim() == 4 else "grey"


def default_model(images: torch.Tensor, pixels: str) -> str:
    """The embedded model for these images: MNIST models for 28x28 greyscale (binary or 8-bit),
    the photo models (colour, or the luminance model for greyscale) for images at least
    :data:`PHOTO_SIZE` pixels on the shorter side, the CIFAR
    model for smaller ones (greyscale images in the colour models' grey mode)."""
    if images.dim() == 3 and tuple(images.shape[-2:]) == (28, 28):
        return MNIST_MODELS[pixels]
    if min(images.shape[-2:]) >= PHOTO_SIZE:
        if images.dim() == 3 and GREY_PHOTO_MODEL in embedded_models():
            return GREY_PHOTO_MODEL
        if PHOTO_MODEL in embedded_models():
            return PHOTO_MODEL
    return COLOUR_MODEL


def choose_model(images: torch.Tensor, pixels: str, model=None):
    """The model to code these images with: ``model`` (name or path) or the embedded default."""
    if model is None:
        model = default_model(images, pixels)
        if model not in embedded_models():
            raise UsageError(f"the default model {model!r} is not installed; pass --model")
    loaded = resolve_model(model)
    check_compatible(loaded, images, pixels)
    if is_protocol_model(loaded.model) and not loaded.meta.get("coding"):  # measured on the data
        loaded.meta["coding"] = default_coding(loaded.model, images)
    return loaded


def resolve_model(model):
    """A :class:`~bbcodec.zoo.LoadedModel` for a model name or path, or for a model object of the
    protocol (:mod:`bbcodec.protocol`), with the object's own ``coding`` defaults if it has any
    (else :func:`choose_model` measures them on the data)."""
    if not is_protocol_model(model):
        return load_model(model)
    from .zoo import LoadedModel

    coding = dict(getattr(model, "coding", None) or {})
    config = {"arch": "protocol", "pixels": model.pixels}
    return LoadedModel(getattr(model, "name", "custom"), model, config, {"coding": coding}, model.identity())


def check_compatible(loaded, images: torch.Tensor, pixels: str) -> None:
    """``UsageError`` unless ``loaded`` can code ``images`` (see :mod:`bbcodec.registry`)."""
    architecture(loaded.config.get("arch")).check(loaded, images, pixels)


# ------------------------------------------------------------------------------ tensors
@contextmanager
def _workers(jobs, loaded):
    """Worker processes coding chunks with ``loaded`` (see :mod:`bbcodec.parallel`), ended on
    leaving; None (chunks coded here) for ``jobs`` 1 or a model object."""
    workers = workers_for(jobs, loaded)
    if workers is None:
        yield None
        return
    with workers:
        yield workers


def _encode_chunks(loaded, images, coding, chunk, progress, workers=None):
    """Code ``images`` in independent chunks of about ``chunk`` coding units (see
    :class:`~bbcodec.layout.Layout`), in ``workers``' processes if given; returns (layout, chunk
    bytes, units per chunk, stats per chunk)."""
    keep_freed_memory()
    try:
        layout = Layout(loaded, images.shape, coding)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    chunks, counts, stats = layout.encode(images, chunk, progress, workers)
    return layout, chunks, counts, stats


def _decode_chunks(loaded, container: Container, progress, workers=None, on_images_for=None):
    """The images of ``container``. ``on_images_for(layout)``, where given, returns None or a
    function to hand the images to in order as they decode (see :meth:`Layout.decode`)."""
    check_compatible(loaded, torch.empty(container.shape, dtype=torch.uint8, device="meta"), container.pixels)
    coding = file_coding(container.coding)  # old files lack some keys: their old-file defaults
    keep_freed_memory()
    try:
        layout = Layout(loaded, container.shape, coding)
    except (TypeError, ValueError) as exc:
        raise BBCodecError(f"corrupt .bbc header: bad coding parameters ({exc})") from exc
    if sum(container.chunk_images) != layout.unit_count():
        raise BBCodecError("corrupt .bbc header: chunk sizes do not match the image shape")
    on_images = on_images_for(layout) if on_images_for is not None else None
    return layout.decode(container.chunks, container.chunk_images, progress, workers, on_images)


MAX_PADDING = 4  # code with the model only if its tiles cover at most this many times the pixels


def _padding_ratio(loaded, images: torch.Tensor, coding) -> float:
    """Coded pixels (padding included) per image pixel, for tiled models; 1 otherwise."""
    try:
        layout = Layout(loaded, images.shape, coding)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not layout.levels:
        return 1.0
    coded = sum(lvl.tiles_in(piece) * piece.tile ** 2 for lvl in layout.levels[:1] for piece in lvl.pieces)
    return coded / (images.shape[-1] * images.shape[-2])


class _Background:
    """``fn(*args)`` in a daemon thread, for work that releases the GIL and runs alongside the
    model; :meth:`result` waits for it and returns its value or raises its exception."""

    def __init__(self, fn, *args):
        self._value, self._error = None, None

        def run():
            try:
                self._value = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class _BackgroundZlib:
    """The fallback payload deflated: ``zlib -6`` in a worker thread while the model codes (zlib
    releases the GIL), then ``zlib -9``, whose bytes are the ones stored, only where zlib could win.

    ``zlib -9`` is the slow one: MNIST's test set (7.8 MB) takes 2.1 s of CPU at 9 against 0.15 s
    at 6, for 2% fewer bytes, and on two cores that CPU comes out of the model's coding. So the
    fast level tells whether zlib is near the coded size at all: where it comes out more than
    ``LEVEL_GAP`` times the coded size, zlib has lost (level 9 is a few per cent smaller than
    level 6, not a quarter), and ``zlib -9`` never runs. Either way each run gives up once its
    output passes what it must beat."""

    BLOCK = 1 << 20
    LEVEL_GAP = 1.25

    def __init__(self, payload: bytes):
        self.payload, self._give_up_above = payload, None
        self._fast = _Background(self._deflate, 6, lambda: self._give_up_above)

    def _deflate(self, level: int, give_up_above) -> bytes | None:
        z, out, size = zlib.compressobj(level), [], 0
        view = memoryview(self.payload)
        for lo in range(0, len(view), self.BLOCK):
            out.append(z.compress(view[lo: lo + self.BLOCK]))
            size += len(out[-1])
            limit = give_up_above()
            if limit is not None and size > limit:
                return None
        out.append(z.flush())
        return b"".join(out)

    def packed(self, give_up_above: int) -> bytes | None:
        """The payload compressed with ``zlib -9``, or None where it would come out longer than
        ``give_up_above`` bytes (the coded size)."""
        self._give_up_above = int(give_up_above * self.LEVEL_GAP)
        fast = self._fast.result()
        if fast is None or len(fast) > self._give_up_above:
            return None
        packed = self._deflate(9, lambda: give_up_above)
        return packed if packed is not None and len(packed) <= give_up_above else None


def _coding_for_file(f: ImageFile, coding: dict | None) -> dict | None:
    """``coding`` with what the file's kind asks for: gzip-wrapped files code their images last
    first (``units_reversed``), so that decompression deflates them as they decode."""
    if f.restore.get("gzip"):
        return {"units_reversed": True, **(coding or {})}
    return coding


class _GzipSettingDiffers(Exception):
    """The zlib setting :func:`bbcodec.formats.unwrap_gzip_quickly` chose does not reproduce the
    whole gzip stream."""


def _coded_or_stored(f: ImageFile, payload: bytes, payload_sha: str, model, coding, chunk, progress,
                     fallback: bool = True, jobs: int = 1, settle=None):
    """The smaller of the model's coding of ``f`` and the fallback that stores ``payload`` (the
    restored bytes, zlib-compressed where that helps); returns ``(file bytes, method, model name,
    note)``.
    Images the model's tiles would mostly pad are stored without trying the model. With
    ``fallback=False`` the model codes the data whatever the size. ``settle()``, where given, runs
    after the model's work and before any container is made (a check that ran alongside it)."""
    shape = list(f.images.shape)
    settle = settle or (lambda: None)

    def how(stored):
        return "stored with zlib" if stored.method == ZLIB else "stored as is (zlib would not shrink it)"

    if len(f.images) == 0:
        settle()
        stored = Container.stored(f.kind, shape, payload_sha, payload)
        return stored.to_bytes(), stored.method, None, f"no images: {how(stored)}"
    loaded = choose_model(f.images, f.pixels, model)
    if fallback and _padding_ratio(loaded, f.images, coding) > MAX_PADDING:
        settle()
        stored = Container.stored(f.kind, shape, payload_sha, payload)
        return stored.to_bytes(), stored.method, None, (f"images of {f.images.shape[-1]}x{f.images.shape[-2]} are "
                                                        f"too small or narrow for {loaded.name}'s tiles: {how(stored)}")
    background = _BackgroundZlib(payload) if fallback else None
    with _workers(jobs, loaded) as workers:
        layout, chunks, counts, _ = _encode_chunks(loaded, f.images, coding, chunk, progress, workers)
    settle()
    coded = Container(loaded.name, loaded.sha256, f.sha256, f.kind, shape, f.pixels, f.restore,
                      layout.stored_params(), chunks, counts, f.side_data).to_bytes()
    if not fallback:
        return coded, CODED, loaded.name, None
    packed = background.packed(give_up_above=len(coded))
    stored = Container.stored(f.kind, shape, payload_sha, payload, packed if packed is not None else payload)
    plain = stored.to_bytes()
    if len(coded) <= len(plain):
        return coded, CODED, loaded.name, None
    return plain, stored.method, None, (f"{loaded.name} codes this data in {len(coded):,} bytes, more than the "
                                        f"{len(plain):,} of the fallback: {how(stored)}")


def tensor_sha256(images: torch.Tensor) -> str:
    """The data checksum of an in-memory tensor: its shape and bytes."""
    h = hashlib.sha256(f"raw:{list(images.shape)}:".encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def compress_images(images: torch.Tensor, model=None, coding: dict | None = None, chunk: int = DEFAULT_CHUNK,
                    fallback: bool = True, jobs: int = 1) -> bytes:
    """Compress a uint8 tensor ``(N, H, W)`` or ``(N, 3, H, W)`` to ``.bbc`` bytes (kind ``raw``):
    coded by ``model`` (name, path or the default for the data), or stored with zlib where that is
    smaller. ``jobs``: see :func:`compress`."""
    jobs = resolve_jobs(jobs)
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() not in (3, 4) or (images.dim() == 4 and images.shape[1] != 3):
        raise UsageError("expected a uint8 tensor of shape (N, H, W) or (N, 3, H, W)")
    images = images.contiguous()
    sha = tensor_sha256(images)
    f = ImageFile("raw", images, {}, b"", sha)
    return _coded_or_stored(f, images.numpy().tobytes(), sha, model, coding, chunk, None, fallback, jobs)[0]


def _stored_images(box: Container) -> torch.Tensor:
    if box.kind == "raw":
        import numpy as np

        return torch.from_numpy(np.frombuffer(box.payload, dtype=np.uint8).copy()).reshape(box.shape)
    return read_image_bytes(box.payload, "stored.bin" if box.kind == "cifar" else "stored").images  # as read


def _restore(box: Container, model=None, progress=None, jobs: int = 1) -> tuple[torch.Tensor, bytes | None]:
    """Decode ``box`` and verify it against its data checksum: ``(images, restored file bytes)``
    (``None`` for an in-memory tensor); raises unless both match what was compressed."""
    mismatch = BBCodecError("decoded data does not match the checksum recorded at compression; output not written")
    if box.method != CODED:
        if hashlib.sha256(box.payload).hexdigest() != box.data_sha256 and not (
                box.kind == "raw" and tensor_sha256(_stored_images(box)) == box.data_sha256):
            raise mismatch
        images = _stored_images(box)
        return images, None if box.kind == "raw" else box.payload
    loaded = _model_for(box, model)
    writer = None
    try:
        with _workers(jobs, loaded) as workers:

            def deflate_as_decoded(layout):  # a gzip wrapper's deflate alongside the decoding
                nonlocal writer
                if box.kind in ("idx", "cifar") and box.restore.get("gzip") and layout.streams(len(box.chunks), workers):
                    writer = GzipFileWriter(box.kind, box.shape, box.restore, box.side_data)
                    return writer.feed
                return None

            images = _decode_chunks(loaded, box, progress, workers, deflate_as_decoded)
        if box.kind == "raw":
            legacy = box.version == 1 and hashlib.sha256(images.numpy().tobytes()).hexdigest() == box.data_sha256
            if not legacy and tensor_sha256(images) != box.data_sha256:
                raise mismatch
            return images, None
        if writer is not None:
            try:
                restored = writer.finish()
            except (ValueError, zlib.error):
                raise mismatch from None
        else:
            restored = write_image_file(ImageFile(box.kind, images, box.restore, box.side_data))
    finally:
        if writer is not None:
            writer.close()
    if restored_sha(box.kind, restored) != box.data_sha256:
        raise mismatch
    return images, restored


def decompress_images(data: bytes, model=None, jobs: int = 1) -> torch.Tensor:
    """Inverse of :func:`compress_images` (also returns the images of any ``.bbc`` file), verified
    against the data checksum recorded at compression. ``jobs``: see :func:`decompress`."""
    jobs = resolve_jobs(jobs)
    return _restore(Container.from_bytes(data), model, jobs=jobs)[0]


# ------------------------------------------------------------------------------ files


def compress_data(raw: bytes, name: str = "<data>", model=None, chunk: int = DEFAULT_CHUNK,
                  coding: dict | None = None, progress=None, fallback: bool = True,
                  kind: str | None = None, gunzipped: bool = False, jobs: int = 1) -> tuple[bytes, dict]:
    """Compress a supported file given as its bytes (``name`` names it in messages and tells CIFAR
    batches apart by its ending); returns ``(.bbc bytes, summary)``. Where the model would code
    the data in more bytes than zlib, the file stores it with zlib instead, and ``summary["note"]``
    says so in one line. ``jobs``: see :func:`compress`."""
    jobs = resolve_jobs(jobs)
    # a gzip wrapper's check (a deflate of the content: 1-2 s for MNIST's test set) runs alongside the model
    f = read_image_bytes(raw, name, kind=kind, gunzipped=gunzipped, finish_gzip_later=True)
    asked = coding
    coding = _coding_for_file(f, asked)
    gzip_check = _Background(f.gzip_check) if f.gzip_check is not None else None

    def settle():
        if gzip_check is not None and not gzip_check.result():
            raise _GzipSettingDiffers

    restorable = _Background(check_restorable, f)  # PNG: 0.2 s of encoding and decoding a 768x512 image
    restored = raw
    if raw[:2] == b"\x1f\x8b" and f.kind in ("idx", "cifar") and not f.restore.get("gzip"):
        restored = gzip.decompress(raw)  # gunzipped: the plain content is what comes back
    try:
        data, method, model_name, note = _coded_or_stored(f, restored, hashlib.sha256(restored).hexdigest(), model,
                                                          coding, chunk, progress, fallback, jobs, settle)
    except _GzipSettingDiffers:  # rare: the setting that matched the first megabyte did not match the rest
        f = read_image_bytes(raw, name, kind=kind, gunzipped=gunzipped)
        restored = raw if f.restore.get("gzip") else gzip.decompress(raw)
        data, method, model_name, note = _coded_or_stored(f, restored, hashlib.sha256(restored).hexdigest(), model,
                                                          _coding_for_file(f, asked), chunk, None, fallback, jobs)
    finally:
        restorable.result()  # its DataError first: the file could not have been restored
    dims = max(1, f.images.numel())
    summary = {"model": model_name or METHODS[method], "method": METHODS[method], "images": len(f.images),
               "input_bytes": len(raw), "output_bytes": len(data), "bits_per_dim": 8 * len(data) / dims}
    if note:
        summary["note"] = note
    return data, summary


def compress(src, dst=None, model=None, force: bool = False, chunk: int = DEFAULT_CHUNK,
             coding: dict | None = None, progress=None, kind: str | None = None, gunzipped: bool = False,
             fallback: bool = True, jobs: int = 1) -> dict:
    """Compress the file ``src`` to ``dst``; returns a summary. ``"-"`` is standard input as ``src``
    and standard output as ``dst``; ``dst`` defaults to ``src + '.bbc'`` (standard output when
    ``src`` is standard input). Outputs are written as :mod:`bbcodec.fileio` describes (never a
    partial file; symlinks and devices are written through), with the input's permission bits.
    ``kind``: see :func:`bbcodec.formats.read_image_bytes`. ``gunzipped``: a gzip file that zlib
    cannot reproduce is coded as the data inside it (and restored as that plain file; the default
    output name then drops ``.gz``: ``x.gz`` -> ``x.bbc``) instead of being refused.

    ``jobs``: code the file's chunks in this many worker processes (0: one per CPU this process may
    use; see :mod:`bbcodec.parallel`); the output is byte for byte the same whatever ``jobs`` is.
    A file of one chunk (up to ``chunk`` images or tiles) gains nothing: a smaller ``chunk`` gives
    more chunks (and other bytes). Models given as objects are coded in this process (as jobs=1)."""
    from .formats import count_images, unwrap_gzip

    jobs = resolve_jobs(jobs)
    t0 = time.perf_counter()
    name = display_name(src)
    default = dst is None
    if default:
        dst = STDIO if is_stdio(src) else Path(src).with_name(Path(src).name + ".bbc")
    if not (gunzipped and default):
        dst = _check_output(src, dst, force)  # before any work
    raw = original = _read_input(src)
    note = None
    if gunzipped and raw[:2] == b"\x1f\x8b":
        content, info = unwrap_gzip(raw, name, gunzipped=True)
        if info is None:  # zlib cannot reproduce it: code the plain content, which comes back
            raw = content
            note = "zlib cannot reproduce this gzip file: coded the data inside; decompression restores it gunzipped"
            if default and not is_stdio(src) and Path(src).suffix.lower() == ".gz":
                dst = Path(src).with_suffix(".bbc")
    if gunzipped and default:
        dst = _check_output(src, dst, force)
    hint_images(progress, count_images(raw, name, kind) if progress is not None else None)
    data, summary = compress_data(raw, name, model=model, chunk=chunk, coding=coding, progress=progress,
                                  kind=kind, gunzipped=gunzipped, fallback=fallback, jobs=jobs)
    write_output(dst, data, force, mode=input_mode(src))
    if note:
        summary = {**summary, "input_bytes": len(original),
                   "note": f"{note}; {summary['note']}" if summary.get("note") else note}
    return {"input": name, "output": display_name(dst, output=True), **summary, "seconds": time.perf_counter() - t0}


def _model_for(box: Container, model=None):
    """The model that coded ``box``: ``model`` if given (it must have the recorded weights), else
    the embedded or user model of the file's model name if it has them, else any embedded or user
    model whose weights have the SHA-256 the file records (:func:`bbcodec.zoo.find_model_by_sha256`),
    whatever its name."""
    from .zoo import cached_sha256, find_model_by_name, find_model_by_sha256

    name, sha = box.model_name, box.model_sha256
    made = f"this file was made with model {name!r} (weights {sha[:12]})"
    if model is not None:
        loaded = resolve_model(model)
        if loaded.sha256 != sha:
            raise BBCodecError(f"{made}, but {loaded.name!r} has other weights ({loaded.sha256[:12]})")
        return loaded
    stem, other = find_model_by_name(name), None
    if stem is not None:
        try:
            if cached_sha256(stem.with_name(stem.name + ".safetensors")) != sha:
                stem, other = None, stem
        except OSError:
            stem = None
    if stem is None:
        stem = find_model_by_sha256(sha)
    if stem is None:
        differs = f"; the installed {other.name!r} has other weights" if other is not None else ""
        raise BBCodecError(f"{made}, which is not installed{differs}: install it with `bbcodec models --install "
                           "PATH` (it is then found by its name or its weights), or pass --model PATH")
    loaded = load_model(stem)
    if loaded.sha256 != sha:  # the file changed since it was hashed
        raise BBCodecError(f"{made}, but {str(stem)!r} has other weights ({loaded.sha256[:12]})")
    return loaded


def read_container(src) -> Container:
    """The container in ``src`` (``"-"``: standard input)."""
    return Container.from_bytes(_read_input(src))


def decompress_data(data: bytes, model=None, progress=None, jobs: int = 1) -> tuple[bytes, dict]:
    """Restore the original file's bytes from ``.bbc`` bytes, verified against the checksum
    recorded at compression; returns ``(bytes, summary)``. ``jobs``: see :func:`decompress`."""
    jobs = resolve_jobs(jobs)
    box = Container.from_bytes(data)
    images, restored = _restore(box, model, progress, jobs)
    if restored is None:  # an in-memory tensor: restored as .npy
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, images.numpy())
        restored = buf.getvalue()
    return restored, {"images": len(images), "kind": box.kind, "model": box.model_name or METHODS[box.method]}


def decompress(src, dst=None, force: bool = False, model=None, progress=None, jobs: int = 1) -> dict:
    """Decompress ``src`` (a ``.bbc`` file; ``"-"``: standard input) to ``dst`` (default: ``src``
    without ``.bbc``; standard output for standard input, or when ``dst`` is ``"-"``), verifying
    the restored data against the checksum recorded at compression. Written as :func:`compress`
    writes, with the ``.bbc`` file's permission bits. ``jobs``: decode the file's chunks in this
    many worker processes (0: one per CPU), as :func:`compress` codes them; a file of one chunk
    is decoded in this process."""
    jobs = resolve_jobs(jobs)
    if dst is None:
        if is_stdio(src):
            dst = STDIO
        else:
            if Path(src).suffix != ".bbc":
                raise UsageError(f"{src}: does not end in .bbc; give the output name with -o")
            dst = Path(src).with_suffix("")
    dst = _check_output(src, dst, force)
    t0 = time.perf_counter()
    data = _read_input(src)
    if progress is not None and hasattr(progress, "images"):
        try:
            hint_images(progress, Container.from_bytes(data).shape[0])
        except (BBCodecError, IndexError, TypeError, AttributeError):
            pass  # decompress_data says what is wrong
    restored, summary = decompress_data(data, model=model, progress=progress, jobs=jobs)
    write_output(dst, restored, force, mode=input_mode(src))
    return {"input": display_name(src), "output": display_name(dst, output=True), **summary,
            "seconds": time.perf_counter() - t0}


def info(src) -> dict:
    """What a ``.bbc`` file holds (``-``: standard input); see :func:`bbcodec.container.describe`."""
    return describe(_read_input(src))


def evaluate(src, model=None, limit: int | None = None, coding: dict | None = None, chunk: int = DEFAULT_CHUNK,
             progress=None, elbo_seed: int = ELBO_SEED, jobs: int = 1) -> dict:
    """Compress and decompress ``src`` in memory (verified) and report, in bits per dimension, the
    model's negative ELBO next to the code length of the whole output file, with the overhead
    itemised, and the encode and decode speed. The negative ELBO is the coding model's, with the
    scale maps the encoder chose (see :meth:`bbcodec.layout.Layout.adapt`); without them it is
    ``unadapted_negative_elbo_bits_per_dim``. ``elbo_seed`` seeds its latent samples (default
    :data:`bbcodec.segments.ELBO_SEED`).

    ``src`` is a file, or an image tensor ``(N, H, W)`` / ``(N, 3, H, W)``; ``model`` a name, a
    path or a model object of the protocol (:mod:`bbcodec.protocol`). ``evaluate(my_model,
    images)`` reads the same as ``evaluate(images, model=my_model)``. ``jobs``: the round trip's
    chunks are coded and decoded in this many worker processes (see :func:`compress`); the
    negative ELBO is computed in this process."""
    jobs = resolve_jobs(jobs)
    if is_protocol_model(src):
        src, model = model, src
    if isinstance(src, torch.Tensor):
        images = torch.as_tensor(src)
        if images.dtype != torch.uint8 or images.dim() not in (3, 4):
            raise UsageError("expected a uint8 tensor of shape (N, H, W) or (N, 3, H, W)")
        f = ImageFile("raw", images.contiguous(), {}, b"", tensor_sha256(images))
        src = "<tensor>"
    else:
        f = read_image_file(Path(src))
    if limit:
        f = replace(f, images=f.images[:limit], side_data=f.side_data[:limit] if f.kind == "cifar" else f.side_data)
    images = f.images
    coding = _coding_for_file(f, coding)  # the file compress would write
    loaded = choose_model(images, f.pixels, model)
    dims = images.numel()
    with _workers(jobs, loaded) as workers:
        t0 = time.perf_counter()
        layout, chunks, counts, stats = _encode_chunks(loaded, images, coding, chunk, progress, workers)
        t_enc = time.perf_counter() - t0
        box = Container(loaded.name, loaded.sha256, f.sha256, f.kind, list(images.shape), f.pixels, f.restore,
                        layout.stored_params(), chunks, counts, f.side_data)
        t0 = time.perf_counter()
        decoded = _decode_chunks(loaded, box, progress, workers)
        t_dec = time.perf_counter() - t0
    used = min(jobs, len(chunks)) if workers is not None and len(chunks) > 1 else 1  # worker processes
    if not torch.equal(decoded, images):
        raise BBCodecError("round trip failed: decoded images differ")  # never expected
    params = layout.stored_params()
    elbo = Layout(loaded, images.shape, params).negative_elbo(images, seed=elbo_seed)
    unadapted = elbo
    if any(v for key in MAP_KEYS for level in params.get(key, ()) for v in level):
        plain = {**params, **{key: () for key in MAP_KEYS}}
        unadapted = Layout(loaded, images.shape, plain).negative_elbo(images, seed=elbo_seed)
    total_bits = 8 * len(box.to_bytes())
    container_bits = 8 * box.header_bytes()
    plan_bits = sum(st.extra.get("plan_bits", 0) for st in stats)
    framing_bits = sum(8 * len(c) - st.bits for c, st in zip(chunks, stats)) - plan_bits
    initial_bits = sum(st.initial_bits for st in stats)
    length_fields = sum(5 * st.lanes for st in stats)
    overhead = {"container_header_bits": container_bits, "ans_framing_and_padding_bits": framing_bits,
                "initial_bits": initial_bits, "head_length_field_bits": length_fields,
                "coding_plan_bits": plan_bits}
    return {
        "input": str(src), "model": loaded.name, "images": len(images), "dims": dims,
        "negative_elbo_bits_per_dim": elbo["bits"] / dims,
        "unadapted_negative_elbo_bits_per_dim": unadapted["bits"] / dims,
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
        "threads": max(torch.get_num_threads(), coding_threads()), "jobs": used,
        "coding": {**params, **layout.options.to_dict()},
    }
