"""Interleaved (vectorized) rANS on torch tensors.

A :class:`Message` is a tensor of independent coder states, the *heads* (one per lane, any shape,
any device), plus one shared *stream* of 32-bit words that all lanes renormalise into, in a
deterministic order (lanes in row-major order within one push or pop). This is the layout of
craystack's ``vrans`` and of Giesen's interleaved rANS; everything here is exact integer
arithmetic in int64.

Invariants and ranges
---------------------
* every head lies in ``[2**31, 2**63)`` between operations;
* a symbol is coded from ``(start, freq)`` at ``precision`` bits: ``0 <= start``,
  ``1 <= freq``, ``start + freq <= 2**precision``, ``1 <= precision <= 31``;
* :meth:`Message.push` and :meth:`Message.pop` are exact inverses: popping after pushing the same
  ``(start, freq)`` restores heads and stream bit for bit, and so does pushing after popping
  (which is what bits-back coding does).

Popping more words than the stream holds never invents bits silently: the missing words are
drawn from a seeded pseudo-random source and counted in :attr:`Message.initial_words`, so that a
benchmark can charge them. A new message's heads are exactly ``2**31`` (no information), or, with
``random_heads=True``, ``2**31`` plus 31 seeded bits each (counted in :attr:`Message.initial_bits`)
so that bits-back pops from a fresh message return properly random samples.

Lanes can be added (:meth:`Message.grow`) by popping 31-bit values from the lanes already there,
so a lane added once some data has been coded costs no start-up bits; :meth:`Message.shrink` is its
inverse. Serialisation (:meth:`Message.to_bytes`) stores each head in ``5 + bitlen - 1`` bits.
"""

from __future__ import annotations

import math
import struct
from typing import Optional

import numpy as np
import torch

from .errors import BBCodecError

HEAD_MIN = 1 << 31  # heads live in [HEAD_MIN, 2**63)
WORD_BITS = 32
WORD_MASK = (1 << WORD_BITS) - 1
MAX_PRECISION = 31
GROW_BITS = 31  # bits popped to seed each lane added by Message.grow

_MAGIC = b"bbA1"

Index = Optional[object]  # anything torch accepts as an index into the heads


class ANSError(BBCodecError, ValueError):
    """Raised for invalid coder input or a corrupt serialised message."""


def _seeded_words(seed: int, first: int, count: int, device) -> torch.Tensor:
    """``count`` deterministic pseudo-random 32-bit words (int64) numbered ``first, first+1, ...``.

    A small integer hash (xorshift-multiply rounds with 31-bit odd constants, so no product can
    overflow int64); identical on every device.
    """
    x = torch.arange(first, first + count, dtype=torch.int64, device=device)
    x = (x + (seed & WORD_MASK) * 0x61C88647 + 0x3C6EF372) & WORD_MASK
    for mult in (0x2C1B3C6D, 0x297A2D39, 0x5BD1E995):
        x = x ^ (x >> 15)
        x = (x * mult) & WORD_MASK
    return x ^ (x >> 16)


