"""Chunks coded in worker processes (``jobs``, ``--jobs N``).

A file's chunks are independent messages (:mod:`bbcodec.layout`), each seeded by its index alone
(:func:`bbcodec.segments.chunk_seed`), so they can be coded anywhere in any order: the bytes of
chunk ``i`` do not depend on where it was coded. :class:`ChunkWorkers` codes them in ``jobs``
processes and hands the results back in chunk order, so a file is byte for byte the same whatever
``jobs`` is; the main process keeps what is done once per file (the scale maps the encoder fits,
the tiles of runs of units, the container, the checksum).

* Workers start with the ``spawn`` method (safe with torch's threads, on every platform) and use
  one torch thread each (:func:`bbcodec.threads.configure`, before they import torch); they load
  the model from its file once (by the path it was loaded from, and refuse it if its weights'
  SHA-256 changed since). Models given as Python objects (:mod:`bbcodec.protocol`) cannot travel
  that way: :func:`workers_for` returns None for them, and the caller codes in-process (jobs=1).
* Memory stays bounded: at most ``jobs + 1`` chunks are in flight (sent and not yet collected);
  each worker holds one chunk's images and the model.
* With a single chunk there is nothing to share out: it is coded in-process. A smaller chunk
  size (``chunk``, ``--chunk``) gives more chunks (and changes the file's bytes; ``jobs`` does not).
* A worker's error (a corrupt chunk) is raised in the caller as the same :class:`BBCodecError`;
  a worker that dies (killed, out of memory) is a one-line :class:`BBCodecError` too.
* As with any ``spawn``-based multiprocessing, a *script* that calls the API with ``jobs > 1``
  needs the ``if __name__ == "__main__":`` guard (workers import the main module); the command
  line has it.

Only the standard library is imported at module level: workers import this module before they
set their thread count.
"""

from __future__ import annotations

import os
from collections import deque

from .errors import BBCodecError

START_METHOD = "spawn"
DIED = ("a worker process died (out of memory? try fewer --jobs or a smaller --chunk; a script that passes "
        "jobs > 1 needs `if __name__ == \"__main__\":`)")


def resolve_jobs(jobs) -> int:
    """The worker count ``jobs`` asks for: itself, or every CPU this process may use for 0."""
    from .fileio import UsageError

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise UsageError(f"jobs must be a whole number, 0 (all CPUs) or more, got {jobs!r}")
    if jobs == 0:
        from .threads import available_cpus

        return available_cpus()
    return jobs


def model_ref(loaded):
    """What a worker needs to load ``loaded`` itself: ``(stem path, weights SHA-256)``, or None
    for a model that is not a file (a Python object of the model protocol)."""
    path = getattr(loaded, "path", None)
    if path is None or not loaded.sha256 or loaded.config.get("arch") == "protocol":
        return None
    return (str(os.path.abspath(path)), loaded.sha256)


# ------------------------------------------------------------------------------ in the workers
_MODEL: dict = {}  # (stem, sha256) -> LoadedModel: the last model this worker loaded
_LAYOUT: dict = {}  # (model ref, shape, coding) -> Layout: the last layout


