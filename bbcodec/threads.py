"""How many threads torch may use, chosen before torch is imported.

The default is half the CPUs this process may run on (its affinity), at least 1 and at most 8;
``--threads N`` (or ``BBCODEC_THREADS``) overrides it. Why half: OpenMP threads spin while they
wait, so two processes that each use every core slow each other down far more than twofold.
Measured on a 2-core machine, a round trip of 2,000 MNIST digits took 7.2 s alone with 2 threads
but 30.3 s when two ran at once (4.2x); with 1 thread, 8.9 s alone and 9.0 s two at once; with 2
threads that sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), 12.0 s alone. Nothing here
changes results: decoding is exact whatever the thread count.
"""

from __future__ import annotations

import os
import sys

MAX_DEFAULT = 8


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure(threads: int | None = None) -> int:
    """Set the thread count (``None``: ``BBCODEC_THREADS``, else the default) for torch, which
    must not be imported yet for the OpenMP settings to apply; returns the count."""
    if threads is None:
        env = os.environ.get("BBCODEC_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else max(1, min(MAX_DEFAULT, available_cpus() // 2))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # too late for the environment: tell torch directly
        sys.modules["torch"].set_num_threads(threads)
    return threads
