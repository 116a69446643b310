"""``Pipeline.numpy_batches()``: a pipeline's batches as numpy, for code outside a TF1 graph.

TF2 programs (eager by default), Keras 3 and plain numpy code cannot use ``pipe.batch``, a
graph tensor.  This iterator runs the pipeline in a session on the pipeline's own graph and
hands each batch over as numpy (the structure of ``pipe.batch``: an array, a tuple or a dict
of arrays)::

    with tf.Graph().as_default():                  # build in a graph: queuepipe makes graph ops
        pipe = queuepipe.from_hdf5("data.h5", ("/X", "/y"), batch_size=128, workers=2)
    for X, y in pipe.numpy_batches():              # anywhere, eager code included
        ...

The pipeline's runner is started with ``running(sess, pipelines=[pipe])`` when the first
batch is asked for, and stopped -- workers ended, threads joined, nothing left behind --
at the end of data (the iterator then ends), when the iterator is closed early (``break``
out of a ``for`` loop that owns it, ``.close()``, or its garbage collection) and when a
worker fails (its original exception is raised from ``next()``).
"""
from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Iterator, Optional

import tensorflow as tf

from ..errors import ArgumentError, ArgumentTypeError
from .session import running, selected_runners

if TYPE_CHECKING:
    from .pipeline import Pipeline

tf1 = tf.compat.v1

_iterating: "weakref.WeakSet[Pipeline]" = weakref.WeakSet()  # pipelines an iterator is running now
_lock = threading.Lock()


def numpy_batches(pipeline: "Pipeline", sess: Optional[tf1.Session] = None, *,
                  config: Optional[tf1.ConfigProto] = None) -> Iterator[Any]:
    """An iterator over ``pipeline``'s batches as numpy, until the end of its data.

    sess: a session on the pipeline's graph to run it in (kept open afterwards; a resumable
        pipeline resumes from the position that session holds); None (default): the
        iterator opens its own ``tf.compat.v1.Session`` on the pipeline's graph (with
        ``config``; a resumable pipeline starts at the beginning) and closes it when it ends.
    config: the ``ConfigProto`` of that own session (only without ``sess``).

    Starts only this pipeline's runner (other queue runners of the graph are left alone);
    nothing starts before the first ``next()``.  A staged pipeline (``pipe.staged()``)
    yields its staged batches.  One iterator per pipeline at a time: a second one while
    the first is still running is refused (it would restart the same workers).  An
    iterator left suspended half-way keeps its workers running (they fill the queue, then
    wait) until it is closed or collected: ``with contextlib.closing(pipe.numpy_batches())
    as batches:`` closes it at the end of the block.
    """
    from .pipeline import Pipeline
    if not isinstance(pipeline, Pipeline):
        raise ArgumentTypeError(f"numpy_batches() needs a queuepipe Pipeline, got {type(pipeline).__name__}")
    graph = pipeline.size().graph
    if sess is not None:
        if config is not None:
            raise ArgumentError("numpy_batches(sess=..., config=...): config only applies to the session "
                                "numpy_batches opens itself; configure your own session where you make it")
        selected_runners(sess.graph, [pipeline])  # refuses a session on another graph, clearly
    fetch = pipeline.staging.batch if pipeline.staging is not None else pipeline.batch
    return _iterate(pipeline, graph, fetch, sess, config)


def _iterate(pipeline: "Pipeline", graph: tf.Graph, fetch: Any, sess: Optional[tf1.Session],
             config: Optional[tf1.ConfigProto]) -> Iterator[Any]:
    """The generator behind :func:`numpy_batches`; its ``finally`` blocks are the cleanup."""
    with _lock:
        if pipeline in _iterating:
            raise ArgumentError(f"pipeline {pipeline.name!r} is already being iterated by another "
                                f"numpy_batches() iterator; exhaust or close that one first")
        _iterating.add(pipeline)
    own = sess is None
    try:
        if own:
            sess = tf1.Session(graph=graph, config=config)
            if pipeline.position_variables:  # a resumable pipeline: start at the beginning
                sess.run([v.initializer for v in pipeline.position_variables])
        try:
            with running(sess, pipelines=[pipeline]):
                step = sess.make_callable(fetch)
                while True:
                    try:
                        batch = step()
                    except tf.errors.OutOfRangeError:
                        return
                    yield batch
        finally:
            if own:
                sess.close()
    finally:
        with _lock:
            _iterating.discard(pipeline)
