"""How many threads compute the networks, chosen before torch is imported.

``--threads N`` (or ``BBCODEC_THREADS``) sets N; the default is every CPU this process may run
on (its affinity), at most 8. Nothing here changes results: decoding is exact whatever the
thread count.

* **Coding** (the exact networks of :mod:`bbcodec.models.fixedpoint`, on the CPU): torch itself
  runs one thread, and each large product is split into N blocks, one per thread of a small pool
  (:func:`split_pool`) whose idle threads *sleep*. Why not torch's own threads: OpenMP threads
  spin while they wait, so two processes that each use every core slow each other down far more
  than twofold. Measured on a 2-core machine, a round trip of 2,000 MNIST digits took 7.2 s alone
  with 2 OpenMP threads but 30.3 s when two ran at once (4.2x); with 1 thread, 8.9 s alone and
  9.0 s two at once; with 2 OpenMP threads that sleep instead of spinning
  (``OMP_WAIT_POLICY=PASSIVE``), 12.0 s alone, because every small operation then wakes them.
  The pool splits only products big enough to pay for the wake-up.
* **Training** (float32, autograd): torch's threads, N where given, else half the CPUs (1 to 8):
  the spinning cost above, and a second training on the same machine is common.
"""

from __future__ import annotations

import os
import sys
import threading

