"""The allocator settings for coding: applied once, on glibc, unless BBCODEC_MALLOC=default."""

import os
import subprocess
import sys

import pytest

from bbcodec import allocator

PROBE = "from bbcodec.allocator import keep_freed_memory as k; print(k(), k())"


def _probe(**env):
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


@pytest.mark.skipif(not allocator._glibc(), reason="the settings are glibc's")
def test_applied_once_on_glibc():
    assert _probe(BBCODEC_MALLOC="") == ["True", "True"]


def test_left_alone_when_asked():
    assert _probe(BBCODEC_MALLOC="default") == ["False", "False"]


def test_coding_round_trip_keeps_freed_memory(tmp_path):
    """A compress and decompress in one process with the settings in force: the same bytes back."""
    import numpy as np

    from bbcodec import api

    images = (np.random.default_rng(0).random((6, 28, 28)) < 0.3).astype(np.uint8)
    src = tmp_path / "x.npy"
    np.save(src, images)
    api.compress(src, tmp_path / "x.bbc")
    api.decompress(tmp_path / "x.bbc", tmp_path / "y.npy")
    assert (tmp_path / "y.npy").read_bytes() == src.read_bytes()
    assert allocator._done == [allocator._glibc() and os.environ.get("BBCODEC_MALLOC", "") != "default"]
