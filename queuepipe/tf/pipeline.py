"""Wire a pipeline into the graph: per-worker ``py_func`` pulls, one queue of batches, a gate.

Each worker has one enqueue op: a ``numpy_function`` that pulls the worker's next block
of whole batches (ready at once: the queue runner's thread waited for it, see
:mod:`.runner`) and a ``tf.cond`` that enqueues the block as zero-copy dim-0 slices,
one batch element of a ``FIFOQueue`` each.  The dequeued batch passes a gate: every element carries an error
string, empty for data; a poison element from a failed worker makes a tiny
``py_func`` raise the worker's original exception inside ``sess.run`` -- so a failure
is never mistaken for the end of data.  The gate costs two cheap ops per step
(``Switch``/``Merge``); the raising ``py_func`` only runs on failure.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from ..workers.buffers import Block
from ..workers.runtime import PipelineRuntime
from ..errors import ArgumentError, ArgumentTypeError
from ..spec import Spec
from .compat import quiet_deprecations
from .consumer_stats import ConsumerStats, step_started
from .monitoring import add_summaries
from .position import InputPosition
from .runner import PipelineQueueRunner

tf1 = tf.compat.v1


# a resumable pipeline's (ledger, seed, fingerprint): see :class:`.position.InputPosition`
PositionPlan = Tuple[Any, int, int]


class Pipeline:
    """Batch tensors in the graph, filled by background workers.

    ``batch`` has the structure of ``output_types`` (one tensor, a tuple or a dict).
    :meth:`dequeue` returns a fresh batch of the same structure per call (one per tower of a
    multi-tower model); :meth:`staged` the batch already on a device (one consumer).
    The pipeline's queue runner is in the graph's ``QUEUE_RUNNERS`` collection; start
    it with ``queuepipe.running(sess)``, ``tf.compat.v1.train.start_queue_runners`` or
    any monitored session.
    """

    def __init__(self, batch: Any, queue, runner: PipelineQueueRunner, runtime: PipelineRuntime,
                 spec: Spec, batch_size: int, name: str, *, stats: ConsumerStats,
                 allow_smaller_final_batch: bool, capacity_batches: int,
                 position: Optional[InputPosition] = None):
        self.batch = batch
        self.queue = queue
        self.runner = runner
        self.runtime = runtime
        self.spec = spec
        self.batch_size = batch_size
        self.name = name
        self.stats = stats
        self.allow_smaller_final_batch = allow_smaller_final_batch
        self.capacity_batches = capacity_batches
        self.position = position
        self.staging = None
        self._dequeued = 0  # dequeue() calls (towers): a stager would compete with them
        runner.pipeline = self  # finds the Pipeline from its queue (queuepipe.compat.slim's prefetch_queue)

    @property
    def resumable(self) -> bool:
        """Whether the consumer's position is kept in checkpoints (``resumable=True``)."""
        return self.position is not None

    @property
    def position_variables(self) -> List[Any]:
        """The global variables holding the consumer's input position (empty unless resumable):
        a ``Saver`` given an explicit ``var_list`` must include them to resume the input."""
        return self.position.variables if self.position is not None else []

    def staged(self, device: Optional[str] = None, depth: int = 1) -> Any:
        """The batch, copied onto ``device`` ahead of the step that uses it (same structure as
        :attr:`batch`).

        A thread of the pipeline's queue runner moves batches from the host queue into a
        ``StagingArea`` on ``device``, so the copy of batch N+1 overlaps step N; at most
        ``depth`` batches wait on the device beyond the one in use.  Nothing changes in the
        training loop: ``running(sess)``, ``start_queue_runners`` and the monitored sessions
        start the stager with the workers (it is part of this pipeline's queue runner, so no
        hook is needed).  Batches stay exactly once and in order; at the end of data the staged
        batches come first, then ``OutOfRangeError``; a worker's error reaches ``sess.run``
        with its original type.

        ``device=None``: ``"/gpu:0"`` when TensorFlow sees a GPU, else the host's CPU.  Use
        either ``staged()`` or :attr:`batch` in a graph, not both (each would take batches
        from the other).  Calling it again with the same arguments returns the same tensors.
        """
        from .staging import Staging
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ArgumentError(f"staged(depth={depth!r}): depth must be an int >= 1 (batches ahead on the device)")
        if self._dequeued:
            raise ArgumentError(
                f"pipeline {self.name!r} already has {self._dequeued} dequeue() batch(es) (towers): a stager "
                f"would take batches from them; use dequeue() under each tower's tf.device instead of staged()")
        if device is None:
            device = "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"
        if self.staging is not None:
            if (self.staging.device, self.staging.depth) != (device, depth):
                raise ArgumentError(
                    f"pipeline {self.name!r} is already staged on {self.staging.device!r} with "
                    f"depth={self.staging.depth}; staged({device!r}, depth={depth}) would take batches from it")
            return self.staging.batch
        self.staging = Staging(self, device, depth)
        self.runner.staging = self.staging
        return self.staging.batch

    def dequeue(self, name: Optional[str] = None) -> Any:
        """A fresh batch (the structure of :attr:`batch`): a new dequeue op per call, so
        multi-tower code takes one per tower and every tower's ``sess.run`` gets a batch of its own.

        Each has what :attr:`batch` has (:func:`gated_dequeue`): the error gate (a worker's
        error raises in whichever tower's dequeue takes it, with the original type and text,
        and in every later dequeue), the consumer's statistics and, for a resumable pipeline,
        the position record after the gate (a checkpoint counts every tower's rows).  So
        batches stay exactly once across towers (and :attr:`batch`, which is one more consumer);
        at the end of data, once the queue is empty, every dequeue raises ``OutOfRangeError``
        -- a step whose towers cannot all get a batch raises it too, and a batch that another
        tower of that step took is dropped, as with any TF queue.

        The dequeue, the gate and the records are colocated with the queue (the host); the
        returned tensors follow the caller's device scope, so under ``tf.device("/gpu:1")``
        the step copies its batch to that GPU.  Not with :meth:`staged` (refused either way:
        the stager takes every batch from the queue).  ``name``: the new ops' name scope,
        inside the pipeline's (default ``dequeue``, made unique).
        """
        if self.staging is not None:
            raise ArgumentError(
                f"pipeline {self.name!r} is staged (staged() was called): its stager takes every batch from the "
                f"queue, so dequeue() would compete with it; build the towers on dequeue() without staged()")
        graph = self.queue.queue_ref.graph
        if tf1.get_default_graph() is not graph:
            raise ArgumentError(f"pipeline {self.name!r}.dequeue(): the default graph is not the pipeline's; call "
                                f"it inside `with graph.as_default():` of the graph the pipeline was built in")
        scope = self.queue.queue_ref.op.name.rpartition("/")[0]  # the pipeline's own scope, re-entered
        with quiet_deprecations(), tf1.name_scope(scope + "/"), tf1.name_scope(name or "dequeue"):
            batch = gated_dequeue(self.queue, self.runtime, self.spec, self.stats, self.position,
                                  batch_size=self.batch_size, allow_smaller_final_batch=self.allow_smaller_final_batch,
                                  colocate=True)
        self._dequeued += 1
        return batch

    def numpy_batches(self, sess: Optional["tf.compat.v1.Session"] = None, *,
                      config: Optional["tf.compat.v1.ConfigProto"] = None) -> Iterator[Any]:
        """Iterate the batches as numpy (the structure of :attr:`batch`), for code outside a
        TF1 graph -- eager TF2 code, Keras 3, plain numpy -- until the end of data.

        Runs this pipeline only, in ``sess`` or (default) a session of its own on the
        pipeline's graph; stops the workers, leaving nothing behind, when the data ends, the
        iterator is closed early (``break``, ``.close()``, garbage collection) or a worker
        fails (its original exception is raised).  Build the pipeline inside
        ``with tf.Graph().as_default():`` when the program is eager.  See
        :mod:`queuepipe.tf.numpy_batches`.
        """
        from .numpy_batches import numpy_batches
        return numpy_batches(self, sess, config=config)

    @property
    def workers(self) -> int:
        return self.runtime.workers

    @property
    def mode(self) -> str:
        return self.runtime.mode

    @property
    def failure(self):
        """The run's first failure, a :class:`queuepipe.WorkerFailure` (``.exception`` is the
        original exception), or None; kept until the next run starts."""
        return self.runtime.failure

    def size(self) -> tf.Tensor:
        """Number of batches waiting in the queue (a tensor made when the pipeline was built, so
        it works after the graph is finalized)."""
        return self.runner.queue_size

    def close(self) -> None:
        """Stop the workers now (also done automatically when the runners stop)."""
        self.runtime.request_stop()
        self.runtime.end_run()

    def __repr__(self) -> str:
        return (f"<queuepipe.Pipeline {self.name!r}: {self.workers} {self.mode} worker(s), "
                f"batch_size={self.batch_size}>")