MAX_DEFAULT = 8
_coding_threads: int | None = None  # set by configure(); None: not configured (API use)
_cpu_share: int | None = None  # CPUs this process counts as its own (configure's ``cpus``); None: all
_pool = None
_pool_lock = threading.Lock()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _requested(threads: int | None) -> int | None:
    if threads is None:
        env = os.environ.get("BBCODEC_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else None
    return threads


def _default(cpus: int) -> int:
    return max(1, min(MAX_DEFAULT, cpus))


def configure(threads: int | None = None, training: bool = False, cpus: int | None = None) -> int:
    """Set the thread count (``None``: ``BBCODEC_THREADS``, else the default) before torch is
    imported, for coding or (``training``) for training; returns the count of threads that
    compute the networks. ``cpus``: this process's share of the CPUs, where it is one of several
    workers sharing them (:func:`spare_cpu`)."""
    global _coding_threads, _cpu_share
    _cpu_share = cpus
    requested = _requested(threads)
    n = requested or _default(available_cpus())
    torch_threads = (requested or _default(available_cpus() // 2)) if training else 1
    _coding_threads = torch_threads if training else n
    os.environ["OMP_NUM_THREADS"] = str(torch_threads)
    os.environ["MKL_NUM_THREADS"] = str(torch_threads)
    if "torch" in sys.modules:  # too late for the environment: tell torch directly
        sys.modules["torch"].set_num_threads(torch_threads)
    return torch_threads if training else n


def coding_threads() -> int:
    """Threads the exact networks split a large product over: :func:`configure`'s count, and 1
    where torch runs several threads itself (the API without :func:`configure`, or a caller's
    ``torch.set_num_threads``), whose own pool then parallelises each product; 1 in a thread of
    :func:`run_chunks` while another chunk thread is still at work."""
    torch = sys.modules.get("torch")
    if _coding_threads is None or (torch is not None and torch.get_num_threads() > 1):
        return 1
    group = getattr(_local, "chunks", None)
    if group is not None and group.active > 1:
        return 1
    return _coding_threads


def spare_cpu() -> bool:
    """Whether this process's CPUs (its affinity, or its share among workers: :func:`configure`'s
    ``cpus``) outnumber the threads computing the networks (:func:`configure`'s count, or torch's
    own threads where more): only then does a worker thread beside them
    (:mod:`bbcodec.image_codecs.ahead`) gain time rather than take it."""
    torch = sys.modules.get("torch")
    busy = max(_coding_threads or 1, torch.get_num_threads() if torch is not None else 1)
    return (_cpu_share or available_cpus()) > busy


class _ChunkGroup:
    """The threads of one :func:`run_chunks`: how many are still at work."""

    def __init__(self, threads: int):
        self.active, self.lock = threads, threading.Lock()


def run_chunks(count: int, work) -> list:
    """``[work(0), ..., work(count - 1)]`` for independent chunks. With several coding threads
    and several chunks, the chunks run concurrently, one per thread (the caller's among them),
    each thread computing its own chunk's networks: a chunk's serial parts (the entropy coder,
    the steps between network calls) no longer leave the other cores idle. The chunks are claimed
    one at a time, as a split's blocks are (:class:`_Call`), and the last chunk still at work gets
    the whole pool back. The results are the same whatever the threads; the first exception is
    raised once every chunk under way has stopped."""
    n = min(coding_threads(), count)
    if n < 2 or getattr(_local, "in_pool", False) or getattr(_local, "chunks", None) is not None:
        return [work(k) for k in range(count)]
    import torch

    group, results = _ChunkGroup(n), [None] * count
    modes = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())

    def store(k):
        results[k] = work(k)

    call = _Call([(k,) for k in range(count)], store)

    def serve():
        _local.chunks = group
        try:
            with torch.inference_mode(modes[0]), torch.set_grad_enabled(modes[1]):
                call.claim_and_run()
        finally:
            _local.chunks = None
            with group.lock:
                group.active -= 1

    helpers = [threading.Thread(target=serve, name=f"bbcodec-chunk-{k + 1}", daemon=True) for k in range(n - 1)]
    for thread in helpers:
        thread.start()
    serve()
    call.wait()
    for thread in helpers:
        thread.join()
    if call.errors:
        raise call.errors[0]
    return results


class _SplitPool:
    """``size`` daemon threads, each serving its own queue; they sleep in the queue while idle.
    Leaner than ``concurrent.futures`` here: a split costs about one thread wake-up (a 45-70 us
    round trip on the 2-core machine, against 130 us through a ``ThreadPoolExecutor``; two locks or
    semaphores instead of the queue cost the same, and spinning while holding the GIL 158 us)."""

    def __init__(self, size: int):
        import queue

        self.size, self.pid = size, os.getpid()
        self.inboxes = [queue.SimpleQueue() for _ in range(size)]
        for k, inbox in enumerate(self.inboxes):
            threading.Thread(target=self._serve, args=(inbox,), name=f"bbcodec-split-{k}", daemon=True).start()

    @staticmethod
    def _serve(inbox) -> None:
        import torch

        _local.in_pool = True
        modes, guard = None, None
        while True:
            call, wanted = inbox.get()
            if wanted != modes:  # autograd's modes are per thread: take the caller's, and keep them
                if guard is not None:
                    guard.__exit__(None, None, None)
                guard = torch.inference_mode(wanted[0])
                guard.__enter__()
                torch.set_grad_enabled(wanted[1])
                modes = wanted
            call.claim_and_run()

    def run(self, blocks, work) -> None:
        import torch

        call = _Call(blocks, work)
        wanted = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
        for inbox in self.inboxes[: len(blocks) - 1]:
            inbox.put((call, wanted))
        _local.in_pool = True  # the caller's blocks split no further: the pool is busy with the others
        try:
            call.claim_and_run()
        finally:
            _local.in_pool = False
            call.wait()  # none may outlive the call: they write into the caller's tensors
        if call.errors:
            raise call.errors[0]


class _Call:
    """One :meth:`_SplitPool.run`: its blocks are claimed one at a time, by the caller and by the
    pool's threads as they wake, so a thread that the OS has not scheduled yet (another busy
    process) holds up nothing: the caller computes the blocks nobody has claimed, and waits only
    for blocks already under way elsewhere."""

    def __init__(self, blocks, work):
        import itertools

        self.blocks, self.work, self.errors = blocks, work, []
        self._next = itertools.count()  # next() on it is atomic under the GIL
        self._finished = [threading.Lock() for _ in blocks]
        for lock in self._finished:
            lock.acquire()

    def claim_and_run(self) -> None:
        while (k := next(self._next)) < len(self.blocks):
            try:
                if not self.errors:
                    self.work(*self.blocks[k])
            except BaseException as exc:  # handed to the caller
                self.errors.append(exc)
            finally:
                self._finished[k].release()

    def wait(self) -> None:
        for lock in self._finished:
            lock.acquire()


_local = threading.local()


def split_pool() -> _SplitPool | None:
    """The shared pool of ``coding_threads() - 1`` sleeping threads (the caller claims blocks
    too), or ``None`` for one thread and inside the pool's own threads."""
    global _pool
    n = coding_threads() - 1
    if n < 1 or getattr(_local, "in_pool", False):
        return None
    with _pool_lock:
        if _pool is None or _pool.size != n or _pool.pid != os.getpid():  # a forked child has no threads
            _pool = _SplitPool(n)
        return _pool


def even_blocks(length: int, parts: int) -> list[tuple[int, int]]:
    """``range(length)`` cut into ``parts`` ``[lo, hi)`` blocks whose sizes differ by at most one."""
    edges = [length * k // parts for k in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def blocks_for(length: int, work: int, unit: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` blocks of ``range(length)`` for a task of ``work`` (in any measure): one per
    coding thread where each gets at least ``unit`` of it (what pays for a wake-up), else a
    single block."""
    parts = min(coding_threads(), work // unit, length) if work >= 2 * unit else 1
    return even_blocks(length, max(parts, 1))


def run_blocks(blocks, work) -> None:
    """Call ``work(*block)`` for every block, spread over :func:`split_pool` (the calling thread
    and the pool's claim the blocks one at a time), and return once all are done; the first
    exception is raised."""
    pool = split_pool() if len(blocks) > 1 else None
    if pool is None:
        for block in blocks:
            work(*block)
        return
    pool.run(blocks, work)
