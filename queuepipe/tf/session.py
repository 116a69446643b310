"""Session lifecycle: ``running(sess)`` runs a session's queue runners for the length of a ``with`` statement.

It works from TF2's eager code too: starting and stopping run under ``sess.graph.as_default()``,
so TensorFlow's queue-runner code sees the session's own graph, not the eager context (the
``with`` body itself is left in whatever mode the caller is in).  ``pipelines=`` narrows it to
some of the graph's queuepipe pipelines, so one graph's pipelines can run independently (as
:meth:`queuepipe.Pipeline.numpy_batches` does).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterable, Iterator, List, Optional, Union

import tensorflow as tf

from ..errors import ArgumentError, ArgumentTypeError
from . import interrupt
from .compat import quiet_deprecations
from .runner import PipelineQueueRunner

tf1 = tf.compat.v1
log = logging.getLogger("queuepipe")


def pipeline_runners(graph) -> List[PipelineQueueRunner]:
    """queuepipe's runners among a graph's queue runners."""
    return [qr for qr in graph.get_collection(tf1.GraphKeys.QUEUE_RUNNERS)
            if isinstance(qr, PipelineQueueRunner)]


def runner_of_op(op) -> Optional[PipelineQueueRunner]:
    """The runner of the queuepipe pipeline ``op`` belongs to (every op of a pipeline -- its
    queue, error gates, staging -- is in the pipeline's name scope), or None.  For
    :func:`queuepipe.worker_failure`: the op a ``sess.run`` error names is the gate that
    raised it."""
    name = getattr(op, "name", None)
    graph = getattr(op, "graph", None)
    if not name or graph is None:
        return None
    found, longest = None, -1
    for qr in pipeline_runners(graph):
        scope = qr.queue.queue_ref.op.name.rpartition("/")[0]
        if scope and name.startswith(scope + "/") and len(scope) > longest:  # nested scopes: the innermost
            found, longest = qr, len(scope)
    return found


def selected_runners(graph, pipelines: Union[Any, Iterable[Any]]) -> List[PipelineQueueRunner]:
    """The runners of ``pipelines`` (a Pipeline or an iterable of them, each once, in order),
    refused with a clear error unless every one is a queuepipe pipeline of ``graph``."""
    from .pipeline import Pipeline
    if isinstance(pipelines, Pipeline):
        pipelines = [pipelines]
    try:
        pipes = list(pipelines)
    except TypeError:
        raise ArgumentTypeError(f"running(pipelines=...) takes queuepipe pipelines (a list of them), "
                                f"got {type(pipelines).__name__}") from None
    if not pipes:
        raise ArgumentError("running(pipelines=[]): name at least one pipeline, or pass pipelines=None "
                            "to start every queue runner of the graph")
    in_graph = pipeline_runners(graph)
    runners: List[PipelineQueueRunner] = []
    for p in pipes:
        if not isinstance(p, Pipeline):
            raise ArgumentTypeError(f"running(pipelines=...) takes queuepipe pipelines, got {type(p).__name__}")
        if not any(p.runner is qr for qr in in_graph):
            raise ArgumentError(f"running(pipelines=...): pipeline {p.name!r} is not in the session's graph "
                                f"(build it inside `with sess.graph.as_default():`, or open the session "
                                f"with tf.compat.v1.Session(graph=<the pipeline's graph>))")
        if not any(p.runner is qr for qr in runners):
            runners.append(p.runner)
    return runners


@contextlib.contextmanager
def running(sess, *, coord: Optional[tf1.train.Coordinator] = None, stop_grace_period_secs: float = 10.0,
            pipelines: Union[None, Any, Iterable[Any]] = None) -> Iterator[tf1.train.Coordinator]:
    """Start the queue runners of ``sess.graph``; stop and join them on exit.

    ``pipelines=None``: every queue runner of the graph (queuepipe's and any other), as
    ``start_queue_runners``.  ``pipelines=[pipe, ...]`` (or one pipeline): only those
    queuepipe pipelines' runners; other queue runners of the graph are not started, and
    only these pipelines are stopped, joined and checked for failures on exit -- other
    pipelines of the graph keep running if something else started them.

    Yields the Coordinator.  On exit -- normal, end of data, an exception or Ctrl-C --
    it requests stop, cancels pending enqueues, stops the workers and joins all
    threads.  A worker failure is raised here (its original exception) even if the
    body ended early or saw only an end of data.  Ctrl-C also works while ``sess.run``
    waits for a batch that does not come (see :mod:`.interrupt`); once every run has
    ended, the Ctrl-C listener's wakeup fd is removed here.

    Eager callers (TF2 code with a session on its own graph) need nothing special: the
    runners are started and stopped under ``sess.graph.as_default()``.
    """
    graph = sess.graph
    runners = None if pipelines is None else selected_runners(graph, pipelines)
    coord = coord or tf1.train.Coordinator()
    with graph.as_default(), quiet_deprecations():
        if runners is None:
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord, daemon=True)
        else:
            threads = _start(sess, coord, runners)
    body_error: Optional[BaseException] = None
    try:
        yield coord
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after shutdown
        body_error = exc
        raise
    finally:
        with graph.as_default():
            _stop(graph, coord, threads, runners, stop_grace_period_secs, body_error)


def _start(sess, coord: tf1.train.Coordinator, runners: List[PipelineQueueRunner]) -> List[Any]:
    """Start ``runners`` only; if one fails to start, stop those already started."""
    threads: List[Any] = []
    try:
        for qr in runners:
            threads.extend(qr.create_threads(sess, coord=coord, daemon=True, start=True))
    except BaseException:
        coord.request_stop()
        for qr in runners:
            qr.request_stop()
        try:
            coord.join(threads, stop_grace_period_secs=10.0, ignore_live_threads=True)
        except BaseException:  # noqa: BLE001 - the start's own error is the one to raise
            pass
        raise
    return threads


def _stop(graph, coord: tf1.train.Coordinator, threads: List[Any], runners: Optional[List[PipelineQueueRunner]],
          stop_grace_period_secs: float, body_error: Optional[BaseException]) -> None:
    """DESIGN.md's "Shutdown", for the runners ``running()`` started (``None``: all of the graph's)."""
    ours = pipeline_runners(graph) if runners is None else runners
    coord.request_stop()
    for qr in ours:
        qr.request_stop()
    join_error: Optional[BaseException] = None
    try:
        coord.join(threads, stop_grace_period_secs=stop_grace_period_secs)
    except BaseException as exc:  # noqa: BLE001
        join_error = exc
    interrupt.release_from_main_thread()
    failures = [qr.runtime.failure for qr in ours if qr.runtime.failure is not None]
    if failures and (body_error is None or isinstance(body_error, tf.errors.OpError)):
        raise failures[0].to_raise()
    if join_error is not None and body_error is None and not isinstance(
            join_error, (tf.errors.OutOfRangeError, tf.errors.CancelledError)):
        raise join_error
