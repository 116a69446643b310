"""Session lifecycle: ``running(sess)`` runs a session's queue runners for the length of a ``with`` statement."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, List, Optional

import tensorflow as tf

from . import interrupt
from .compat import quiet_deprecations
from .runner import PipelineQueueRunner

tf1 = tf.compat.v1
log = logging.getLogger("queuepipe")


def pipeline_runners(graph) -> List[PipelineQueueRunner]:
    """queuepipe's runners among a graph's queue runners."""
    return [qr for qr in graph.get_collection(tf1.GraphKeys.QUEUE_RUNNERS)
            if isinstance(qr, PipelineQueueRunner)]


@contextlib.contextmanager
def running(sess, *, coord: Optional[tf1.train.Coordinator] = None,
            stop_grace_period_secs: float = 10.0) -> Iterator[tf1.train.Coordinator]:
    """Start every queue runner of ``sess.graph``; stop and join them on exit.

    Yields the Coordinator.  On exit -- normal, end of data, an exception or Ctrl-C --
    it requests stop, cancels pending enqueues, stops the workers and joins all
    threads.  A worker failure is raised here (its original exception) even if the
    body ended early or saw only an end of data.  Ctrl-C also works while ``sess.run``
    waits for a batch that does not come (see :mod:`.interrupt`); once every run has
    ended, the Ctrl-C listener's wakeup fd is removed here.
    """
    coord = coord or tf1.train.Coordinator()
    graph = sess.graph
    with quiet_deprecations():
        threads = tf1.train.start_queue_runners(sess=sess, coord=coord, daemon=True)
    body_error: Optional[BaseException] = None
    try:
        yield coord
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after shutdown
        body_error = exc
        raise
    finally:
        coord.request_stop()
        for qr in pipeline_runners(graph):
            qr.request_stop()
        join_error: Optional[BaseException] = None
        try:
            coord.join(threads, stop_grace_period_secs=stop_grace_period_secs)
        except BaseException as exc:  # noqa: BLE001
            join_error = exc
        interrupt.release_from_main_thread()
        failures = [qr.runtime.failure for qr in pipeline_runners(graph) if qr.runtime.failure is not None]
        if failures and (body_error is None or isinstance(body_error, tf.errors.OpError)):
            raise failures[0].to_raise()
        if join_error is not None and body_error is None and not isinstance(
                join_error, (tf.errors.OutOfRangeError, tf.errors.CancelledError)):
            raise join_error
