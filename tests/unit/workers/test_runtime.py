"""PipelineRuntime without TensorFlow: runs, prefetch/pull, the stop event, failures, splitting.

The backend here is a real :class:`~queuepipe.workers.worker.ThreadBackend` over a real
generator source (no fakes of queuepipe's own classes), or a small scripted backend
where a test needs a worker that waits.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from queuepipe.errors import EndOfStream
from queuepipe.sources.generator import GeneratorSource
from queuepipe.spec import Spec
from queuepipe.workers.buffers import Block
from queuepipe.workers.runtime import PipelineRuntime
from queuepipe.workers.worker import ThreadBackend, WorkerPlan

SPEC = Spec.build(np.int64, ())


def _runtime(n_rows: int, workers: int = 1, batch_size: int = 4, per_block: int = 2,
             allow_smaller: bool = True, fail_at=None) -> PipelineRuntime:
    def gen():
        for i in range(n_rows):
            if fail_at is not None and i == fail_at:
                raise ValueError(f"bad row {i}")
            yield i
    source = GeneratorSource(gen, SPEC, chunk_rows=batch_size)
    plan = WorkerPlan(source=source, spec=SPEC, count=workers, batch_size=batch_size,
                      batches_per_block=per_block, shuffle_rows=0, seed=0)
    return PipelineRuntime(SPEC, workers, batch_size, allow_smaller,
                           lambda i, stop, resume=None: ThreadBackend(plan, i, stop, resume), "thread", batches_per_block=per_block)


def _drain(rt: PipelineRuntime, index: int = 0):
    rows = []
    while True:
        try:
            block = rt.pull(index)
        except StopIteration:
            return rows
        assert block.error is None, block.error
        rows.extend(block.columns[0].tolist())


def test_a_run_delivers_every_row_once_and_then_stop_iteration():
    rt = _runtime(10)
    rt.start_run()
    assert _drain(rt) == list(range(10))
    rt.end_run()
    assert not rt.active


def test_blocks_handed_to_tf_are_whole_blocks_or_single_batches():
    rt = _runtime(23, batch_size=4, per_block=2, allow_smaller=True)
    rt.start_run()
    shapes = []
    while True:
        try:
            b = rt.pull(0)
        except StopIteration:
            break
        shapes.append((b.n_rows, b.n_batches))
    rt.end_run()
    assert all(s in ((8, 2), (4, 1)) or s == (3, 1) for s in shapes), shapes
    assert sum(r for r, _ in shapes) == 23 and shapes[-1] == (3, 1)


def test_the_final_short_batch_is_dropped_without_allow_smaller():
    rt = _runtime(10, batch_size=4, allow_smaller=False)
    rt.start_run()
    assert _drain(rt) == list(range(8))
    rt.end_run()


def test_prefetch_makes_the_next_pull_answer_from_pending():
    rt = _runtime(16)
    run = rt.start_run()
    rt.prefetch(0)
    assert isinstance(run.answers[0], Block), "prefetch set no block aside for the next pull"
    first = rt.pull(0)
    assert first.columns[0][0] == 0
    rt.end_run()


def test_the_first_pull_without_a_run_starts_one_but_a_later_one_does_not():
    rt = _runtime(8)
    assert rt.pull(0).columns[0][0] == 0  # an enqueue op run by hand: ensure_started
    rt.end_run()
    with pytest.raises(StopIteration):
        rt.pull(0)


def test_a_failure_becomes_a_poison_block_and_then_only_the_failure_is_delivered():
    rt = _runtime(100, fail_at=5)
    rt.start_run()
    blocks = [rt.pull(0) for _ in range(6)]
    first_poison = next(i for i, b in enumerate(blocks) if b.error)
    assert first_poison <= 1  # rows 0..3 go out first only if the batcher's time budget ran out
    assert all(b.error and "ValueError: bad row 5" in b.error for b in blocks[first_poison:]), \
        "after the failure a pull answered with something else"
    poison = blocks[first_poison:]
    assert isinstance(rt.failure.exception, ValueError)
    assert poison[0].n_batches == 1 and len(poison[0].columns[0]) == 4
    rt.request_stop()
    with pytest.raises(StopIteration):
        rt.pull(0)
    rt.end_run()


class _WaitingBackend:
    """A worker that never produces: its wait ends only when the run's stop event is set."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.closed = False

    def next_block(self) -> Block:
        while not self.stop.wait(0.01):
            pass
        raise EndOfStream()

    def close(self) -> None:
        self.closed = True


def test_request_stop_wakes_a_waiting_prefetch_and_every_later_pull_ends():
    backends = []

    def make(i, stop, resume=None):
        backends.append(_WaitingBackend(stop))
        return backends[-1]

    rt = PipelineRuntime(SPEC, 1, 4, True, make, "process")
    run = rt.start_run()
    waiter = threading.Thread(target=rt.prefetch, args=(0,), name="test-prefetch")
    waiter.start()
    time.sleep(0.05)
    assert waiter.is_alive()
    rt.request_stop()
    waiter.join(2)
    assert not waiter.is_alive(), "prefetch kept waiting after request_stop"
    assert run.stop.is_set()
    with pytest.raises(StopIteration):
        rt.pull(0)
    rt.end_run()
    assert backends[0].closed


def test_end_run_of_an_old_run_leaves_a_newer_run_alone():
    rt = _runtime(8)
    old = rt.start_run()
    new = rt.start_run()
    assert old.stop.is_set() and not new.stop.is_set()
    rt.end_run(old)
    assert rt.active
    rt.end_run(new)
    assert not rt.active


def test_tails_of_all_workers_are_merged_so_only_the_last_batch_is_short():
    # worker_info() is not set outside a worker loop, so each worker's generator yields all rows:
    # two workers x 10 rows = 20 rows, batches of 4: five full batches, no short one
    rt = _runtime(10, workers=2, batch_size=4, allow_smaller=True)
    rt.start_run()
    rows = []
    for i in range(2):
        rows += _drain(rt, i)
    rt.end_run()
    assert sorted(rows) == sorted(list(range(10)) * 2)
