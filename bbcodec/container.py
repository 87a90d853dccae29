"""The ``.bbc`` container: a checked header, then independent coded chunks, then side data.

Format version 2 (written now; all integers little-endian)::

    b"BBC"  u8 version (2)  u8 method
    32 bytes  SHA-256 of the restored data (a file's bytes; a picture's mode, size and pixels;
              a tensor's shape and bytes)
    32 bytes  SHA-256 of the model's weights file            (method 0 only)
    varint    length of the header, then the header: compact JSON, zlib-compressed for method 0
    u32       CRC-32 of every byte above, from the magic on
    body      method 0 (``coded``): chunk 0, chunk 1, ... (each an independent ANS message), then
              the side data, zlib-compressed (CIFAR-10 labels, a picture's alpha channel);
              method 1 (``zlib``) and 2 (``stored``): the original bytes, zlib-compressed or as is

Method 0's header is ``{m: model name, k: data kind, s: image shape, p: pixel kind, r: restore
facts, c: coding parameters (a list, see :data:`CODING_KEYS`), n: [[units, bytes], ...] per
chunk, x: side-data bytes}``; methods 1 and 2 store ``{k, z: restored bytes}`` (and ``s``, the
shape, for a tensor). So every byte
that shapes the output is covered by the CRC or the data checksum, and a decoder refuses
anything else. Version 1 (no method byte, no CRC; always coded by a model) is still read.

Every header value is checked for type, range and consistency (:func:`check_header`) before any
work, and nothing is allocated beyond what the file's size allows: headers and side data are
inflated with a limit, and the image count is bounded by the bits the chunks hold.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field

from .coding_params import OLD_FILE_DEFAULTS, STORED_KEYS
from .errors import BBCodecError
from .varint import decode_varint, encode_varint

MAGIC = b"BBC"
VERSION = 2
READS = (1, 2)
CODED, ZLIB, STORED = 0, 1, 2  # methods
METHODS = {CODED: "coded", ZLIB: "zlib", STORED: "stored"}
# coding parameters, stored as a list in this order (keys are only ever appended, and a key
# missing from an older file takes its old-file default, see coding_params.OLD_FILE_DEFAULTS)
CODING_KEYS = STORED_KEYS
KINDS = ("idx", "npy", "cifar", "png", "pnm", "raw")
MAX_HEADER_BYTES = 1 << 22  # inflated header JSON
MAX_SIDE_DATA = 1 << 31
MAX_RESTORED_BYTES = 1 << 34
MAX_DIMS = 1 << 34  # pixels (times channels) a header may declare
# No symbol costs less than about 2**-16 bits at the coder's precisions (the likeliest of 256
# values at 24 bits of precision costs 2**-15.5; a packed binary symbol of 14 pixels 2**-9.5), so
# a chunk of B bytes cannot hold more than this many pixels per bit:
MAX_DIMS_PER_BIT = 1 << 17


class ContainerError(BBCodecError, ValueError):
    """A .bbc file that is truncated, corrupt, or from an unknown format version."""


def _corrupt(what: str) -> ContainerError:
    return ContainerError(f"corrupt .bbc header: {what}")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return decode_varint(data, pos)
    except ValueError:
        raise ContainerError("truncated .bbc header") from None


def inflate(data: bytes, limit: int, what: str) -> bytes:
    """zlib-decompress ``data``, refusing more than ``limit`` bytes of output (decompression bombs)
    or trailing garbage."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ContainerError(f"corrupt .bbc {what} ({exc})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ContainerError(f"corrupt .bbc {what}: inflates beyond the {limit:,} bytes the file allows")
    if not d.eof or d.unused_data:
        raise ContainerError(f"corrupt .bbc {what}: truncated or followed by garbage")
    return out


def _is_int(v) -> bool:
    return type(v) is int


def check_int(v, lo: int, hi: int, what: str) -> int:
    if not _is_int(v) or not lo <= v <= hi:
        raise _corrupt(f"{what} must be an integer from {lo} to {hi}, got {v!r:.40}")
    return v


def image_dims(shape) -> int:
    return math.prod(shape)


def check_shape(shape, what: str = "image shape") -> list:
    if not isinstance(shape, list) or len(shape) not in (3, 4):
        raise _corrupt(f"{what} must be a list of 3 or 4 integers")
    for v in shape:
        check_int(v, 1, 1 << 31, what)
    if len(shape) == 4 and shape[1] != 3:
        raise _corrupt(f"{what}: colour images have 3 channels, not {shape[1]}")
    if image_dims(shape) > MAX_DIMS:
        raise _corrupt(f"{what} {shape} is too large")
    return shape