def _init_worker(threads: int, cpus: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    from .allocator import keep_freed_memory
    from .threads import configure

    configure(threads, cpus=cpus)
    keep_freed_memory()


def _layout(ref, shape, coding):
    key = (ref, tuple(shape), repr(sorted(coding.items())))
    layout = _LAYOUT.get(key)
    if layout is None:
        loaded = _MODEL.get(ref)
        if loaded is None:
            from .zoo import load_model

            loaded = load_model(ref[0])
            if loaded.sha256 != ref[1]:
                raise BBCodecError(f"model {ref[0]!r} changed while coding (weights {loaded.sha256[:12]}, "
                                   f"not {ref[1][:12]})")
            _MODEL.clear()
            _MODEL[ref] = loaded
        from .layout import Layout

        layout = Layout(loaded, shape, coding)
        _LAYOUT.clear()
        _LAYOUT[key] = layout
    return layout


def _encode_task(ref, shape, coding, index, part):
    import torch

    data, count, stats = _layout(ref, shape, coding).encode_chunk(index, torch.from_numpy(part))
    return data, count, stats


def _decode_task(ref, shape, coding, index, data, count):
    return _layout(ref, shape, coding).decode_chunk(index, data, count).numpy()


# ------------------------------------------------------------------------------ in the caller
_STARTED: list = []


def workers_started() -> bool:
    """Whether this process ever started worker processes (then it must exit the normal way, which
    waits for them and releases what multiprocessing shares with them)."""
    return bool(_STARTED)


class ChunkWorkers:
    """``jobs`` worker processes coding the chunks of files of one model (``ref``: see
    :func:`model_ref`). Started on first use; :meth:`close` (or ``with``) ends them."""

    def __init__(self, jobs: int, ref):
        self.jobs, self.ref, self._pool = jobs, ref, None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        self.close(abort=exc is not None)

    def _executor(self, tasks: int):
        if self._pool is None:  # no more workers than chunks
            import multiprocessing

            _STARTED.append(True)
            from concurrent.futures import ProcessPoolExecutor

            from .threads import available_cpus

            context = multiprocessing.get_context(START_METHOD)
            workers = min(self.jobs, tasks)
            self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                             initargs=(1, max(1, available_cpus() // workers)))
        return self._pool

    def close(self, abort: bool = False) -> None:
        """End the workers: at once (``abort``: after an error or Ctrl-C), else once idle."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not abort:
            pool.shutdown(wait=True)
            return
        pool.shutdown(wait=False, cancel_futures=True)
        terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
        if terminate is not None:
            terminate()
            return
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                proc.terminate()
            except (OSError, AttributeError):
                pass

    def _ordered(self, fn, tasks, count, units, progress):
        """``fn(*task)`` of every task, in order, with at most ``jobs + 1`` in flight; ``progress(n)``
        with ``units(result)`` as each result is collected."""
        from concurrent.futures.process import BrokenProcessPool

        pool, pending, tasks = self._executor(count), deque(), iter(tasks)
        try:
            while True:
                while len(pending) < self.jobs + 1:
                    task = next(tasks, None)
                    if task is None:
                        break
                    pending.append(pool.submit(fn, *task))
                if not pending:
                    return
                result = pending.popleft().result()
                if progress:
                    progress(units(result))
                yield result
        except BrokenProcessPool:
            self.close(abort=True)
            raise BBCodecError(DIED) from None
        except BaseException:
            for f in pending:
                f.cancel()
            self.close(abort=True)
            raise

    def encode(self, layout, parts, progress=None):
        """``(chunk bytes, units per chunk, stats per chunk)`` of ``layout`` (adapted already) for
        the chunk inputs ``parts`` (:meth:`~bbcodec.layout.Layout.chunk_parts`)."""
        coding = {**layout.params.to_dict(), **layout.options.to_dict()}
        tasks = ((self.ref, layout.shape, coding, index, part.contiguous().numpy())
                 for index, part in enumerate(parts))
        chunks, counts, stats = [], [], []
        for data, count, st in self._ordered(_encode_task, tasks, len(parts), lambda r: r[1], progress):
            chunks.append(data)
            counts.append(count)
            stats.append(st)
        return chunks, counts, stats

    def decode(self, layout, chunks, counts, progress=None):
        """The decoded chunks (:meth:`~bbcodec.layout.Layout.decode_chunk`), in order."""
        import torch

        coding = {**layout.params.to_dict(), **layout.options.to_dict()}
        tasks = ((self.ref, layout.shape, coding, index, data, count)
                 for index, (data, count) in enumerate(zip(chunks, counts)))
        sizes = iter(counts)
        parts = self._ordered(_decode_task, tasks, len(chunks), lambda r: next(sizes), progress)
        return [torch.from_numpy(part) for part in parts]


def workers_for(jobs, loaded) -> ChunkWorkers | None:
    """Workers for ``jobs`` (see :func:`resolve_jobs`) coding with ``loaded``, or None where the
    chunks are coded in-process: ``jobs`` 1, or a model that is not a file."""
    jobs = resolve_jobs(jobs)
    ref = model_ref(loaded)
    if jobs <= 1 or ref is None:
        return None
    return ChunkWorkers(jobs, ref)
