"""The running state of one pipeline: its workers, its runs, failures and stalls.

The TF layer calls :meth:`PipelineRuntime.prefetch` from the queue runner's thread (it
produces the worker's next block and sets aside what the next pull answers) and
:meth:`PipelineRuntime.pull` from one enqueue op per worker (it only hands that over).
Which block may go to the queue when -- epochs in order, leftovers merged, the failure
last -- is :class:`~.delivery.Delivery`'s job.  A *run* starts when the
queue runners start for a session and ends when they have all stopped; each run calls
the user's generators afresh and has one stop event.  This module knows nothing about
TensorFlow or about how a worker is hosted (thread or child process): a backend
factory provides objects with ``next_block()`` and ``close()``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List, Optional, Protocol

import numpy as np

from .buffers import Block
from .delivery import Delivery
from .resume import ResumePoint
from ..errors import EndOfStream, FailureSignal, WorkerFailure, WorkerStalledError, worker_label
from ..spec import Spec

log = logging.getLogger("queuepipe")


class WorkerBackend(Protocol):
    """Where one worker runs: in the calling thread, or in a child process.  Built by the
    runtime's backend factory with the run's stop event, which a backend that waits
    (a process backend polling its child) must check while waiting."""

    def next_block(self) -> Block: ...          # raises EndOfStream / FailureSignal
    def close(self) -> None: ...                # end the worker now; safe to call twice


_UNANSWERED = object()  # no answer set aside for a worker's next pull


class Run:
    """One run of a pipeline's workers: fresh backends, the order their blocks go out in
    (:class:`~.delivery.Delivery`), and ``stop`` -- the run's one stop primitive (see
    DESIGN.md, "Shutdown").

    Setting ``stop`` makes every pull of the run answer end of data and wakes every wait
    on a worker (process backends poll it); the queue runner's watcher sets it when the
    coordinator stops, the session closes or ``running()`` exits."""

    def __init__(self, backends: List[WorkerBackend], delivery: Delivery, stop: threading.Event):
        self.backends = backends
        self.delivery = delivery
        self.stop = stop
        # per worker: what its next pull answers, set aside by prefetch (a block, or None: the end)
        self.answers: List[object] = [_UNANSWERED] * len(backends)


# (worker index, the run's stop event, where a resumable pipeline's run starts or None) -> backend
BackendFactory = Callable[[int, threading.Event, Optional[ResumePoint]], WorkerBackend]

WAIT_SLICE = 0.05  # how long a wait for another worker sleeps before it looks at the stop event again


class PipelineRuntime:
    """Everything the enqueue ops of one pipeline share: the current run and its first failure."""

    def __init__(self, spec: Spec, workers: int, batch_size: int, allow_smaller: bool,
                 make_backend: BackendFactory, mode: str, batches_per_block: int = 1,
                 stall_timeout: Optional[float] = None, merged_last: bool = False):
        """``merged_last``: merged leftovers of an epoch go only after every other block of that
        epoch (see :class:`~.delivery.Delivery`; a generator pipeline's resume ledger needs it)."""
        self.spec = spec
        self.merged_last = merged_last
        self.batches_per_block = batches_per_block
        self.workers = workers
        self.batch_size = batch_size
        self.allow_smaller = allow_smaller
        self.mode = mode
        self.stall_timeout = stall_timeout
        self._make_backend = make_backend
        self._lock = threading.Lock()
        self._cond = threading.Condition()  # guards every run's Delivery; notified when it changes
        self._run: Optional[Run] = None
        self._worker_locks = [threading.Lock() for _ in range(workers)]
        self.failure: Optional[WorkerFailure] = None
        self._poison: Optional[Block] = None
        self.runs_started = 0

    # -- lifecycle -------------------------------------------------------------------
    def start_run(self, resume: Optional[ResumePoint] = None) -> Run:
        """Begin a new run (new generator instances / child processes), ending the previous one;
        ``resume``: where it starts (a resumable pipeline restored from a checkpoint)."""
        self.end_run()
        with self._lock:
            self.failure, self._poison = None, None
            stop = threading.Event()
            backends = []
            try:
                for i in range(self.workers):
                    backends.append(self._make_backend(i, stop, resume))
            except BaseException:
                for b in backends:
                    b.close()
                raise
            delivery = Delivery(self.spec, self.workers, self.batch_size, self.allow_smaller, self._split,
                                merged_last=self.merged_last)
            self._run = Run(backends, delivery, stop)
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
            with self._cond:
                self._cond.notify_all()

    def end_run(self, run: Optional[Run] = None) -> None:
        """Stop and release the current run's workers (closes generators, ends children).

        With ``run``, only if that run is still the current one (a watcher ending its own run
        never ends a newer run started for another session)."""
        with self._lock:
            if self._run is None or (run is not None and self._run is not run):
                return
            run, self._run = self._run, None
        run.stop.set()
        with self._cond:
            self._cond.notify_all()
        for i, b in enumerate(run.backends):
            with self._worker_locks[i]:  # never close a generator another thread is stepping
                b.close()

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def dropped_rows(self) -> int:
        """Rows of the current run's short final batch dropped (no ``allow_smaller_final_batch``)."""
        run = self._run
        return run.delivery.dropped_rows if run is not None else 0

    # -- data --------------------------------------------------------------------------
    def pull(self, index: int) -> Block:
        """Next block for worker ``index``'s enqueue op: the answer :meth:`prefetch` prepared,
        so it returns at once -- it never waits for another worker inside the op, where it
        would hold one of TF's few inter-op threads (the dequeue and the other workers'
        enqueues need them).  Run by hand, without a prefetch, it waits itself.

        Raises StopIteration (TF: OutOfRangeError, this enqueue op is done) at the end
        of the worker's data or when stopping.  Once a worker has failed, every pull of
        the run answers with a poison block carrying the error -- never data again.
        """
        with self._worker_locks[index]:
            run = self.ensure_started()
            if run is None:
                raise StopIteration
            answer, run.answers[index] = run.answers[index], _UNANSWERED
            if answer is _UNANSWERED:
                answer = self._next(run, index)
            if answer is None or run.stop.is_set():
                raise StopIteration
            return answer

    def prefetch(self, index: int) -> None:
        """Wait, in the calling thread, until worker ``index``'s next :meth:`pull` can answer at
        once, and set that answer aside for it.

        The queue runner calls this before each enqueue, so the waiting (and, for thread
        workers, the user's generator) runs in its own Python thread: inside the enqueue
        op it would hold one of TF's few inter-op threads, which the training step needs.
        """
        with self._worker_locks[index]:
            run = self._run
            if run is not None and run.answers[index] is _UNANSWERED:
                run.answers[index] = self._next(run, index)

    def _next(self, run: Run, index: int) -> Optional[Block]:
        """Confirm worker ``index``'s previous block (its enqueue returned: the thread is back),
        then produce and wait until it can be answered: a block that may go now (taken:
        :meth:`Delivery.take`), the failure (once no other worker's data is still on its
        way), or None -- the end (stop, or its stream ended with nothing left for it)."""
        delivery = run.delivery
        with self._cond:
            delivery.confirm(index)
            self._cond.notify_all()
        while True:
            with self._cond:
                if run.stop.is_set():
                    return None
                if self.failure is not None:
                    if not delivery.data_in_flight(but=index):
                        delivery.in_flight[index] = self._poison
                        return self._poison
                else:
                    block = delivery.take(index)
                    if block is not None:
                        return block
                    if delivery.ended[index] and not delivery.pending[index]:
                        return None
                if delivery.pending[index] or delivery.ended[index] or self.failure is not None:
                    self._cond.wait(WAIT_SLICE)  # another worker's blocks go first
                    continue
            self._produce(run, index)

    def _produce(self, run: Run, index: int) -> None:
        """Worker ``index``'s next block from its backend (outside the lock: it may take long)."""
        try:
            block = run.backends[index].next_block()
        except EndOfStream:
            with self._cond:
                run.delivery.end(index)
                self._cond.notify_all()
            return
        except FailureSignal as failed:
            with self._cond:
                self._record_failure(failed.failure)
                run.delivery.end(index)
                self._cond.notify_all()
            log.error("queuepipe: %s\n%s", failed.failure.summary(), failed.failure.traceback_text)
            return
        pieces = [block] if block.tail else self._split(block)
        with self._cond:
            for piece in pieces:
                run.delivery.received(index, piece)
            self._cond.notify_all()

    def check_stalls(self) -> bool:
        """For the watcher, with ``stall_timeout`` set: a thread worker busy on one block for
        longer is recorded as the run's failure (:class:`~queuepipe.errors.WorkerStalledError`
        naming what it was doing).  True when this call recorded it: the caller then puts the
        failure in the queue (:meth:`failure_block`), as the stalled worker cannot.  (A
        process worker's parent end watches its own child, and kills it.)"""
        run, timeout = self._run, self.stall_timeout
        if run is None or timeout is None or self.failure is not None:
            return False
        now = time.monotonic()
        for index, backend in enumerate(run.backends):
            progress = getattr(backend, "progress", None)
            since = progress.busy_since if progress is not None else None
            if since is None or now - since <= timeout:
                continue
            error = WorkerStalledError(
                f"{worker_label(index, self.workers)} (thread) made no progress for {now - since:.1f} s "
                f"(stall_timeout={timeout:g}): {progress.activity}. A thread cannot be interrupted: "
                f"it is left to finish on its own; mode='process' workers are killed instead")
            with self._cond:
                if not self._record_failure(WorkerFailure(error, index, self.workers, self.mode,
                                                          traceback_text=str(error))):
                    return False
                self._cond.notify_all()
            log.error("queuepipe: %s", self.failure.summary())
            return True
        return False

    def _record_failure(self, failure: WorkerFailure) -> bool:
        """Keep ``failure`` as the run's failure, with its poison block, unless one is kept
        already (the first wins); True if it was kept.  Called with the lock held."""
        if self.failure is not None:
            return False
        self.failure, self._poison = failure, self.poison(failure)
        return True

    def failure_block(self) -> Block:
        """The run's poison block (for the watcher's own enqueue of a stall); StopIteration if
        there is no failure (the run ended meanwhile)."""
        poison = self._poison
        if poison is None:
            raise StopIteration
        return poison

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
            pieces.append(Block(cols, rows, rows // B if rows >= B else 1, epoch=block.epoch))
            start += step
        return pieces

    def poison(self, failure: WorkerFailure) -> Block:
        """A one-batch block whose error field makes the graph raise ``failure``."""
        columns = []
        for f in self.spec.fields:
            shape = (self.batch_size,) + tuple(0 if d is None else d for d in (f.shape or ()))
            columns.append(np.full(shape, b"", dtype=object) if f.is_string else np.zeros(shape, f.dtype))
        return Block(columns, self.batch_size, 1, error=failure.summary())
