"""The ``.bbc`` container: a versioned header, then independent coded chunks, then side data.

Layout (all integers little-endian)::

    b"BBC"  u8 version
    32 bytes  SHA-256 of the model's weights file
    32 bytes  SHA-256 of the original data (the file's bytes; a PNG's pixels, size and mode)
    varint    length of the compressed header, then the header: zlib-compressed compact JSON
              {model name, data kind, image shape, pixel kind, restore facts, coding parameters,
               chunks [[images, bytes], ...], side-data bytes}
    chunk 0, chunk 1, ...   each an independent ANS message (decodable on its own)
    side data               zlib-compressed (e.g. CIFAR-10 labels, a PNG's alpha channel)
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

from .errors import BBCodecError
from .varint import decode_varint, encode_varint

MAGIC = b"BBC"
VERSION = 1
# coding parameters, stored as a list in this order (format version 1; keys are only ever appended,
# and a key missing from an older file takes its value from before it was added: False)
CODING_KEYS = ("batch", "lanes_per_image", "initial_lanes", "bits_per_image", "precision", "pack", "tile", "plain_start",
               "stored_plan", "pyramid", "pop_bits_per_image",
               "scale_shifts", "scale_slopes")


class ContainerError(BBCodecError, ValueError):
    """A .bbc file that is truncated, corrupt, or from an unknown format version."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return decode_varint(data, pos)
    except ValueError:
        raise ContainerError("truncated .bbc header") from None


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

    def header_dict(self) -> dict:
        coding = [self.coding.get(k) for k in CODING_KEYS]  # positional: compact
        return {"m": self.model_name, "k": self.kind, "s": self.shape, "p": self.pixels, "r": self.restore,
                "c": coding, "n": [[n, len(b)] for n, b in zip(self.chunk_images, self.chunks)]}

    def to_bytes(self) -> bytes:
        side = zlib.compress(self.side_data, 9) if self.side_data else b""
        head = self.header_dict()
        head["x"] = len(side)
        packed = zlib.compress(json.dumps(head, separators=(",", ":")).encode(), 9)
        return (MAGIC + bytes([VERSION]) + bytes.fromhex(self.model_sha256) + bytes.fromhex(self.data_sha256)
                + encode_varint(len(packed)) + packed + b"".join(self.chunks) + side)

    def header_bytes(self) -> int:
        """Bytes of everything but the chunks (the container's own overhead)."""
        return len(self.to_bytes()) - sum(len(b) for b in self.chunks)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Container":
        if len(data) < 4 or data[:3] != MAGIC:
            raise ContainerError("not a bbcodec file (bad magic)")
        if data[3] != VERSION:
            raise ContainerError(f"unsupported .bbc format version {data[3]} (this bbcodec reads version {VERSION})")
        if len(data) < 68:
            raise ContainerError("truncated .bbc file")
        model_sha, data_sha = data[4:36].hex(), data[36:68].hex()
        n, pos = _read_varint(data, 68)
        try:
            head = json.loads(zlib.decompress(data[pos: pos + n]))
            chunk_list = [(int(a), int(b)) for a, b in head["n"]]
            side_len = int(head["x"])
        except (zlib.error, ValueError, KeyError, TypeError) as exc:
            raise ContainerError("corrupt .bbc header") from exc
        pos += n
        chunks = []
        for _, size in chunk_list:
            if pos + size > len(data):
                raise ContainerError("truncated .bbc file (a coded chunk is cut short)")
            chunks.append(data[pos: pos + size])
            pos += size
        if len(data) - pos != side_len:
            raise ContainerError("truncated or padded .bbc file (side data length mismatch)")
        try:
            side = zlib.decompress(data[pos:]) if side_len else b""
        except zlib.error as exc:
            raise ContainerError("corrupt .bbc side data") from exc
        try:
            coding = {k: v for k, v in zip(CODING_KEYS, head.get("c", [])) if v is not None}
            return cls(head["m"], model_sha, data_sha, head["k"], list(head["s"]), head["p"], head.get("r", {}),
                       coding, chunks, [a for a, _ in chunk_list], side)
        except KeyError as exc:
            raise ContainerError(f"corrupt .bbc header (missing {exc})") from exc
