"""The running state of one pipeline: its workers, the end-of-data merge, and failures.

The TF layer calls :meth:`PipelineRuntime.prefetch` from the queue runner's thread and
:meth:`PipelineRuntime.pull` from one enqueue op per worker.  A *run* starts when the
queue runners start for a session and ends when they have all stopped; each run calls
the user's generators afresh and has one stop event.  This module knows nothing about
TensorFlow or about how a worker is hosted (thread or child process): a backend
factory provides objects with ``next_block()`` and ``close()``.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional, Protocol

import numpy as np

from .buffers import Block
from .batching import assemble
from ..errors import EndOfStream, FailureSignal, WorkerFailure
from ..spec import Spec

log = logging.getLogger("queuepipe")


class WorkerBackend(Protocol):
    """Where one worker runs: in the calling thread, or in a child process.  Built by the
    runtime's backend factory with the run's stop event, which a backend that waits
    (a process backend polling its child) must check while waiting."""

    def next_block(self) -> Block: ...          # raises EndOfStream / FailureSignal
    def close(self) -> None: ...                # end the worker now; safe to call twice


class TailMerger:
    """Collects every worker's leftover rows; the last worker to finish delivers them.

    So only the very last batch of a run can be smaller than ``batch_size`` (and only
    with ``allow_smaller_final_batch``); no sample is lost to per-worker remainders.
    """

    def __init__(self, spec: Spec, workers: int, batch_size: int, allow_smaller: bool):
        self.spec = spec
        self.remaining = workers
        self.batch_size = batch_size
        self.allow_smaller = allow_smaller
        self.tails: List[List[np.ndarray]] = []
        self.dropped_rows = 0
        self._lock = threading.Lock()

    def add(self, tail: Block) -> List[Block]:
        with self._lock:
            if tail.n_rows:
                self.tails.append(tail.columns)
            self.remaining -= 1
            if self.remaining > 0 or not self.tails:
                return []
            columns = [np.concatenate(parts) for parts in zip(*self.tails)]
            self.tails = []
        blocks = assemble(self.spec, columns, self.batch_size)
        if blocks and blocks[-1].n_rows < self.batch_size and not self.allow_smaller:
            self.dropped_rows = blocks.pop().n_rows
            log.info("queuepipe: %d final rows dropped (fewer than batch_size=%d; "
                     "pass allow_smaller_final_batch=True to get them)", self.dropped_rows, self.batch_size)
        return blocks


class Run:
    """One run of a pipeline's workers: fresh backends, their pending blocks, the tail merger,
    and ``stop`` -- the run's one stop primitive (see DESIGN.md, "Shutdown").

    Setting ``stop`` makes every pull of the run answer end of data and wakes every wait
    on a worker (process backends poll it); the queue runner's watcher sets it when the
    coordinator stops, the session closes or ``running()`` exits."""

    def __init__(self, backends: List[WorkerBackend], merger: TailMerger, stop: threading.Event):
        self.backends = backends
        self.pending: List[List[Block]] = [[] for _ in backends]
        self.merger = merger
        self.finished = [False] * len(backends)  # worker i's stream has ended (data, failure)
        self.stop = stop


BackendFactory = Callable[[int, threading.Event], WorkerBackend]


class PipelineRuntime:
    """Everything the enqueue ops of one pipeline share: the current run and its first failure."""

    def __init__(self, spec: Spec, workers: int, batch_size: int, allow_smaller: bool,
                 make_backend: BackendFactory, mode: str, batches_per_block: int = 1):
        self.spec = spec
        self.batches_per_block = batches_per_block
        self.workers = workers
        self.batch_size = batch_size
        self.allow_smaller = allow_smaller
        self.mode = mode
        self._make_backend = make_backend
        self._lock = threading.Lock()
        self._run: Optional[Run] = None
        self._worker_locks = [threading.Lock() for _ in range(workers)]
        self.failure: Optional[WorkerFailure] = None
        self.runs_started = 0

    # -- lifecycle -------------------------------------------------------------------
    def start_run(self) -> Run:
        """Begin a new run (new generator instances / child processes), ending the previous one."""
        self.end_run()
        with self._lock:
            self.failure = None
            stop = threading.Event()
            backends = []
            try:
                for i in range(self.workers):
                    backends.append(self._make_backend(i, stop))
            except BaseException:
                for b in backends:
                    b.close()
                raise
            self._run = Run(backends, TailMerger(self.spec, self.workers, self.batch_size,
                                                 self.allow_smaller), stop)
            self.runs_started += 1
            return self._run

    def ensure_started(self) -> Optional[Run]:
        """The current run; the first run starts here when an enqueue op is run by hand,
        without a queue runner (a later run only ever starts from a queue runner)."""
        run = self._run
        if run is None and self.runs_started == 0:
            run = self.start_run()
        return run

    def request_stop(self) -> None:
        """Set the current run's stop event: every pull returns promptly (end of data)."""
        run = self._run
        if run is not None:
            run.stop.set()

    def end_run(self, run: Optional[Run] = None) -> None:
        """Stop and release the current run's workers (closes generators, ends children).

        With ``run``, only if that run is still the current one (a watcher ending its own run
        never ends a newer run started for another session)."""
        with self._lock:
            if self._run is None or (run is not None and self._run is not run):
                return
            run, self._run = self._run, None
        run.stop.set()
        for i, b in enumerate(run.backends):
            with self._worker_locks[i]:  # never close a generator another thread is stepping
                b.close()

    @property
    def active(self) -> bool:
        return self._run is not None

    # -- data --------------------------------------------------------------------------
    def pull(self, index: int) -> Block:
        """Next block for worker ``index``'s enqueue op.

        Raises StopIteration (TF: OutOfRangeError, this enqueue op is done) at the end
        of the worker's data or when stopping; returns a poison block carrying the
        error when the worker fails.
        """
        with self._worker_locks[index]:
            run = self.ensure_started()
            if run is None:
                raise StopIteration
            if run.pending[index]:
                return run.pending[index].pop(0)
            if run.stop.is_set() or run.finished[index] or self.failure is not None:
                raise StopIteration
            return self._fetch(run, index)

    def prefetch(self, index: int) -> None:
        """Wait, in the calling thread, until worker ``index``'s next :meth:`pull` can answer at once.

        The queue runner calls this before each enqueue, so the waiting (and, for thread
        workers, the user's generator) runs in its own Python thread: inside the enqueue
        op it would hold one of TF's few inter-op threads, which the training step needs.
        """
        with self._worker_locks[index]:
            run = self._run
            if (run is None or run.pending[index] or run.stop.is_set() or run.finished[index]
                    or self.failure is not None):
                return
            try:
                run.pending[index].insert(0, self._fetch(run, index))
            except StopIteration:
                pass

    def _fetch(self, run: Run, index: int) -> Block:
        """The next block from worker ``index``'s backend (rest of it queued in ``pending``)."""
        while True:
            try:
                block = run.backends[index].next_block()
            except EndOfStream:
                run.finished[index] = True
                raise StopIteration from None
            except FailureSignal as failed:
                run.finished[index] = True
                with self._lock:
                    if self.failure is None:
                        self.failure = failed.failure
                log.error("queuepipe: %s\n%s", failed.failure.summary(), failed.failure.traceback_text)
                return self.poison(failed.failure)
            if not block.tail:
                pieces = self._split(block)
            else:
                pieces = [p for b in run.merger.add(block) for p in self._split(b)]
            if pieces:
                run.pending[index].extend(pieces[1:])
                return pieces[0]

    def _split(self, block: Block) -> List[Block]:
        """Blocks of exactly ``batches_per_block`` batches or of one batch -- the two shapes the
        enqueue op takes without copying (views of the same aligned buffers)."""
        per_block, B = self.batches_per_block, self.batch_size
        if block.n_batches in (1, per_block):
            return [block]
        pieces, start = [], 0
        while start < block.n_rows:
            step = per_block * B if block.n_rows - start >= per_block * B else B
            cols = [c[start:start + step] for c in block.columns]
            rows = len(cols[0])
            pieces.append(Block(cols, rows, rows // B if rows >= B else 1))
            start += step
        return pieces

    def poison(self, failure: WorkerFailure) -> Block:
        """A one-batch block whose error field makes the graph raise ``failure``."""
        columns = []
        for f in self.spec.fields:
            shape = (self.batch_size,) + tuple(0 if d is None else d for d in (f.shape or ()))
            columns.append(np.full(shape, b"", dtype=object) if f.is_string else np.zeros(shape, f.dtype))
        return Block(columns, self.batch_size, 1, error=failure.summary())
