"""While coding, keep freed memory in the process instead of handing it back to the OS (glibc).

Coding allocates and frees tensors of a few MB thousands of times: every layer's output, every
batch's entropy-model parameters. glibc's malloc serves blocks above a sliding threshold (128 KiB
at first) with fresh ``mmap`` pages and returns freed memory at the top of the heap to the OS, so
the next tensor of the same size faults all its pages in again. Where page faults are dear (the
2-core virtual machines of the benchmarks) that was a third of the time of a binarised MNIST
evaluation on one thread: 6.7 / 5.8 s with glibc's defaults against 4.5 / 5.3 s with the
settings here, the runs alternating (``mnist-binary-fast-v2``, encode, decode and the negative
ELBO).

:func:`keep_freed_memory` makes malloc serve blocks of up to 32 MiB from its heaps and keep up to
1 GiB of freed memory at their tops (growing them 64 MiB at a time), for the rest of the process.
The resident size then stays near its peak rather than shrinking between batches; nothing else
changes, and results are exact either way. ``BBCODEC_MALLOC=default`` leaves malloc as it is;
on other C libraries nothing is done.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters
SETTINGS = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 64 << 20}
_done: list[bool] = []


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


def keep_freed_memory() -> bool:
    """Apply the settings above once per process; whether they are in force."""
    if _done:
        return _done[0]
    ok = os.environ.get("BBCODEC_MALLOC", "") != "default" and _glibc()
    if ok:
        try:
            mallopt = ctypes.CDLL(None).mallopt
            ok = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
        except (OSError, AttributeError):
            ok = False
    _done.append(ok)
    return ok