def tf_dtypes_of(output_types: Any):
    """Structure of dtypes -> (flat list of tf.DTypes, same structure of numpy dtypes; object = string).

    Nested structures pass through unconverted; ``Spec.build`` refuses them with a clear message.
    """
    def conv(t):
        if isinstance(t, (tuple, list, dict)):
            return t
        try:
            return tf.as_dtype(t)
        except TypeError:
            raise ArgumentTypeError(f"output_types: {t!r} is not a TensorFlow/numpy dtype") from None

    def to_numpy(d):
        return d if not isinstance(d, tf.DType) else (object if d == tf.string else d.as_numpy_dtype)

    if isinstance(output_types, dict):
        flat = [conv(output_types[k]) for k in output_types]
        return flat, {k: to_numpy(d) for k, d in zip(output_types, flat)}
    if isinstance(output_types, (tuple, list)):
        flat = [conv(t) for t in output_types]
        return flat, tuple(to_numpy(d) for d in flat)
    flat = [conv(output_types)]
    return flat, to_numpy(flat[0])


class WorkerPull:
    """The body of worker ``index``'s pull op (a ``numpy_function``): the runtime's next block
    as the block's columns plus one error string per batch ("" for data; a poison block's
    error).  ``StopIteration`` from the runtime becomes TF's ``OutOfRangeError``."""

    def __init__(self, runtime: PipelineRuntime, index: int):
        self.runtime = runtime
        self.index = index

    def __call__(self) -> List[np.ndarray]:
        block: Block = self.runtime.pull(self.index)
        errors = np.full(block.n_batches, block.error.encode() if block.error else b"", dtype=object)
        return list(block.columns) + [errors]


