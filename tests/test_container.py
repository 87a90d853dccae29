"""The container: checked headers, a strict schema, bounded work and memory, the zlib fallback."""
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from bbcodec import BBCodecError, api
from bbcodec.ans import ANSError, Message
from bbcodec.container import CODED, STORED, ZLIB, Container, ContainerError
from bbcodec.varint import decode_varint, encode_varint

from helpers import sample_images, save_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny8", "uint8", seed=1,
                     coding={"bits_per_image": 2000.0, "batch": 8, "lanes_per_image": 49, "initial_lanes": 16})


@pytest.fixture(scope="module")
def coded(tiny):
    x = sample_images(6)
    return x, api.compress_images(x, tiny, fallback=False)


def split(data):
    """(prefix, header dict, body) of a version-2 coded file."""
    n, start = decode_varint(data, 69)
    return data[:69], json.loads(zlib.decompress(data[start: start + n])), data[start + n + 4:]


def join(prefix, head, body, text=None):
    text = text if text is not None else zlib.compress(json.dumps(head).encode())
    top = prefix + encode_varint(len(text)) + text
    return top + struct.pack("<I", zlib.crc32(top)) + body


def test_coded_and_stored_round_trip_through_bytes(coded):
    x, data = coded
    box = Container.from_bytes(data)
    assert box.version == 2 and box.method == CODED and box.to_bytes() == data
    assert Container.from_bytes(join(*split(data))).chunks == box.chunks  # the test helpers rebuild it validly
    stored = Container.stored("raw", [1, 2, 3], "00" * 32, bytes(6))
    assert Container.from_bytes(stored.to_bytes()).payload == bytes(6)
    assert stored.method == STORED and Container.stored("raw", [1, 10, 10], "00" * 32, bytes(100)).method == ZLIB


def test_header_checksum_covers_every_header_byte(coded):
    _, data = coded
    end = len(data) - len(split(data)[2])
    for i in range(4, end):  # magic and version fail on their own
        bad = bytearray(data)
        bad[i] ^= 0x20
        with pytest.raises(BBCodecError):
            api.decompress_images(bytes(bad))


@pytest.mark.parametrize("field, value, message", [
    ("s", [6, 28], "image shape"), ("s", [6, 28, 28.0], "image shape"), ("s", [True, 28, 28], "image shape"),
    ("s", [0, 28, 28], "image shape"), ("s", [6, 4, 28, 28], "3 channels"), ("k", "tar", "data kind"),
    ("p", 8, "pixel kind"), ("m", "", "model name"), ("n", [], "chunk list"), ("n", [[6]], "chunk list"),
    ("n", [[6, -1]], "chunk size"), ("x", 5, "side data"), ("r", {"zz": 1}, "restore"), ("c", [0] * 99, "coding"),
    ("q", 1, "unknown fields"),
])
def test_strict_header_schema(coded, field, value, message):
    prefix, head, body = split(coded[1])
    head[field] = value
    with pytest.raises(ContainerError, match=message):
        Container.from_bytes(join(prefix, head, body))


@pytest.mark.parametrize("index, value", [(0, 0), (0, -3), (0, 1.5), (0, True), (1, 10 ** 9), (3, 0), (3, float("nan")),
                                          (4, 3), (5, 99), (6, 7), (9, -1), (9, 0.5), (7, 2), (11, "x")])
def test_bad_coding_parameters_in_a_file_are_refused_quickly(coded, tiny, index, value):
    prefix, head, body = split(coded[1])
    head["c"][index] = value
    t0 = time.perf_counter()
    with pytest.raises(BBCodecError, match="coding"):
        api.decompress_images(join(prefix, head, body), tiny)
    assert time.perf_counter() - t0 < 5


def test_more_images_than_the_chunk_holds_fail_fast(coded, tiny):
    prefix, head, body = split(coded[1])
    head["s"][0] = 50_000
    head["n"][0][0] = 50_000
    t0 = time.perf_counter()
    with pytest.raises(BBCodecError):
        api.decompress_images(join(prefix, head, body), tiny)
    assert time.perf_counter() - t0 < 10
    head["s"][0] = head["n"][0][0] = 1 << 24  # more than the bytes could hold at any rate
    with pytest.raises(ContainerError, match="cannot be coded"):
        Container.from_bytes(join(prefix, head, body))


def test_zlib_bombs_are_refused_without_inflating(coded):
    prefix, head, body = split(coded[1])
    c = zlib.compressobj(9)
    text = b"".join(c.compress(b" " * (1 << 20)) for _ in range(64)) + c.compress(json.dumps(head).encode()) + c.flush()
    with pytest.raises(ContainerError, match="inflates beyond"):
        Container.from_bytes(join(prefix, head, body, text))
    zeros = zlib.compress(bytes(64 << 20), 9)
    head["x"] = len(zeros)
    with pytest.raises(ContainerError):
        Container.from_bytes(join(prefix, head, body + zeros))


def test_stored_tensor_checked_against_its_checksum():
    x = torch.zeros((2, 5, 5), dtype=torch.uint8)
    data = bytearray(api.compress_images(x))
    assert Container.from_bytes(bytes(data)).method != CODED
    assert torch.equal(api.decompress_images(bytes(data)), x)
    data[5] ^= 1  # the data checksum itself (covered by the header CRC)
    with pytest.raises(BBCodecError):
        api.decompress_images(bytes(data))