def _check_restore(kind: str, shape: list, restore) -> None:
    if not isinstance(restore, dict):
        raise _corrupt("restore facts must be an object")
    allowed = {"idx": {"gzip"}, "cifar": {"gzip"}, "npy": {"f", "c", "h"}, "png": {"mode", "size"},
               "pnm": {"mode", "size"}, "raw": set()}[kind]
    if set(restore) - allowed:
        raise _corrupt(f"unknown restore facts {sorted(set(restore) - allowed)} for a {kind} file")
    if kind in ("idx", "cifar"):
        gz = restore.get("gzip")
        if gz is not None:
            if not isinstance(gz, dict) or set(gz) != {"h", "l", "m"} or not isinstance(gz["h"], str) \
                    or len(gz["h"]) > 1 << 16:
                raise _corrupt("bad gzip facts")
            check_int(gz["l"], 0, 9, "gzip level")
            check_int(gz["m"], 1, 9, "gzip memory level")
        if kind == "idx" and len(shape) != 3:
            raise _corrupt("an IDX file holds greyscale images")
        if kind == "cifar" and shape[1:] != [3, 32, 32]:
            raise _corrupt("a CIFAR-10 file holds 3x32x32 images")
    elif kind == "npy":
        for key in ("f", "c"):
            check_int(restore.get(key), 0, 1, f"npy fact {key}")
        if restore["c"] != (len(shape) == 4):
            raise _corrupt("npy channel fact does not match the image shape")
        if "h" in restore and (not isinstance(restore["h"], str) or len(restore["h"]) > 1 << 16):
            raise _corrupt("bad npy header")
    elif kind in ("png", "pnm"):
        mode, size = restore.get("mode"), restore.get("size")
        colour = {"RGB": True, "RGBA": True, "L": False, "1": False, "LA": False}
        if not isinstance(mode, str) or mode not in colour or (kind == "pnm" and mode not in ("RGB", "L")):
            raise _corrupt(f"unsupported picture mode {mode!r:.20}")
        if shape[0] != 1 or colour[mode] != (len(shape) == 4) or size != [shape[-1], shape[-2]]:
            raise _corrupt("picture size or mode does not match the image shape")


def side_data_size(kind: str, shape: list, restore: dict) -> int:
    """The side data's exact size for this kind and shape (labels, alpha channel)."""
    if kind == "cifar":
        return shape[0]
    if kind in ("png", "pnm") and restore.get("mode") in ("RGBA", "LA"):
        return shape[-1] * shape[-2]
    return 0


def check_header(head, version: int, body_bytes: int) -> dict:
    """Validate a method-0 header's JSON (version 1 or 2) against the schema; returns it. Chunk
    sizes must add up to the body and the image count must be one the body can hold."""
    if not isinstance(head, dict):
        raise _corrupt("not an object")
    known = {"m", "k", "s", "p", "r", "c", "n", "x"}
    if set(head) - known:
        raise _corrupt(f"unknown fields {sorted(set(head) - known)}")
    for key in ("m", "k", "s", "p", "n", "x"):
        if key not in head:
            raise _corrupt(f"missing {key!r}")
    if not isinstance(head["m"], str) or not 0 < len(head["m"]) <= 256:
        raise _corrupt("bad model name")
    if head["k"] not in KINDS:
        raise _corrupt(f"unknown data kind {head['k']!r:.20}")
    shape = check_shape(head["s"])
    if head["p"] not in ("uint8", "binary"):
        raise _corrupt(f"unknown pixel kind {head['p']!r:.20}")
    restore = head.get("r", {})
    _check_restore(head["k"], shape, restore)
    coding = head.get("c", [])
    if not isinstance(coding, list) or len(coding) > len(CODING_KEYS):
        raise _corrupt("bad coding parameters")
    chunks = head["n"]
    if not isinstance(chunks, list) or not chunks or len(chunks) > max(1, body_bytes):
        raise _corrupt("bad chunk list")
    total = 0
    for item in chunks:
        if not isinstance(item, list) or len(item) != 2:
            raise _corrupt("bad chunk list")
        check_int(item[0], 1, 1 << 40, "chunk unit count")
        total += check_int(item[1], 1, body_bytes, "chunk size")
    side = check_int(head["x"], 0, body_bytes, "side data size")
    if total + side != body_bytes:
        raise ContainerError("truncated or padded .bbc file (chunk and side data sizes do not add up)")
    if (side > 0) != (side_data_size(head["k"], shape, restore) > 0):
        raise _corrupt("side data present where none belongs, or missing")
    if image_dims(shape) > MAX_DIMS_PER_BIT * 8 * total:
        raise _corrupt(f"{image_dims(shape):,} pixels cannot be coded in {total:,} bytes")
    return {**head, "r": restore, "c": coding}