class FailurePull:
    """The body of the failure enqueue op: the run's poison block, for the watcher to put in
    the queue itself when the failed worker cannot (a stalled thread)."""

    def __init__(self, runtime: PipelineRuntime):
        self.runtime = runtime

    def __call__(self) -> List[np.ndarray]:
        block = self.runtime.failure_block()
        return list(block.columns) + [np.array([block.error.encode()], dtype=object)]


class RaiseFailure:
    """The body of the gate's raising op: only runs when a dequeued batch carries an error."""

    def __init__(self, runtime: PipelineRuntime):
        self.runtime = runtime

    def __call__(self, message: bytes) -> bytes:
        failure = self.runtime.failure
        if failure is None:  # the run that failed is gone; still never pass as data
            raise RuntimeError(message.decode("utf-8", "replace"))
        raise failure.to_raise()


def _enqueue_block(queue, columns, errors, batch_size: int, batches_per_block: int):
    """The enqueue op of one worker: a block becomes batch elements without another copy.

    The runtime hands over blocks of exactly ``batches_per_block`` batches or of a single
    (possibly short) batch.  A whole block is enqueued as that many dim-0 slices, one
    ``enqueue`` each, in order: slices of an aligned block share its buffer (``enqueue_many``
    would copy every batch, and crashes on zero-size elements).
    """
    def one_batch():
        return queue.enqueue(columns + [errors[0]], name="enqueue")

    if batches_per_block == 1:
        return one_batch()

    def whole_block():
        # Every slice is made before the first enqueue, outside the chain: while the queue is
        # full, each enqueue of the chain is completed by a consumer's dequeue, in the
        # consumer's thread, and TF runs there what the chain does next -- so only the next
        # enqueue, not its slices too (BENCHMARKS.md, "W1: the ceiling of a Python-fed hand-over").
        elements = [[t[j * batch_size:(j + 1) * batch_size] for t in columns] + [errors[j]]
                    for j in range(batches_per_block)]
        previous = None
        for j, element in enumerate(elements):
            with tf.control_dependencies([previous] if previous is not None else []):
                previous = queue.enqueue(element, name=f"enqueue_{j}")
        with tf.control_dependencies([previous]):
            return tf.constant(True)

    def single_batch():
        with tf.control_dependencies([one_batch()]):
            return tf.constant(False)

    is_whole = tf.equal(tf.shape(errors)[0], batches_per_block)
    return tf.cond(is_whole, whole_block, single_batch, name="enqueue").op