def test_in_memory_decoding_checks_the_data_checksum(coded, tiny):
    _, data = coded
    box = Container.from_bytes(data)
    box.data_sha256 = "ab" * 32
    with pytest.raises(BBCodecError, match="checksum"):
        api.decompress_images(box.to_bytes(), tiny)


def test_api_validates_coding_like_the_cli(tiny):
    x = sample_images(4)
    with pytest.raises(api.UsageError, match="batch must be an integer from 1"):
        api.compress_images(x, tiny, coding={"batch": 0})
    with pytest.raises(api.UsageError, match="unknown coding parameter 'btach'"):
        api.compress_images(x, tiny, coding={"btach": 4})
    with pytest.raises(api.UsageError, match="tile must be a multiple of 4"):
        api.compress_images(torch.zeros((1, 3, 40, 40), dtype=torch.uint8), coding={"tile": 30})


def test_coding_parameters_keep_their_file_order():
    """Files store the coding parameters as a list in this order, so it never changes (rows of the
    coding table are only appended); the stored parameters, the encoder-only options and the
    old-file defaults all come from that one table."""
    from dataclasses import fields

    from bbcodec.coding_params import OLD_FILE_DEFAULTS, CodingParams, EncoderOptions, cli_options
    from bbcodec.container import CODING_KEYS

    assert CODING_KEYS[:14] == ("batch", "lanes_per_image", "initial_lanes", "bits_per_image", "precision", "pack",
                                "tile", "plain_start", "stored_plan", "pyramid", "pop_bits_per_image",
                                "scale_shifts", "scale_slopes", "lead_tiles")
    assert tuple(f.name for f in fields(CodingParams)) == CODING_KEYS
    assert "adapt" in {f.name for f in fields(EncoderOptions)} - set(CODING_KEYS)
    assert {k: OLD_FILE_DEFAULTS[k] for k in ("plain_start", "stored_plan", "pyramid", "lead_tiles")} == {
        "plain_start": False, "stored_plan": False, "pyramid": 0, "lead_tiles": ()}
    assert {"batch", "lanes_per_image", "tile", "pyramid", "adapt"} <= {o.name for o in cli_options()}


def test_ans_message_header_with_absurd_lane_counts():
    msg = Message((4,))
    data = bytearray(msg.to_bytes())
    data[4] = 0xFF  # the rank byte
    with pytest.raises(ANSError):
        Message.from_bytes(bytes(data))
    data = bytearray(msg.to_bytes())
    data[5:13] = struct.pack("<Q", 2 ** 62)
    with pytest.raises(ANSError, match="do not fit"):
        Message.from_bytes(bytes(data))


def _png(arr, mode):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size, mode", [((8, 8), "RGB"), ((3000, 1), "RGB"), ((1, 1), "L"), ((100, 20), "L")])
def test_never_much_bigger_than_zlib_of_the_input(size, mode):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size[1], size[0], 3 if mode == "RGB" else 1), dtype=np.uint8)
    raw = _png(arr if mode == "RGB" else arr[..., 0], mode)
    t0 = time.perf_counter()
    data, summary = api.compress_data(raw, "x.png")
    assert time.perf_counter() - t0 < 20
    assert len(data) <= len(zlib.compress(raw, 9)) + 64
    assert summary["method"] in ("zlib", "stored") and "note" in summary
    restored, _ = api.decompress_data(data)
    assert restored == raw  # a stored file restores the very bytes


def test_poor_fit_falls_back_and_says_so(tiny):
    x = torch.randint(0, 256, (4, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    buf = io.BytesIO()
    np.save(buf, x.numpy())
    data, summary = api.compress_data(buf.getvalue(), "noise.npy", model=tiny)
    assert summary["method"] in ("zlib", "stored") and "of the fallback" in summary["note"]
    assert api.decompress_data(data)[0] == buf.getvalue()


class _CountingLevels:
    """``zlib.compressobj`` that records the level of each compressor made."""

    def __init__(self, monkeypatch):
        self.levels, real = [], zlib.compressobj

        def made(level=-1, *args):
            self.levels.append(level)
            return real(level, *args)

        monkeypatch.setattr(zlib, "compressobj", made)


def test_fallback_stores_zlib_9_bytes_where_zlib_wins(tiny, monkeypatch):
    x = (torch.arange(26 * 28 * 28) % 251).to(torch.uint8).reshape(26, 28, 28)  # periodic: zlib's
    levels = _CountingLevels(monkeypatch)
    data = api.compress_images(x, tiny)
    box = Container.from_bytes(data)
    assert box.method == ZLIB and levels.levels == [6, 9]
    assert data.endswith(zlib.compress(box.payload, 9))


def test_fallback_skips_zlib_9_where_zlib_6_is_far_above_the_coded_size(monkeypatch):
    x = sample_images(64)  # digits: the embedded model codes them in well under zlib's bytes
    levels = _CountingLevels(monkeypatch)
    data = api.compress_images(x)
    assert Container.from_bytes(data).method == CODED
    assert levels.levels == [6]
    assert len(data) * api._BackgroundZlib.LEVEL_GAP < len(zlib.compress(x.numpy().tobytes(), 6))