def _means_absent(key: str, value) -> bool:
    """Whether a stored coding value says what its absence does (None, or its old-file default)."""
    if value is None:
        return True
    if key not in OLD_FILE_DEFAULTS:
        return False
    default = OLD_FILE_DEFAULTS[key]
    return list(value) == list(default) if isinstance(default, tuple) else value == default and type(value) is type(default)


def coding_header_bytes(coding: dict) -> int:
    """About what coding parameters add to a header: their positional list as compact JSON,
    zlib-compressed (the header is compressed as a whole, so differences are what counts)."""
    values = [coding.get(k) for k in CODING_KEYS]
    return len(zlib.compress(json.dumps(values, separators=(",", ":")).encode(), 9))


@dataclass
class Container:
    model_name: str
    model_sha256: str
    data_sha256: str
    kind: str
    shape: list
    pixels: str
    restore: dict = field(default_factory=dict)
    coding: dict = field(default_factory=dict)
    chunks: list = field(default_factory=list)  # list of bytes
    chunk_images: list = field(default_factory=list)
    side_data: bytes = b""
    method: int = CODED
    payload: bytes = b""  # methods 1 and 2: the restored bytes
    version: int = VERSION

    packed: bytes = field(default=b"", repr=False)  # method 1: the payload zlib-compressed

    @classmethod
    def stored(cls, kind: str, shape: list, data_sha256: str, payload: bytes, packed: bytes | None = None) -> "Container":
        """A fallback container holding ``payload`` (the restored bytes), zlib-compressed if that
        is smaller. ``packed``: the payload compressed with ``zlib -9`` if already known (else it
        is compressed here); pass ``payload`` itself to store it as is."""
        if packed is None:
            packed = zlib.compress(payload, 9)
        if len(packed) < len(payload):
            return cls("", "", data_sha256, kind, list(shape), "", method=ZLIB, payload=payload, packed=packed)
        return cls("", "", data_sha256, kind, list(shape), "", method=STORED, payload=payload)

    def header_dict(self) -> dict:
        if self.method != CODED:  # kept short: a stored file is at most a few dozen bytes over its payload
            head = {"k": self.kind, "z": len(self.payload)}
            if self.kind == "raw":
                head["s"] = self.shape
            return head
        coding = [self.coding.get(k) for k in CODING_KEYS]  # positional: compact
        while coding and _means_absent(CODING_KEYS[len(coding) - 1], coding[-1]):
            coding.pop()  # trailing keys that say what their absence says: as files before them
        return {"m": self.model_name, "k": self.kind, "s": self.shape, "p": self.pixels, "r": self.restore,
                "c": coding, "n": [[n, len(b)] for n, b in zip(self.chunk_images, self.chunks)]}

    def _body(self) -> tuple[bytes, bytes]:
        """(header JSON bytes as stored, body)."""
        head = self.header_dict()
        if self.method == CODED:
            side = zlib.compress(self.side_data, 9) if self.side_data else b""
            head["x"] = len(side)
            text = zlib.compress(json.dumps(head, separators=(",", ":")).encode(), 9)
            return text, b"".join(self.chunks) + side
        text = json.dumps(head, separators=(",", ":")).encode()
        if self.method == ZLIB:
            return text, self.packed or zlib.compress(self.payload, 9)
        return text, self.payload

    def to_bytes(self) -> bytes:
        text, body = self._body()
        top = MAGIC + bytes([VERSION, self.method]) + bytes.fromhex(self.data_sha256)
        if self.method == CODED:
            top += bytes.fromhex(self.model_sha256)
        top += encode_varint(len(text)) + text
        return top + struct.pack("<I", zlib.crc32(top)) + body

    def header_bytes(self) -> int:
        """Bytes of everything but the chunks (the container's own overhead)."""
        return len(self.to_bytes()) - sum(len(b) for b in self.chunks)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Container":
        if len(data) < 4 or data[:3] != MAGIC:
            raise ContainerError("not a bbcodec file (bad magic)")
        version = data[3]
        if version not in READS:
            raise ContainerError(f"unsupported .bbc format version {version} (this bbcodec reads versions "
                                 f"{', '.join(map(str, READS))})")
        if version == 1:
            return cls._from_v1(data)
        if len(data) < 5 + 32:
            raise ContainerError("truncated .bbc file")
        method = data[4]
        if method not in METHODS:
            raise ContainerError(f"corrupt .bbc header: unknown method {method}")
        pos = 5 + 32
        data_sha = data[5:pos].hex()
        model_sha = ""
        if method == CODED:
            if len(data) < pos + 32:
                raise ContainerError("truncated .bbc file")
            model_sha, pos = data[pos: pos + 32].hex(), pos + 32
        n, pos = _read_varint(data, pos)
        if pos + n + 4 > len(data):
            raise ContainerError("truncated .bbc file (the header is cut short)")
        text, end = data[pos: pos + n], pos + n
        (crc,) = struct.unpack_from("<I", data, end)
        if zlib.crc32(data[:end]) != crc:
            raise ContainerError("corrupt .bbc header (checksum mismatch)")
        body = data[end + 4:]
        text = inflate(text, MAX_HEADER_BYTES, "header") if method == CODED else text
        try:
            head = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _corrupt("not JSON") from exc
        if method == CODED:
            return cls._coded(head, model_sha, data_sha, body, version)
        if not isinstance(head, dict) or head.get("k") not in KINDS or set(head) != (
                {"k", "z", "s"} if head["k"] == "raw" else {"k", "z"}):
            raise _corrupt("bad stored-file header")
        size = check_int(head["z"], 0, MAX_RESTORED_BYTES, "stored size")
        shape = head.get("s", [])
        if head["k"] == "raw":
            check_shape(shape, "stored tensor shape")
            if image_dims(shape) != size:
                raise _corrupt("stored tensor shape does not match its size")
        payload = inflate(body, size, "stored data") if method == ZLIB else body
        if len(payload) != size:
            raise ContainerError("truncated or padded .bbc file (stored data size mismatch)")
        return cls("", "", data_sha, head["k"], shape, "", method=method, payload=payload, version=version)

    @classmethod
    def _coded(cls, head, model_sha: str, data_sha: str, body: bytes, version: int) -> "Container":
        head = check_header(head, version, len(body))
        pos, chunks = 0, []
        for _, size in head["n"]:
            chunks.append(body[pos: pos + size])
            pos += size
        expected = side_data_size(head["k"], head["s"], head["r"])
        side = inflate(body[pos:], expected, "side data") if head["x"] else b""
        if len(side) != expected:
            raise ContainerError("corrupt .bbc side data (wrong size)")
        coding = {k: v for k, v in zip(CODING_KEYS, head["c"]) if v is not None}
        return cls(head["m"], model_sha, data_sha, head["k"], list(head["s"]), head["p"], head["r"], coding,
                   chunks, [a for a, _ in head["n"]], side, version=version)

    @classmethod
    def _from_v1(cls, data: bytes) -> "Container":
        """Version 1: ``BBC 0x01``, model SHA-256, data SHA-256, varint length, zlib JSON header,
        chunks, side data; no checksum over the header."""
        if len(data) < 68:
            raise ContainerError("truncated .bbc file")
        model_sha, data_sha = data[4:36].hex(), data[36:68].hex()
        n, pos = _read_varint(data, 68)
        if pos + n > len(data):
            raise ContainerError("truncated .bbc file (the header is cut short)")
        text = inflate(data[pos: pos + n], MAX_HEADER_BYTES, "header")
        try:
            head = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _corrupt("not JSON") from exc
        return cls._coded(head, model_sha, data_sha, data[pos + n:], 1)



def describe(data: bytes) -> dict:
    """What the ``.bbc`` bytes ``data`` hold, as plain values (for ``bbcodec info``)."""
    box = Container.from_bytes(data)
    dims = max(1, image_dims(box.shape)) if box.shape else 1
    out = {"format_version": box.version, "method": METHODS[box.method], "model": box.model_name or None,
           "model_sha256": box.model_sha256 or None, "kind": box.kind, "shape": box.shape or None,
           "pixels": box.pixels or None, "images": box.shape[0] if box.shape else None,
           "chunks": len(box.chunks) if box.method == CODED else None, "bytes": len(data),
           "bits_per_dim": 8 * len(data) / dims if box.shape else None, "data_sha256": box.data_sha256,
           "coding": box.coding or None}
    return {k: v for k, v in out.items() if v is not None}
