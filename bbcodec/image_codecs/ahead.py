"""The encoder's posteriors computed ahead: ``q(z|x)`` does not depend on the message, so while a
batch is coded, a worker thread computes the parameters of the batches after it (torch releases
the GIL in its operations). Only where a CPU is spare (:func:`bbcodec.threads.spare_cpu`): where
the networks' threads already use every CPU, the worker only contends with them. Measured on the
2-core machine, 1,000 CIFAR test images encoded (median of 4 alternating pairs): with the
default 2 threads 8.65 s with the worker against 7.69 s without; with ``--threads 1``, 9.38 s
with it against 10.18 s without."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import torch

from .. import threads

AHEAD = 4  # runs of the encoder's posteriors computed ahead of the batch being coded


class RowsAhead:
    """``fn`` of ``units`` in runs of ``step`` rows, computed in order by ``pool``, at most
    :data:`AHEAD` runs beyond the last one asked for (memory stays bounded, and runs already used
    are let go); :meth:`rows` of a tensor that is a run of rows of ``units`` (a view of it), or None
    for any other tensor or for rows let go. ``fn`` maps ``(n, ...)`` to a nest of tuples of
    tensors with ``n`` rows."""

    def __init__(self, units, step, pool, fn):
        def run(part):
            with torch.inference_mode():
                return fn(part)

        self.units, self.step, self.pool, self.run = units, step, pool, run
        self.futures, self.submitted, self.count = {}, 0, -(-len(units) // step)
        self._submit_until(AHEAD)

    def _submit_until(self, end):
        while self.submitted < min(end, self.count):
            a = self.submitted * self.step
            self.futures[self.submitted] = self.pool.submit(self.run, self.units[a: a + self.step])
            self.submitted += 1

    def rows(self, x):
        u = self.units
        row_bytes = u.stride(0) * u.element_size()
        offset = x.data_ptr() - u.data_ptr()
        if (x.dtype != u.dtype or x.shape[1:] != u.shape[1:] or x.stride() != u.stride() or len(x) == 0
                or x.untyped_storage().data_ptr() != u.untyped_storage().data_ptr() or offset % row_bytes):
            return None
        first = offset // row_bytes
        end = first + len(x)
        if first < 0 or end > len(u):
            return None
        lo, hi = first // self.step, (end - 1) // self.step + 1
        self._submit_until(hi + AHEAD)
        if any(i not in self.futures for i in range(lo, hi)):
            return None
        parts = [self.futures[i].result() for i in range(lo, hi)]
        for i in [i for i in self.futures if i < lo]:  # batches come in order: these are used
            del self.futures[i]
        return _cat_rows(parts, first - lo * self.step, len(x))

    def cancel(self):
        for f in self.futures.values():
            f.cancel()


def _cat_rows(parts, skip, n):
    """Rows ``skip .. skip + n`` of the row-wise concatenation of ``parts`` (equal nests of tuples)."""
    if isinstance(parts[0], tuple):
        return tuple(_cat_rows([p[i] for p in parts], skip, n) for i in range(len(parts[0])))
    whole = parts[0] if len(parts) == 1 else torch.cat(parts)
    return whole[skip: skip + n]


@contextlib.contextmanager
def rows_ahead(units: torch.Tensor, batch: int, fn):
    """A :class:`RowsAhead` of ``fn`` over ``units`` in runs of ``batch`` rows, computed by a
    worker thread while in the context; what is left is cancelled on leaving. None (nothing
    computed ahead) where no CPU is spare for the worker."""
    if not threads.spare_cpu():
        yield None
        return
    with ThreadPoolExecutor(1) as pool:
        ahead = RowsAhead(units, max(1, batch), pool, fn)
        try:
            yield ahead
        finally:
            ahead.cancel()
