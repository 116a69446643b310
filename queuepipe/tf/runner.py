"""The queue runner of one pipeline: it owns the pipeline's workers for the life of a session.

Being a ``tf.compat.v1.train.QueueRunner`` in the graph's ``QUEUE_RUNNERS`` collection is
what makes ``start_queue_runners``, ``MonitoredTrainingSession``,
``SingularMonitoredSession`` and ``Supervisor`` drive the pipeline with no extra code:
they call :meth:`PipelineQueueRunner.create_threads`.  Only TF's public constructor and
properties are used; the thread bodies and their bookkeeping are queuepipe's own.

Per session start (one *run* of the workers) it creates one enqueue thread per worker
and one watcher thread, and registers the run with :mod:`.interrupt` (Ctrl-C while the
main thread is blocked in ``sess.run``, interpreter exit).  The shutdown order is written
once, in DESIGN.md ("Shutdown").

Stopping logs nothing when nothing failed.  A stop races with its closers and with the
session's own close, so the runner's own ops may fail there (a closed session, a cancelled
run); it expects that and goes on.  Two rules keep those expected failures out of the logs:
its close ops close a queue only if it is open (``close_if_open``: a plain close of a
closed queue fails, ``CANCELLED: ... is already closed``, which TF logs; a close that
cancels pending enqueues does not fail there), and it runs its own ops through callables
(:func:`run_quietly`, as the enqueue ops already are), never through ``sess.run``, which a
session subclass may log: ``tf.test.TestCase``'s sessions log every failed ``run`` as an
ERROR (``test_testcase_logging.py``).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List, Optional

import tensorflow as tf

from ..workers.runtime import PipelineRuntime, Run
from . import interrupt

tf1 = tf.compat.v1
log = logging.getLogger("queuepipe")

THREAD_PREFIX = "queuepipe"
WATCH_SECONDS = 0.05        # how often the watcher looks at the coordinator and the enqueue threads
SESSION_CHECK_EVERY = 5     # ... and every this many looks, whether the session is still open
QUIET_STOP_SECONDS = 2.0    # at a stop, how long the threads may take to end without a cancel
DRAIN_WAIT_MS = 100         # ... and how long one dequeue that makes room may wait


class _RunThreads:
    """The enqueue threads of one run in one session: how many are still enqueueing."""

    def __init__(self, sess, run: Run, count: int):
        self.sess = sess
        self.run = run
        self.alive = count


class PipelineQueueRunner(tf1.train.QueueRunner):
    """QueueRunner for one pipeline: one enqueue op per worker, plus a watcher per run."""

    def __init__(self, runtime: PipelineRuntime, queue, enqueue_ops, name: str, queue_size, failure_op=None,
                 reset_op=None, stats_value=None, close_op=None, drain_op=None,
                 capacity_batches: Optional[int] = None):
        """``queue_size``: the queue's size op.  Cheap, and its run fails once the session is
        closed: the watcher runs it to learn that, through public API only.  ``failure_op``:
        enqueues the run's failure (:meth:`PipelineRuntime.failure_block`); the watcher runs it
        when a stalled thread worker cannot deliver its own failure.  ``reset_op``: run once
        when a run starts, before any batch (zeroes the consumer's statistics); ``stats_value``
        reads them (:mod:`.consumer_stats`; the summaries and ``InputWaitHook`` use it).  ``close_op``:
        closes the queue unless it is closed (default: the queue's plain close).  ``drain_op``
        and ``capacity_batches``: a dequeue that makes room in a full queue at a stop, so
        blocked enqueues end without being cancelled (see :meth:`_stop_quietly`)."""
        super().__init__(
            queue=queue, enqueue_ops=enqueue_ops,
            close_op=close_op if close_op is not None else queue.close(name="close"),
            cancel_op=queue.close(cancel_pending_enqueues=True, name="cancel"),
            # A cancelled enqueue (session closing, stop requested) is an orderly end,
            # not an error to log or to report to the coordinator.
            queue_closed_exception_types=(tf.errors.OutOfRangeError, tf.errors.CancelledError))
        self.runtime = runtime
        self.pipeline_name = name
        self.queue_size = queue_size
        self.failure_op = failure_op
        self.reset_op = reset_op
        self.stats_value = stats_value
        self.drain_op = drain_op
        self.capacity_batches = capacity_batches
        self.staging = None  # a pipeline's Staging, once ``Pipeline.staged()`` made one
        self.position = None  # a resumable pipeline's InputPosition: read when a run starts
        self.reset_at: Optional[float] = None  # time.monotonic() when the current run zeroed its statistics
        self.runs_reset = 0
        self._guard = threading.Lock()
        self._active: Optional[_RunThreads] = None
        self._errors: List[BaseException] = []

    @property
    def exceptions_raised(self) -> List[BaseException]:
        """Exceptions raised by enqueue threads started without a coordinator (as TF's runner)."""
        return list(self._errors)

    def request_stop(self) -> None:
        """Make the current run's pulls answer end of data and wake any wait on a worker."""
        self.runtime.request_stop()

    def create_threads(self, sess, coord=None, daemon=False, start=False) -> List[threading.Thread]:
        """Start a fresh run of the workers and return its threads (none if this session's run
        is still going), as ``QueueRunner.create_threads`` does for its own threads.

        Called from the main thread (as ``start_queue_runners``, ``running()`` and the
        monitored sessions usually are), it also installs the Ctrl-C listener's wakeup fd
        (:func:`.interrupt.install_from_main_thread`), which only the main thread may do."""
        interrupt.install_from_main_thread()
        with self._guard:
            if self._active is not None and self._active.sess is sess and self._active.alive > 0:
                return []  # already running for this session
            resume = self.position.resume_point(sess) if self.position is not None else None
            if self.reset_op is not None:
                sess.run(self.reset_op)
                self.reset_at, self.runs_reset = time.monotonic(), self.runs_reset + 1
            run = self.runtime.start_run(resume)
            threads_of_run = _RunThreads(sess, run, len(self.enqueue_ops))
            self._active = threads_of_run
        prefix = f"{THREAD_PREFIX}-{self.pipeline_name}"
        working = [
            threading.Thread(target=self._enqueue_loop, args=(sess, i, coord, threads_of_run),
                             name=f"{prefix}-enqueue-{i}", daemon=daemon)
            for i in range(len(self.enqueue_ops))]
        if self.staging is not None:
            working.append(threading.Thread(target=self._stage_loop, args=(sess, coord, run),
                                            name=f"{prefix}-stager", daemon=daemon))
        watcher = threading.Thread(target=self._watch, args=(sess, coord, run, working),
                                   name=f"{prefix}-lifecycle", daemon=True)
        threads = working + [watcher]
        if coord is not None:
            for t in threads:
                coord.register_thread(t)
        if start:
            for t in threads:
                t.start()
        return threads

    def cancel(self, sess) -> None:
        """Close the queue (and the staging's tokens and tickets), cancelling pending enqueues:
        a dequeue waiting on an empty queue fails at once, a blocked enqueue ends."""
        run_quietly(sess, self.cancel_op)
        if self.staging is not None:
            run_quietly(sess, self.staging.cancel_op)

    def _enqueue_loop(self, sess, index: int, coord, threads_of_run: _RunThreads) -> None:
        """One worker's thread: wait for its next block here (``prefetch``: in thread mode the
        user's generator runs here), then run the enqueue op; until the enqueue ends orderly
        (``OutOfRangeError``: the worker is done or the run stops; ``CancelledError``: the
        queue was cancelled), the run stops or the coordinator stops.

        The last thread of a run to end orderly closes the queue (the remaining batches are
        delivered, then ``OutOfRangeError``); a stop seen between enqueues is an orderly end
        too, so the queue is closed even when every thread ends before the watcher looks
        (``Pipeline.close()`` under ``start_queue_runners`` left a consumer waiting for good).
        Any other error stops the coordinator with it (or, without one, is recorded and
        raised), as TF's runner does."""
        run = threads_of_run.run
        ended_orderly = False
        try:
            enqueue = inline_callable(sess, self.enqueue_ops[index])
            while not run.stop.is_set() and not (coord is not None and coord.should_stop()):
                self.runtime.prefetch(index)
                try:
                    enqueue()
                except self.queue_closed_exception_types:
                    ended_orderly = True
                    return
            ended_orderly = True
        except Exception as exc:  # noqa: BLE001
            self._report_error(exc, coord)
            if coord is None:
                raise
        finally:
            with self._guard:
                threads_of_run.alive -= 1
                last = threads_of_run.alive == 0
            if last and ended_orderly:
                try:
                    run_quietly(sess, self.close_op)
                except Exception:  # noqa: BLE001 - the session is closing, or the queue is closed
                    pass

    def _report_error(self, exc: BaseException, coord) -> None:
        """A thread's unexpected error: stop the coordinator with it or, without one, record it
        in :attr:`exceptions_raised` (the caller then raises it), as TF's runner does."""
        if coord is not None:
            coord.request_stop(exc)
        else:
            with self._guard:
                self._errors.append(exc)

    def _stage_loop(self, sess, coord, run: Run) -> None:
        """The stager (:mod:`.staging`): move batches from the queue onto the device until the
        queue is closed and empty (end of data: close the tickets, so the consumer gets every
        staged batch and then ``OutOfRangeError``) or the run stops (the watcher closes the free
        places, or cancels after :data:`QUIET_STOP_SECONDS`)."""
        staging = self.staging
        try:
            move = sess.make_callable(staging.move_op)
            run_quietly(sess, staging.fill_op)
            while not run.stop.is_set() and not (coord is not None and coord.should_stop()):
                move()
        except (tf.errors.OutOfRangeError, tf.errors.CancelledError):
            pass
        except Exception as exc:  # noqa: BLE001
            self._report_error(exc, coord)
            if coord is None:
                raise
        finally:
            try:
                run_quietly(sess, staging.close_op)
            except Exception:  # noqa: BLE001 - the session is closing, or the tickets are closed
                pass

    def _watch(self, sess, coord, run: Run, working: List[threading.Thread]) -> None:
        """The run's watcher (``working``: the enqueue threads and the stager): once stopping begins (coordinator stopped, session closed, or the
        run's stop event set by ``running()``), cancel pending enqueues and set the run's stop
        event; when every working thread has ended, end the run (close generators, end child
        processes).  It never outlives the working threads.

        While it runs, the run is registered with :mod:`.interrupt` (Ctrl-C and interpreter
        exit stop it); when it ends it drops the runner's reference to the session, so a
        closed session (and its graph) is not kept alive by a finished run."""
        interrupt.register(self, sess, run, working + [threading.current_thread()])
        cancelled = False
        looks = 0
        reporters: List[threading.Thread] = []
        try:
            probe = sess.make_callable(self.queue_size)
        except Exception:  # noqa: BLE001 - the session is closed already
            probe = None
        try:
            while any(t.is_alive() for t in working):
                looks += 1
                stopping = (run.stop.is_set() or (coord is not None and coord.should_stop())
                            or (looks % SESSION_CHECK_EVERY == 0 and not _still_open(probe)))
                if (not stopping and self.runtime.stall_timeout is not None and self.failure_op is not None
                        and self.runtime.check_stalls()):
                    reporters.append(self._report_failure(sess))
                if stopping and not cancelled:
                    cancelled = True
                    run.stop.set()
                    if not self._stop_quietly(sess, working):
                        try:
                            self.cancel(sess)  # wakes enqueues blocked on a full queue
                        except Exception:  # noqa: BLE001 - the session is closed already
                            pass
                if coord is not None and not cancelled:
                    coord.wait_for_stop(WATCH_SECONDS)
                else:
                    run.stop.wait(WATCH_SECONDS)
                    for t in working:
                        t.join(0.01)
        finally:
            for t in reporters:
                t.join(1.0)  # the cancel op has ended its enqueue
            try:
                self.runtime.end_run(run)
            finally:
                interrupt.unregister(run)
                with self._guard:
                    if self._active is not None and self._active.run is run:
                        self._active = None

    def _stop_quietly(self, sess, working: List[threading.Thread]) -> bool:
        """Let the run's threads end without cancelling anything; True if they all did.

        Cancelling a blocked enqueue works, but TF logs every cancelled run as a warning, so
        a program that leaves ``running()`` early would print one "Local rendezvous is
        aborting ... CANCELLED" line per worker.  Instead (the stop event is set: every pull
        now answers end of data): close the staging's free places (the stager's wait on them
        ends with ``OutOfRangeError``, which TF does not log), and while a thread is alive and
        the queue is full, dequeue one batch (dropped, as a cancel would leave it unread) so
        a blocked enqueue completes; then close the queue unless closed.  Gives up after
        :data:`QUIET_STOP_SECONDS` (a worker stuck in user code; the session closed), and
        the caller cancels as before."""
        if self.drain_op is None or self.capacity_batches is None:
            return False
        try:
            if self.staging is not None:
                run_quietly(sess, self.staging.close_tokens_op)
            deadline = time.monotonic() + QUIET_STOP_SECONDS
            enqueuing = working[:len(self.enqueue_ops)]  # the stager, if any, comes last
            if not self._drain_until_ended(sess, enqueuing, deadline):
                return False
            run_quietly(sess, self.close_op)  # the stager's wait for a batch, if any, ends here
            for t in working[len(self.enqueue_ops):]:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    return False
            if self.staging is not None:
                run_quietly(sess, self.staging.close_op)
            return True
        except Exception:  # noqa: BLE001 - the session is closed, or closing: cancel instead
            return False

    def _drain_until_ended(self, sess, enqueuing: List[threading.Thread], deadline: float) -> bool:
        """Make room in a full queue, one batch at a time, until every enqueue thread has ended
        (True) or ``deadline`` has passed (False).  The drain's wait is bounded; when the
        consumer takes the batch first it fails with ``DeadlineExceededError`` -- through a
        callable, so no session subclass logs that as an error (:func:`run_quietly`)."""
        size = sess.make_callable(self.queue_size)
        drain = sess.make_callable(self.drain_op, accept_options=True)
        drain_options = tf1.RunOptions(timeout_in_ms=DRAIN_WAIT_MS)
        while any(t.is_alive() for t in enqueuing):
            if time.monotonic() > deadline:
                return False
            if size() >= self.capacity_batches:
                try:
                    drain(options=drain_options)
                except tf.errors.DeadlineExceededError:  # the consumer took it first
                    pass
            else:
                for t in enqueuing:
                    t.join(0.005)
        return True

    def _report_failure(self, sess) -> threading.Thread:
        """Put the run's failure in the queue from a thread of its own (the enqueue waits while
        the queue is full; the cancel op at stop ends that wait)."""
        def enqueue_failure():
            try:
                run_quietly(sess, self.failure_op)
            except Exception:  # noqa: BLE001 - cancelled at stop, or the session closed
                pass
        t = threading.Thread(target=enqueue_failure, name=f"{THREAD_PREFIX}-{self.pipeline_name}-failure",
                             daemon=True)
        t.start()
        return t


def inline_callable(sess, op) -> Callable[[], object]:
    """``sess.make_callable(op)`` whose runs execute in the calling thread, not on TF's
    inter-op pool (``RunOptions(inter_op_thread_pool=-1)``).

    For the runner's own ops (a block's enqueue: a ``tf.cond`` and 16 chained slice
    enqueues): on the pool, every op of them wakes an idle pool thread, and on few cores TF's
    spinning, waking pool threads take the cores the training step and the reader need
    (BENCHMARKS.md, "W1 against limit-queue": W1 thread x1 +6 % with ``sess.run`` and +12 %
    with ``make_callable``, medians of 8 interleaved rounds on the 2-core VM).  The calling thread has nothing else to do meanwhile; a
    wait in an op (a full queue) is asynchronous and holds no thread either way."""
    run = sess.make_callable(op, accept_options=True)
    options = tf1.RunOptions(inter_op_thread_pool=-1)
    return lambda: run(options=options)


def run_quietly(sess, op) -> None:
    """Run one of the runner's own ops (close, cancel, drain, stage) once, through a callable
    rather than ``sess.run``.  Its failures at a stop are expected and handled by the caller;
    a session subclass's ``run`` -- ``tf.test.TestCase``'s ``ErrorLoggingSession`` logs every
    failed run as an ERROR -- would report them as errors although nothing failed.  Raises
    what the run raises (``RuntimeError`` for a closed session)."""
    sess.make_callable(op)()


def _still_open(probe) -> bool:
    """Whether the session behind ``probe`` (a callable of a cheap op) still runs ops."""
    if probe is None:
        return False
    try:
        probe()
        return True
    except (RuntimeError, tf.errors.CancelledError):  # "Attempted to use a closed Session." /
        return False                                  # "Session has been closed."
    except Exception:  # noqa: BLE001 - any other failure is not a closed session
        return True