def build_pipeline(runtime: PipelineRuntime, spec: Spec, output_types: Any, *, batch_size: int,
                   capacity_batches: int, batches_per_block: int, allow_smaller_final_batch: bool,
                   name: Optional[str] = None, position: Optional[PositionPlan] = None) -> Pipeline:
    """Add queue, enqueue ops, runner and gated dequeue for ``runtime`` to the default graph.

    ``spec`` is the user's structure; ``runtime.spec`` the data path's, which for a resumable
    pipeline (``position``: its ledger, seed and fingerprint) ends with the position labels."""
    flat_types, _ = tf_dtypes_of(output_types)
    # unique within the graph, and the same whenever a program builds its graph again: a
    # resumable pipeline's position variables are found in a checkpoint by this name
    name = name or tf1.get_default_graph().unique_name("queuepipe", mark_as_used=False)
    data_spec = runtime.spec
    all_types = list(flat_types) + ([tf.int64] if position is not None else []) + [tf.string]
    with quiet_deprecations(), tf1.name_scope(name):
        queue = tf1.FIFOQueue(capacity_batches, all_types, name="batches")
        enqueue_ops = []
        for i in range(runtime.workers):
            with tf1.name_scope(f"worker_{i}"):
                outs = tf1.numpy_function(WorkerPull(runtime, i), [], all_types, name="pull")
                errors = outs[-1]
                errors.set_shape([None])
                columns = list(outs[:-1])
                for field, t in zip(data_spec.fields, columns):
                    if field.shape is not None:
                        t.set_shape([None] + list(field.shape))
                enqueue_ops.append(_enqueue_block(queue, columns, errors, batch_size, batches_per_block))
        with tf1.name_scope("failure"):
            outs = tf1.numpy_function(FailurePull(runtime), [], all_types, name="pull")
            failure_op = queue.enqueue(list(outs[:-1]) + [outs[-1][0]], name="enqueue")
        stats = ConsumerStats(queue.queue_ref)
        tracked = None if position is None else InputPosition(*position, queue.queue_ref, name)
        runner = PipelineQueueRunner(runtime, queue, enqueue_ops, name, queue_size=queue.size(name="size"),
                                     failure_op=failure_op, reset_op=stats.reset_op, stats_value=stats.value,
                                     close_op=close_if_open(queue, "close"), drain_op=queue.dequeue(name="drain"),
                                     capacity_batches=capacity_batches)
        runner.position = tracked
        tf1.train.add_queue_runner(runner)

        with tf1.name_scope("dequeue"):
            batch = gated_dequeue(queue, runtime, spec, stats, tracked, batch_size=batch_size,
                                  allow_smaller_final_batch=allow_smaller_final_batch)
    pipeline = Pipeline(batch, queue, runner, runtime, spec, batch_size, name, stats=stats,
                        allow_smaller_final_batch=allow_smaller_final_batch, capacity_batches=capacity_batches,
                        position=tracked)
    with quiet_deprecations():
        add_summaries(pipeline)
    return pipeline