class Message:
    """An interleaved rANS message: heads of any shape plus one shared stream of 32-bit words.

    Operations mutate the message in place. ``lanes`` arguments select a subset of the heads with
    any torch index (slice, tuple, boolean mask, index tensor); symbols must have the shape of
    ``heads[lanes]``.
    """

    def __init__(self, lane_shape, device=None, seed: int = 0, random_heads: bool = False):
        if isinstance(lane_shape, int):
            lane_shape = (lane_shape,)
        self.heads = torch.full(tuple(lane_shape), HEAD_MIN, dtype=torch.int64, device=device)
        self._words = torch.zeros(1024, dtype=torch.int64, device=self.heads.device)
        self._len = 0
        self.seed = seed
        self.initial_words = 0  # seeded words drawn because the stream ran dry
        self.random_head_lanes = 0
        if random_heads:
            # A head of exactly 2**31 holds no information: popping from it would always return
            # slot 0. Seeded heads make the first pops (bits-back from an empty message) random.
            n = self.heads.numel()
            low = _seeded_words(seed ^ 0x5EED, 0, n, self.device) >> 1
            self.heads = (low + HEAD_MIN).reshape(self.heads.shape)
            self.random_head_lanes = n

    @property
    def initial_bits(self) -> int:
        """Seeded bits this message has consumed: 31 per random head plus 32 per seeded word."""
        return 31 * self.random_head_lanes + 32 * self.initial_words

    # ------------------------------------------------------------------ inspection
    @property
    def device(self) -> torch.device:
        return self.heads.device

    @property
    def lane_shape(self) -> tuple:
        return tuple(self.heads.shape)

    @property
    def stream_words(self) -> int:
        return self._len

    @property
    def stream(self) -> torch.Tensor:
        """The stream's words (int64 in [0, 2**32)), oldest first. A view: do not modify."""
        return self._words[: self._len]

    def holds_only_seeded_words(self) -> bool:
        """True when the stream holds exactly the first seeded words (in any order): the state a
        decoder ends in after undoing everything an encoder did from a fresh message."""
        if self._len == 0:
            return True
        expected = _seeded_words(self.seed, 0, self._len, self.device)
        return torch.equal(torch.sort(self.stream).values, torch.sort(expected).values)

    def clone(self) -> "Message":
        other = Message.__new__(Message)
        other.heads = self.heads.clone()
        other._words = self._words[: max(self._len, 1)].clone()
        other._len = self._len
        other.seed = self.seed
        other.initial_words = self.initial_words
        other.random_head_lanes = self.random_head_lanes
        return other

    def bits(self) -> int:
        """Exact size of :meth:`to_bytes` output in bits before byte padding, minus the fixed
        header: ``32 * stream_words + sum(5 + bitlen(head) - 1)``."""
        return 32 * self._len + int(_head_bits(self.heads).sum().item())

    def content_bits(self) -> int:
        """Bits that pops can take before drawing seeded words: the stream's words plus each head's
        bits above its floor of ``2**31``."""
        return 32 * self._len + int((_head_bits(self.heads) - 36).sum().item())

    # ------------------------------------------------------------------ stream
    def _append(self, words: torch.Tensor) -> None:
        n = words.numel()
        if n == 0:
            return
        need = self._len + n
        if need > self._words.numel():
            cap = max(need, 2 * self._words.numel())
            grown = torch.zeros(cap, dtype=torch.int64, device=self.device)
            grown[: self._len] = self._words[: self._len]
            self._words = grown
        self._words[self._len : need] = words
        self._len = need

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more stream words without changing the stream."""
        need = self._len + n
        if need > self._words.numel():
            grown = torch.zeros(max(need, 2 * self._words.numel()), dtype=torch.int64, device=self.device)
            grown[: self._len] = self._words[: self._len]
            self._words = grown

    def _take(self, n: int) -> torch.Tensor:
        """Remove and return the newest ``n`` words, oldest first; seeded words fill any shortfall."""
        if n <= self._len:
            self._len -= n
            return self._words[self._len : self._len + n].clone()
        missing = n - self._len
        seeded = _seeded_words(self.seed, self.initial_words, missing, self.device)
        self.initial_words += missing
        real = self._words[: self._len].clone()
        self._len = 0
        return torch.cat([seeded, real])

    # ------------------------------------------------------------------ coding
    def _index(self, lanes: Index):
        """Flat lane indices for a ``lanes`` index: None (all lanes, in their shape), a step-1
        ``slice`` of the flattened lanes (a contiguous range), or an int64 tensor of the view's
        shape."""
        if lanes is None:
            return None
        if isinstance(lanes, slice) and self.heads.dim() == 1 and lanes.step in (None, 1):
            start, stop, _ = lanes.indices(self.heads.numel())
            return slice(start, max(start, stop))
        flat = torch.arange(self.heads.numel(), device=self.device).reshape(self.heads.shape)
        return flat[lanes]

    def _get(self, idx):
        return self.heads if idx is None else self.heads.reshape(-1)[idx]

    def _set(self, heads: torch.Tensor, idx) -> None:
        if idx is None:
            self.heads = heads
        else:
            self.heads.reshape(-1)[idx] = heads.reshape(-1) if isinstance(idx, slice) else heads

    @staticmethod
    def _check_shapes(heads, start, freq):
        if start.shape != heads.shape or freq.shape != heads.shape:
            raise ANSError(f"symbol intervals of shape {tuple(start.shape)}/{tuple(freq.shape)} "
                           f"do not match lanes of shape {tuple(heads.shape)}")

    def _push(self, start, freq, precision, idx) -> None:
        heads = self._get(idx)
        self._check_shapes(heads, start, freq)
        # A lane must first emit its low word iff head >= freq * 2**(63 - precision), i.e. iff its
        # quotient by freq reaches 2**(63 - precision): one division serves both purposes, and
        # only the (few) emitting lanes are renormalised and divided again.
        quot = torch.div(heads, freq, rounding_mode="floor")
        spare = (1 << precision) - freq
        out = heads + quot * spare + start
        emit = torch.nonzero(quot.reshape(-1) >= (1 << (63 - precision))).squeeze(1)
        if emit.numel():
            sub = heads.reshape(-1)[emit]
            self._append(sub & WORD_MASK)
            sub = sub >> WORD_BITS
            f = freq.reshape(-1)[emit]
            out.reshape(-1)[emit] = sub + torch.div(sub, f, rounding_mode="floor") * spare.reshape(-1)[emit] + start.reshape(-1)[emit]
        self._set(out, idx)

    def _peek(self, precision, idx) -> torch.Tensor:
        return self._get(idx) & ((1 << precision) - 1)

    def _pop(self, start, freq, precision, idx) -> None:
        heads = self._get(idx)
        self._check_shapes(heads, start, freq)
        out = freq * (heads >> precision) + (heads & ((1 << precision) - 1)) - start
        flat = out.reshape(-1)
        low = torch.nonzero(flat < HEAD_MIN).squeeze(1)
        if low.numel():
            flat[low] = (flat[low] << WORD_BITS) | self._take(low.numel())
        self._set(out, idx)

    def push(self, start: torch.Tensor, freq: torch.Tensor, precision: int, lanes: Index = None) -> None:
        """Encode one symbol per selected lane, given its interval ``[start, start+freq)`` out of
        ``2**precision``. Exact; no validation (see :func:`check_interval`)."""
        self._push(start, freq, precision, self._index(lanes))

    def peek(self, precision: int, lanes: Index = None) -> torch.Tensor:
        """The slot ``head mod 2**precision`` of each selected lane: the value that identifies the
        next symbol (the one with ``start <= slot < start + freq``)."""
        return self._peek(precision, self._index(lanes))

    def pop(self, start: torch.Tensor, freq: torch.Tensor, precision: int, lanes: Index = None) -> None:
        """Finish decoding the symbol identified by :meth:`peek`: remove ``[start, start+freq)``
        from each selected lane and renormalise from the stream. Exact inverse of :meth:`push`."""
        self._pop(start, freq, precision, self._index(lanes))

    def view(self, lanes) -> "MessageView":
        """A view of some lanes (any torch index of the heads); codecs push and pop through it."""
        return MessageView(self, self._index(lanes))

    def reshape(self, shape) -> "MessageView":
        """A view of all lanes with another shape (row-major)."""
        if tuple(shape) == (self.heads.numel(),):
            return MessageView(self, slice(0, self.heads.numel()))
        return MessageView(self, torch.arange(self.heads.numel(), device=self.device).reshape(shape))

    # ------------------------------------------------------------------ uniform bits
    def push_bits(self, values: torch.Tensor, nbits: int, lanes: Index = None) -> None:
        """Push ``nbits``-bit unsigned integers (``1 <= nbits <= 31``) as uniform symbols."""
        self.push(values, torch.ones_like(values), nbits, lanes)

    def pop_bits(self, nbits: int, lanes: Index = None) -> torch.Tensor:
        """Pop ``nbits``-bit uniform integers; inverse of :meth:`push_bits`."""
        values = self.peek(nbits, lanes)
        self.pop(values, torch.ones_like(values), nbits, lanes)
        return values

    # ------------------------------------------------------------------ lane count
    def grow(self, lane_shape) -> None:
        """Replace the heads by a larger 1-d or n-d set of ``prod(lane_shape)`` lanes whose first
        lanes keep the current heads (in row-major order) and whose new lanes start at
        ``2**31 + v`` with ``v`` 31 bits popped from the current lanes.

        A lane started this way costs no start-up bits when the message already holds data, unlike
        a fresh head of exactly ``2**31``. Inverse: :meth:`shrink`.
        """
        if isinstance(lane_shape, int):
            lane_shape = (lane_shape,)
        old = self.heads.numel()
        new = int(math.prod(lane_shape))
        if new < old:
            raise ANSError(f"cannot grow {old} lanes to {new}")
        extra = new - old
        flat = self.heads.reshape(-1).clone()
        self.heads = flat
        seeds = []
        done = 0
        while done < extra:  # rounds over the old lanes, each a vectorised pop
            take = min(old, extra - done)
            seeds.append(self.pop_bits(GROW_BITS, lanes=slice(0, take)))
            done += take
        added = torch.cat(seeds) + HEAD_MIN if seeds else flat[:0]
        self.heads = torch.cat([self.heads, added]).reshape(lane_shape)

    def shrink(self, lane_shape) -> None:
        """Inverse of :meth:`grow`: push the added lanes' 31-bit values back and drop them."""
        if isinstance(lane_shape, int):
            lane_shape = (lane_shape,)
        new = int(math.prod(lane_shape))
        flat = self.heads.reshape(-1)
        old_total = flat.numel()
        extra = old_total - new
        if extra < 0:
            raise ANSError(f"cannot shrink {old_total} lanes to {new}")
        added = flat[new:] - HEAD_MIN
        if bool(((added < 0) | (added >= HEAD_MIN)).any()):
            raise ANSError("corrupt message: lanes to remove are not grown lanes")
        self.heads = flat[:new].clone()
        bounds = list(range(0, extra, new))
        for lo in reversed(bounds):
            hi = min(lo + new, extra)
            self.push_bits(added[lo:hi], GROW_BITS, lanes=slice(0, hi - lo))
        self.heads = self.heads.reshape(lane_shape)

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Serialise: magic, lane shape, word count, packed heads, little-endian words."""
        shape = self.lane_shape
        header = _MAGIC + struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        header += struct.pack("<Q", self._len)
        heads = self.heads.reshape(-1).cpu().numpy().astype(np.uint64)
        words = self.stream.cpu().numpy().astype("<u4").tobytes()
        return header + _pack_heads(heads) + words

    @classmethod
    def from_bytes(cls, data: bytes, device=None, seed: int = 0) -> "Message":
        """Inverse of :meth:`to_bytes`. Raises :class:`ANSError` on malformed input."""
        try:
            if data[:4] != _MAGIC:
                raise ANSError("not an ANS message (bad magic)")
            ndim = data[4]
            pos = 5
            shape = struct.unpack_from(f"<{ndim}Q", data, pos)
            pos += 8 * ndim
            (nwords,) = struct.unpack_from("<Q", data, pos)
            pos += 8
        except struct.error as exc:
            raise ANSError("truncated ANS message header") from exc
        count = int(math.prod(shape))
        if ndim > 8 or 36 * count > 8 * (len(data) - pos):  # every head takes at least 36 bits
            raise ANSError(f"corrupt ANS message: {count} lanes do not fit in {len(data)} bytes")
        heads, used = _unpack_heads(data, pos, count)
        pos += used
        if len(data) - pos != 4 * nwords:
            raise ANSError(f"ANS message has {len(data) - pos} stream bytes, expected {4 * nwords}")
        msg = cls(shape, device=device, seed=seed)
        msg.heads = torch.from_numpy(heads.astype(np.int64)).reshape(shape).to(msg.device)
        words = np.frombuffer(data, dtype="<u4", count=nwords, offset=pos).astype(np.int64)
        msg._words = torch.from_numpy(words.copy()).to(msg.device) if nwords else msg._words
        msg._len = nwords
        return msg


def _head_bits(heads: torch.Tensor) -> torch.Tensor:
    """Bits each head takes in the packed format: 5-bit length plus the bits below the top one."""
    h = heads.reshape(-1)
    bitlen = torch.zeros_like(h)
    for shift in (32, 16, 8, 4, 2, 1):  # binary search for floor(log2 h) + 1
        big = (h >> (bitlen + shift)) > 0
        bitlen = torch.where(big, bitlen + shift, bitlen)
    bitlen = bitlen + 1
    return 5 + bitlen - 1


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Exact ``floor(log2 v) + 1`` of uint64 values >= 1."""
    bitlen = np.zeros(values.shape, dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        big = (values >> (bitlen + shift).astype(np.uint64)) > 0
        bitlen = np.where(big, bitlen + shift, bitlen)
    return bitlen + 1


_HEAD_CHUNK = 1 << 16


def _pack_heads(heads: np.ndarray) -> bytes:
    """Pack uint64 heads in [2**31, 2**63): first every 5-bit field ``bitlen - 32``, then every
    head's ``bitlen - 1`` low bits (the top bit is implicit), MSB first, zero-padded to a byte."""
    if heads.size == 0:
        return b""
    bitlen = _bit_length(heads)
    if (bitlen < 32).any() or (bitlen > 63).any():
        raise ANSError("head outside [2**31, 2**63)")
    length_bits = (((bitlen - 32)[:, None] >> (4 - np.arange(5))[None, :]) & 1).astype(np.uint8)
    parts = [length_bits.reshape(-1)]
    for lo in range(0, heads.size, _HEAD_CHUNK):
        h, n = heads[lo : lo + _HEAD_CHUNK], bitlen[lo : lo + _HEAD_CHUNK] - 1
        shifts = n[:, None] - 1 - np.arange(62)[None, :]
        bits = (h[:, None] >> np.maximum(shifts, 0).astype(np.uint64)) & np.uint64(1)
        parts.append(bits.astype(np.uint8)[shifts >= 0])
    return np.packbits(np.concatenate(parts)).tobytes()


def _unpack_heads(data: bytes, pos: int, count: int):
    """Inverse of :func:`_pack_heads`; returns (uint64 heads, bytes consumed)."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64), 0
    len_bytes = (5 * count + 7) // 8
    if len(data) < pos + len_bytes:
        raise ANSError("truncated ANS heads")
    raw = np.frombuffer(data, dtype=np.uint8, count=len_bytes, offset=pos)
    fields = np.unpackbits(raw)[: 5 * count].reshape(count, 5).astype(np.int64)
    body = (fields * (1 << (4 - np.arange(5)))[None, :]).sum(axis=1) + 31  # bitlen - 1
    total_bits = 5 * count + int(body.sum())
    nbytes = (total_bits + 7) // 8
    if len(data) < pos + nbytes:
        raise ANSError("truncated ANS heads")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=pos))
    if bits[total_bits:].any():
        raise ANSError("corrupt ANS heads (nonzero padding)")
    offsets = 5 * count + np.concatenate([[0], np.cumsum(body)[:-1]])
    heads = np.empty(count, dtype=np.uint64)
    for lo in range(0, count, _HEAD_CHUNK):
        off, n = offsets[lo : lo + _HEAD_CHUNK], body[lo : lo + _HEAD_CHUNK]
        col = np.arange(62)[None, :]
        valid = col < n[:, None]
        vals = np.where(valid, bits[np.minimum(off[:, None] + col, total_bits - 1)], 0).astype(np.uint64)
        weights = np.where(valid, n[:, None] - 1 - col, 0).astype(np.uint64)
        heads[lo : lo + _HEAD_CHUNK] = (vals << weights).sum(axis=1, dtype=np.uint64) | (
            np.uint64(1) << n.astype(np.uint64)
        )
    return heads, nbytes


def check_interval(start: torch.Tensor, freq: torch.Tensor, precision: int) -> None:
    """Raise :class:`ANSError` unless every ``(start, freq)`` is a valid interval of ``2**precision``."""
    if not 1 <= precision <= MAX_PRECISION:
        raise ANSError(f"precision must be in [1, {MAX_PRECISION}], got {precision}")
    if start.shape != freq.shape:
        raise ANSError(f"start shape {tuple(start.shape)} != freq shape {tuple(freq.shape)}")
    bad = (freq < 1) | (start < 0) | (start + freq > (1 << precision))
    if bool(bad.any()):
        raise ANSError("invalid (start, freq) interval for the given precision")


class MessageView:
    """Some lanes of a :class:`Message`, addressed by flat lane indices (a contiguous ``slice`` or
    an index tensor); same coding interface.

    Views nest (``view.view(...)``, ``view.reshape(...)``) and share the parent's heads and stream.
    Words emitted or read by one operation are ordered by the view's own row-major order.
    """

    def __init__(self, root: Message, idx):
        self.root = root
        self.idx = idx

    def _tensor_idx(self):
        if isinstance(self.idx, slice):
            return torch.arange(self.idx.start, self.idx.stop, device=self.root.device)
        return self.idx

    @property
    def lane_shape(self) -> tuple:
        if isinstance(self.idx, slice):
            return (self.idx.stop - self.idx.start,)
        return tuple(self.idx.shape)

    @property
    def device(self):
        return self.root.device

    @property
    def heads(self) -> torch.Tensor:
        return self.root._get(self.idx)

    def _sub(self, lanes):
        if lanes is None:
            return self.idx
        if isinstance(self.idx, slice) and isinstance(lanes, slice) and lanes.step in (None, 1):
            start, stop, _ = lanes.indices(self.idx.stop - self.idx.start)
            return slice(self.idx.start + start, self.idx.start + max(start, stop))
        return self._tensor_idx()[lanes]

    def push(self, start, freq, precision, lanes=None):
        self.root._push(start, freq, precision, self._sub(lanes))

    def peek(self, precision, lanes=None):
        return self.root._peek(precision, self._sub(lanes))

    def pop(self, start, freq, precision, lanes=None):
        self.root._pop(start, freq, precision, self._sub(lanes))

    def push_bits(self, values, nbits, lanes=None):
        self.push(values, torch.ones_like(values), nbits, lanes)

    def pop_bits(self, nbits, lanes=None):
        values = self.peek(nbits, lanes)
        self.pop(values, torch.ones_like(values), nbits, lanes)
        return values

    def view(self, lanes) -> "MessageView":
        return MessageView(self.root, self._sub(lanes))

    def reshape(self, shape) -> "MessageView":
        if isinstance(self.idx, slice) and tuple(shape) == self.lane_shape:
            return self
        return MessageView(self.root, self._tensor_idx().reshape(shape))
