"""LEB128 unsigned varints: 7 bits per byte, low bits first, high bit set on all but the last."""

from __future__ import annotations


def encode_varint(n: int) -> bytes:
    """The varint bytes of ``n >= 0``."""
    if n < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """``(value, position after it)`` of the varint at ``data[pos:]``; ``ValueError`` if truncated
    or longer than 64 bits."""
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