def gated_dequeue(queue, runtime: PipelineRuntime, spec: Spec, stats: ConsumerStats,
                  position: Optional[InputPosition], *, batch_size: int, allow_smaller_final_batch: bool,
                  colocate: bool = False) -> Any:
    """One batch taken from ``queue`` as the user sees it (the structure of ``spec``), in the
    current name scope: the dequeue; its error string through :func:`error_gate` (a poison
    element raises the worker's exception); the consumer's statistics; for a resumable
    pipeline (``position``) the batch's position labels added to the ledger, after the gate
    (a poison element is no row of data).  Every output is ready only after all of them.

    ``pipe.batch`` is one (:func:`build_pipeline`); each :meth:`Pipeline.dequeue` adds
    another.  ``colocate``: build everything but the outputs with the queue, whatever device
    scope the caller is in (a tower's GPU): the dequeue and the gate's ``py_func`` run on the
    host, and only the outputs follow the caller's device."""
    n_fields = len(queue.dtypes) - 1 - (1 if position is not None else 0)  # + [labels] + error
    with (tf1.colocate_with(queue.queue_ref) if colocate else contextlib.nullcontext()):
        started = step_started()
        items = queue.dequeue(name="batch")
        data, error = items[:n_fields], items[-1]
        gate = error_gate(error, runtime)
        recorded = stats.record(started, items, rows=tf.shape(data[0])[0])
        after = [gate, recorded]
        if position is not None:  # after the gate: a poison element is no row of data
            with tf.control_dependencies([gate]):
                after.append(position.record(items[n_fields]))
    return spec.pack(batch_outputs(data, after, spec, batch_size, allow_smaller_final_batch))


def close_if_open(queue, name: str) -> tf.Operation:
    """Close ``queue`` unless it is closed already.  Closing a closed queue fails, and TF logs
    every failed run as a warning (a "Local rendezvous is aborting" line): two closers at a
    stop (the last enqueue thread, the watcher) must not print one."""
    def close():
        with tf.control_dependencies([queue.close()]):
            return tf.constant(True)
    return tf.cond(queue.is_closed(), lambda: tf.constant(False), close, name=name).op


def error_gate(error: tf.Tensor, runtime: PipelineRuntime) -> tf.Tensor:
    """A tensor that is ready when ``error`` (one element's error string) is empty; otherwise
    its ``py_func`` raises the worker's original exception (:class:`RaiseFailure`).  Two cheap
    ops (``Switch``/``Merge``) per step; the ``py_func`` only runs on failure."""
    ok = tf.equal(error, "")
    on_error, on_ok = tf.raw_ops.Switch(data=error, pred=ok)
    raised = tf1.numpy_function(RaiseFailure(runtime), [on_error], tf.string,
                                stateful=True, name="raise_worker_error")
    gate, _ = tf.raw_ops.Merge(inputs=[on_ok, raised])
    return gate


def batch_outputs(data, after, spec: Spec, batch_size: int, allow_smaller_final_batch: bool) -> List[tf.Tensor]:
    """The user's batch tensors: ``data`` given its static shapes, each output ready only
    after every op in ``after`` (the error gate, the consumer's bookkeeping)."""
    outputs = []
    first = batch_size if not allow_smaller_final_batch else None
    with tf.control_dependencies(after):
        for field, t in zip(spec.fields, data):
            out = tf.identity(t, name=f"field_{len(outputs)}")
            if field.shape is not None:
                out.set_shape([first] + list(field.shape))
            else:
                out.set_shape(tf.TensorShape(None))
            outputs.append(out)
    return outputs
