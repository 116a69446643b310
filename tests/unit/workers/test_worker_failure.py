"""queuepipe.workers.worker.WorkerLoop when its source raises: the whole batches of the rows the
source handed over before the exception come out first (the block being filled, the shuffle
buffer), then the failure -- the original exception, with its traceback; the rows of a
partial batch are dropped; the source is closed.  DESIGN.md, Guarantees 3."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest

from queuepipe.errors import FailureSignal
from queuepipe.spec import Spec
from queuepipe.workers import info as wi
from queuepipe.workers.batching import Batcher
from queuepipe.workers.worker import WorkerLoop

B = 32          # batch size
PER_BLOCK = 4   # batches per block


class Broken(Exception):
    """The source's own error."""


class FailingSource:
    """Yields ``rows`` ids in chunks of ``chunk`` (unaligned: nothing passes through), then raises
    :class:`Broken`; remembers whether it was closed (its ``finally`` ran)."""

    def __init__(self, rows: int, chunk: int):
        self.rows, self.chunk = rows, chunk
        self.spec = Spec.build(np.int64, ())
        self.closed = False

    def chunks(self, where, on_epoch, allocate):
        try:
            for start in range(0, self.rows, self.chunk):
                ids = np.arange(start, min(start + self.chunk, self.rows), dtype=np.int64)
                col = np.empty(len(ids) + 1, np.int64)[1:]
                col[:] = ids
                yield [col]
            raise Broken(f"broken after {self.rows} rows")
        finally:
            self.closed = True


def _loop(source: FailingSource, shuffle_rows: int = 0) -> WorkerLoop:
    batcher = Batcher(source.spec, B, PER_BLOCK, shuffle_rows, rng=np.random.default_rng(3), time_budget=3600.0)
    return WorkerLoop(source, batcher, wi.WorkerInfo(index=0, count=1, seed=0, mode="thread"))


def _until_failure(loop: WorkerLoop):
    """(rows of every block before the failure, block sizes, the FailureSignal)."""
    rows: List[int] = []
    sizes: List[int] = []
    while True:
        try:
            block = loop.next_block()
        except FailureSignal as failed:
            return rows, sizes, failed
        assert not block.tail, "a tail came out after a failure"
        sizes.append(block.n_rows)
        rows.extend(block.columns[0][:block.n_rows].tolist())


@pytest.mark.parametrize("rows, chunk", [(100, 7), (100, 32), (300, 50), (31, 5), (0, 5)])
def test_whole_batches_of_the_rows_before_the_failure_come_first_in_order(rows, chunk):
    source = FailingSource(rows, chunk)
    got, sizes, failed = _until_failure(_loop(source))
    whole = rows // B * B
    assert got == list(range(whole))
    assert all(n % B == 0 and n <= B * PER_BLOCK for n in sizes)
    assert isinstance(failed.failure.exception, Broken)
    assert "broken after" in failed.failure.traceback_text and "in chunks" in failed.failure.traceback_text
    assert source.closed


def test_the_shuffle_buffer_is_drained_into_whole_batches_before_the_failure():
    source = FailingSource(500, 9)
    got, sizes, failed = _until_failure(_loop(source, shuffle_rows=200))
    assert len(got) == 480 and len(set(got)) == 480 and set(got) <= set(range(500))
    assert got != sorted(got), "shuffled"
    assert isinstance(failed.failure.exception, Broken)


def test_after_the_failure_the_loop_has_ended():
    loop = _loop(FailingSource(64, 64))
    _until_failure(loop)
    with pytest.raises(Exception) as again:
        loop.next_block()
    assert type(again.value).__name__ == "EndOfStream"
