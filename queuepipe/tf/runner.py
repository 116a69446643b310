"""A QueueRunner that also owns the pipeline's workers for the life of a session.

Being a real ``tf.compat.v1.train.QueueRunner`` in the graph's ``QUEUE_RUNNERS``
collection is what makes ``start_queue_runners``, ``MonitoredTrainingSession``,
``SingularMonitoredSession`` and ``Supervisor`` drive the pipeline with no extra code.
On top of the stock runner it starts a fresh run of workers when its threads are
created, and a small lifecycle thread that stops the workers (closing generators,
ending child processes) as soon as the coordinator stops, the session closes, or
every enqueue thread has finished.
"""
from __future__ import annotations

import threading
from typing import List, Optional

import tensorflow as tf

from ..workers.runtime import PipelineRuntime

tf1 = tf.compat.v1

THREAD_PREFIX = "queuepipe"


class PipelineQueueRunner(tf1.train.QueueRunner):
    """QueueRunner for one pipeline: one enqueue op per worker."""

    def __init__(self, runtime: PipelineRuntime, queue, enqueue_ops, name: str):
        super().__init__(
            queue=queue, enqueue_ops=enqueue_ops,
            close_op=queue.close(name="close"),
            cancel_op=queue.close(cancel_pending_enqueues=True, name="cancel"),
            # A cancelled enqueue (session closing, stop requested) is an orderly end,
            # not an error to log or to report to the coordinator.
            queue_closed_exception_types=(tf.errors.OutOfRangeError, tf.errors.CancelledError))
        self.runtime = runtime
        self.pipeline_name = name

    def create_threads(self, sess, coord=None, daemon=False, start=False) -> List[threading.Thread]:
        threads = super().create_threads(sess, coord=coord, daemon=daemon, start=False)
        if not threads:
            return []  # already running for this session
        enqueue_threads = threads[:len(self.enqueue_ops)]
        self.runtime.start_run()
        for i, t in enumerate(enqueue_threads):
            t.name = f"{THREAD_PREFIX}-{self.pipeline_name}-enqueue-{i}"
        lifecycle = threading.Thread(target=self._watch, args=(sess, coord, enqueue_threads),
                                     name=f"{THREAD_PREFIX}-{self.pipeline_name}-lifecycle", daemon=True)
        if coord is not None:
            coord.register_thread(lifecycle)
        threads.append(lifecycle)
        if start:
            for t in threads:
                t.daemon = daemon if t is not lifecycle else True
                t.start()
        return threads

    def _run(self, sess, enqueue_op, coord=None) -> None:
        """One worker's enqueue loop: the stock runner's, but each enqueue is preceded by a wait
        for the worker's next block in this Python thread (see ``PipelineRuntime.prefetch``).

        Same contract as ``QueueRunner._run``: runs until the coordinator stops or the queue
        closes; the last runner of a session to end closes the queue; any other error stops the
        coordinator (or, without one, is recorded and raised)."""
        index = self.enqueue_ops.index(enqueue_op)
        decremented = False
        try:
            enqueue = sess.make_callable(enqueue_op)
            while not (coord is not None and coord.should_stop()):
                self.runtime.prefetch(index)
                try:
                    enqueue()
                except self._queue_closed_exception_types:
                    with self._lock:
                        self._runs_per_session[sess] -= 1
                        decremented = True
                        if self._runs_per_session[sess] == 0:
                            try:
                                sess.run(self._close_op)
                            except Exception:  # noqa: BLE001 - closing an already closed queue
                                pass
                    return
        except Exception as exc:  # noqa: BLE001
            if coord is not None:
                coord.request_stop(exc)
            else:
                with self._lock:
                    self._exceptions_raised.append(exc)
                raise
        finally:
            if not decremented:
                with self._lock:
                    self._runs_per_session[sess] -= 1

    def _watch(self, sess, coord: Optional[tf1.train.Coordinator], enqueue_threads) -> None:
        """Stop the workers once the enqueue threads are done, or as soon as stopping begins."""
        try:
            while any(t.is_alive() for t in enqueue_threads):
                if (coord is not None and coord.should_stop()) or getattr(sess, "_closed", False):
                    self.runtime.interrupt()
                if coord is not None:
                    coord.wait_for_stop(0.05)
                    for t in enqueue_threads:
                        t.join(0.01)
                else:
                    for t in enqueue_threads:
                        t.join(0.05)
        finally:
            self.runtime.end_run()
