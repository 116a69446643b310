"""``prefetch_queue`` as TF-Slim had it, over a queuepipe batch, keeping queuepipe's guarantees.

Slim's ``prefetch_queue(tensors)`` put already-batched tensors into a second ``FIFOQueue`` fed
by ``num_threads`` ``QueueRunner`` threads and returned that queue; multi-tower code called
``batch_queue.dequeue()`` once per tower.  Behind queuepipe such a second queue brings the
old failures back: a worker's error fails the *enqueue thread's* ``sess.run``, not the
towers'.  With a Coordinator the runner closes the second queue and the towers see a
misleading ``OutOfRangeError`` (the end of data, not the error); without one the thread dies,
nothing closes the queue and the towers wait forever.

Here there is no second queue: queuepipe's own queue already prefetches (its workers fill it
ahead of the step).  :func:`prefetch_queue` returns a :class:`PrefetchQueue` whose
``dequeue()`` is the pipeline's :meth:`queuepipe.Pipeline.dequeue` -- a fresh batch, through
the error gate, per call -- so every tower gets a batch of its own, exactly once; at the end
of data every tower's dequeue raises ``OutOfRangeError`` (a Coordinator's ``should_stop()``
follows, as in slim); a worker's error raises in the towers with its original type and text.
``start_queue_runners``, ``MonitoredTrainingSession``, ``Supervisor`` and
``queuepipe.running(sess)`` start the pipeline as before: nothing else is to be started.

How the pipeline is found: by walking the graph back from ``tensors`` (data and control
inputs) to the outputs of a queuepipe dequeue -- ``pipe.batch`` or a ``pipe.dequeue()``
batch: the ``Identity`` ops that read the dequeue of a queue whose queue runner (in the
graph's ``QUEUE_RUNNERS``) is a queuepipe pipeline's (the runner keeps its ``Pipeline``, so
one built and dropped, ``images, labels = from_generator(...).batch``, is still found, and
nothing outlives the graph).  A walk, not a registry of
``pipe.batch`` tensors, because slim programs usually pass tensors *computed* from the batch
(``slim.one_hot_encoding(labels)``, casts, a resize).  Those ops -- the ones between the batch
and ``tensors``, and the random ops they read (slim's enqueue drew them once per batch) -- are
copied onto every ``dequeue()``'s fresh batch (the ops alone, through ``import_graph_def``;
variables, constants and anything else they read are shared), so each tower computes them on
its own batch.  A copied random op with a fixed seed gets another ``seed2`` per copy, so
towers do not draw the same numbers.

Refused, with the tensor and the op named: ``tensors`` that reach no queuepipe batch (a plain
TF1 queue, ``tf.train.batch``, a ``tf.data`` iterator, placeholders only) -- queuepipe does
not feed them, and a fallback to slim's own queue would silently bring the failures above
back (slim itself no longer exists in TensorFlow 2.x); tensors mixing two pipelines, two
batches of one pipeline, or a plain TF queue with a pipeline; tensors that read the
pipeline's queue directly or come from ``pipe.staged()`` (the stager serves one consumer:
build the towers on ``dequeue()`` instead); ``shared_name`` (a queue shared between sessions:
give each worker task a pipeline of its own, e.g. ``from_hdf5(..., shard=(task, n))``).

The other arguments are accepted and change nothing: ``capacity`` (the pipeline's own
``capacity`` decides how many samples wait), ``num_threads`` (the pipeline's ``workers`` do
the work; no thread is needed to move batches), ``dynamic_pad`` (each element is a whole
batch, padded per batch by the pipeline when it was built with ``dynamic_pad=True``), and no
second ``fraction_of_<capacity>_full`` summary is added (the pipeline already writes
``queue/<name>/fraction_of_<capacity>_full``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from ...errors import ArgumentError, ArgumentTypeError

__all__ = ["prefetch_queue", "PrefetchQueue"]

tf1 = tf.compat.v1

_ITERATOR_TYPES = ("IteratorGetNext", "IteratorGetNextSync", "IteratorGetNextAsOptional")
_STAGING_TYPES = ("Unstage", "StagePeek", "MapUnstage", "MapUnstageNoKey", "OrderedMapUnstage",
                  "OrderedMapUnstageNoKey")
_SEED_STEP = 1_000_003  # added to a copied random op's seed2 per copy (a prime: copies stay apart)


def prefetch_queue(tensors: Any, capacity: int = 8, num_threads: int = 1, dynamic_pad: bool = False,
                   shared_name: Optional[str] = None, name: Optional[str] = None) -> "PrefetchQueue":
    """Slim's ``prefetch_queue``: an object whose ``dequeue()`` gives one batch per call (per tower).

    ``tensors``: a list (or tuple) or a dict of tensors computed from a queuepipe batch
    (``pipe.batch``, a ``pipe.dequeue()``, or ops on them), as slim took them; ``dequeue()``
    returns what slim's queue returned: a list of tensors (one tensor for a list of one), or a
    dict for a dict.  ``name``: the name scope of the ops each ``dequeue()`` copies (default
    ``prefetch_queue``).  The other arguments are checked and otherwise ignored, and
    ``shared_name`` is refused: see the module docstring.
    """
    for arg, value in (("capacity", capacity), ("num_threads", num_threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"prefetch_queue({arg}={value!r}): must be an int >= 1")
    if shared_name is not None:
        raise ArgumentError(
            f"prefetch_queue(shared_name={shared_name!r}): a queue shared between sessions has no queuepipe "
            f"counterpart; give each worker task a pipeline of its own (e.g. from_hdf5(..., shard=(task, n)))")
    labels, flat, names = _flatten(tensors)
    trace = _trace(flat, labels)
    with tf1.name_scope(name, "prefetch_queue", flat) as scope:
        pass  # claims a unique scope for the copies, as slim's queue claimed its own
    return PrefetchQueue(trace, flat, names, scope=scope)


class PrefetchQueue:
    """What :func:`prefetch_queue` returns: the parts of slim's queue that slim programs use.

    ``dequeue()`` takes a fresh batch from the pipeline per call; ``size()`` is the number of
    batches waiting in the pipeline's queue (its prefetched batches);
    ``close(cancel_pending_enqueues=True)`` and ``is_closed()`` act on that queue (after a
    close the waiting batches are delivered, then ``OutOfRangeError``; a close without
    cancelling is refused: it would wait behind the workers); ``name`` is that queue's name;
    ``dtypes``, ``shapes`` and ``names`` describe what ``dequeue()`` returns; ``pipeline`` is
    the :class:`queuepipe.Pipeline`.
    ``enqueue*``, ``dequeue_many`` and ``dequeue_up_to`` are refused: the pipeline's workers
    fill the queue, and every element is already a batch.
    """

    def __init__(self, trace: "_Trace", tensors: List[tf.Tensor], names: Optional[List[str]], *, scope: str):
        self.pipeline = trace.pipeline
        self._trace = trace
        self._tensors = tensors
        self._scope = scope
        self._copies = 0
        self.names = names
        self.dtypes = [t.dtype for t in tensors]
        self.shapes = [t.shape for t in tensors]

    @property
    def name(self) -> str:
        """The name of the pipeline's queue (the queue that prefetches)."""
        return self.pipeline.queue.name

    def dequeue(self, name: Optional[str] = None) -> Any:
        """One fresh batch (``pipe.dequeue()``), with ``tensors``' ops applied to it: a list of
        tensors (one tensor for a list of one) or a dict, as slim's queue returned it."""
        batch = self.pipeline.dequeue()
        leaves = self.pipeline.spec.flatten(batch, "prefetch_queue")
        replace = {source: leaves[index] for source, index in self._trace.sources.items()}
        self._copies += 1
        with tf1.name_scope(self._scope), tf1.name_scope(name, "dequeue"):
            outputs = _copy_onto(self._tensors, self._trace, replace, self._copies)
        if self.names is not None:
            return dict(zip(self.names, outputs))
        return outputs[0] if len(outputs) == 1 else outputs  # as TF queues: one component, one tensor

    def size(self, name: Optional[str] = None) -> tf.Tensor:
        """Batches waiting in the pipeline's queue (``pipe.size()``; ``name`` is ignored)."""
        return self.pipeline.size()

    def close(self, cancel_pending_enqueues: bool = False, name: Optional[str] = None) -> tf.Operation:
        """With ``cancel_pending_enqueues=True``: an op closing the pipeline's queue now -- the
        workers' pending enqueues end, the batches waiting are delivered, then
        ``OutOfRangeError``.  Without it, refused: a TF close waits behind the pending enqueues,
        which the workers keep while the queue is full, so it would hang unless a tower dequeues
        meanwhile (to stop the workers, ``coord.request_stop()`` or leave ``queuepipe.running``)."""
        if not cancel_pending_enqueues:
            raise ArgumentError(
                f"prefetch_queue over pipeline {self.pipeline.name!r}: close() would wait behind the workers' "
                f"pending enqueues (a hang while the queue is full and no tower dequeues); use "
                f"close(cancel_pending_enqueues=True), or stop the workers with coord.request_stop() or by "
                f"leaving queuepipe.running()")
        return self.pipeline.queue.close(cancel_pending_enqueues=True, name=name)

    def is_closed(self, name: Optional[str] = None) -> tf.Tensor:
        return self.pipeline.queue.is_closed(name=name)

    def enqueue(self, *args: Any, **kwargs: Any) -> None:
        raise self._refused("enqueue", "the pipeline's workers fill its queue")

    def enqueue_many(self, *args: Any, **kwargs: Any) -> None:
        raise self._refused("enqueue_many", "the pipeline's workers fill its queue")

    def dequeue_many(self, *args: Any, **kwargs: Any) -> None:
        raise self._refused("dequeue_many", "every element is already a batch: call dequeue() once per tower")

    def dequeue_up_to(self, *args: Any, **kwargs: Any) -> None:
        raise self._refused("dequeue_up_to", "every element is already a batch: call dequeue() once per tower")

    def _refused(self, method: str, why: str) -> ArgumentError:
        return ArgumentError(f"prefetch_queue over pipeline {self.pipeline.name!r}: {method}() is not "
                             f"available ({why})")

    def __repr__(self) -> str:
        return f"<queuepipe.compat.slim PrefetchQueue over pipeline {self.pipeline.name!r}>"


# --------------------------------------------------------------------------------------
# finding the batch behind the tensors
# --------------------------------------------------------------------------------------

@dataclass
class _Trace:
    """What ``tensors`` are computed from: the pipeline, its batch outputs among their inputs
    (tensor name -> field index) and the ops to run once per tower -- those between the batch
    and ``tensors``, and random ops they read -- in input order."""

    pipeline: Any
    sources: Dict[str, int]
    copied: List[tf.Operation] = field(default_factory=list)


def _flatten(tensors: Any) -> Tuple[List[str], List[tf.Tensor], Optional[List[str]]]:
    """``tensors`` as (labels for messages, flat list, dict keys or None), in slim's order
    (a dict by sorted keys), each checked to be a graph tensor."""
    if isinstance(tensors, dict):
        names = sorted(tensors)
        labels, flat = [f"tensors[{k!r}]" for k in names], [tensors[k] for k in names]
    elif isinstance(tensors, (list, tuple)):
        names, labels, flat = None, [f"tensors[{i}]" for i in range(len(tensors))], list(tensors)
    else:
        names, labels, flat = None, ["tensors"], [tensors]
    if not flat:
        raise ArgumentError("prefetch_queue(tensors=...): no tensors given")
    for label, t in zip(labels, flat):
        if not tf.is_tensor(t) or not hasattr(t, "op") or isinstance(t, tf.SparseTensor):
            raise ArgumentTypeError(f"prefetch_queue: {label} is a {type(t).__name__}, not a dense tensor of a "
                                    f"tf.compat.v1 graph (build the model inside a graph, as slim programs do)")
    graphs = {id(t.graph) for t in flat}
    if len(graphs) > 1:
        raise ArgumentError("prefetch_queue: the tensors belong to different graphs")
    return labels, flat, names


def _pipeline_of_queue(queue_op: tf.Operation) -> Any:
    """The queuepipe Pipeline whose queue ``queue_op`` is (through its queue runner), or None."""
    for runner in queue_op.graph.get_collection(tf1.GraphKeys.QUEUE_RUNNERS):
        pipeline = getattr(runner, "pipeline", None)
        if pipeline is not None and runner.queue.queue_ref.op.name == queue_op.name:
            return pipeline
    return None


def _reads_queue(op: tf.Operation) -> Optional[tf.Operation]:
    """The queue op that ``op`` dequeues from, if it is a queue dequeue."""
    if op.type.startswith("QueueDequeue") and op.inputs:
        return op.inputs[0].op
    return None


def _batch_output(op: tf.Operation) -> Optional[Tuple[Any, tf.Operation, int]]:
    """``(pipeline, dequeue op, field index)`` when ``op`` is one output of a queuepipe gated
    dequeue (an ``Identity`` of a field its queue's dequeue returned), else None."""
    if op.type != "Identity" or not op.inputs:
        return None
    dequeue = op.inputs[0].op
    queue = _reads_queue(dequeue)
    if queue is None:
        return None
    pipeline = _pipeline_of_queue(queue)
    return None if pipeline is None else (pipeline, dequeue, op.inputs[0].value_index)


def _staging_of(queue_op: tf.Operation) -> Any:
    """The staged queuepipe Pipeline whose staging queue (free places, tickets) ``queue_op`` is, or None."""
    for runner in queue_op.graph.get_collection(tf1.GraphKeys.QUEUE_RUNNERS):
        pipeline = getattr(runner, "pipeline", None)
        scope = runner.queue.queue_ref.op.name.rpartition("/")[0] if pipeline is not None else None
        if pipeline is not None and pipeline.staging is not None and queue_op.name.startswith(scope + "/staging/"):
            return pipeline
    return None


def _refusal(op: tf.Operation, label: str) -> Optional[str]:
    """Why ``op``, an input of ``label``, cannot be served from a queuepipe batch (None: it can)."""
    staged = "{label} comes from pipeline {name!r}'s staging ({op!r}): pipe.staged() serves one consumer; for " \
             "several towers pass pipe.batch and use no staged()"
    queue = _reads_queue(op)
    if queue is not None:
        pipeline = _pipeline_of_queue(queue)
        if pipeline is not None:
            return (f"{label} reads pipeline {pipeline.name!r}'s queue directly ({op.name!r}), around its error "
                    f"gate; pass pipe.batch or pipe.dequeue() (or tensors computed from them)")
        pipeline = _staging_of(queue)
        if pipeline is not None:
            return staged.format(label=label, name=pipeline.name, op=op.name)
        return (f"{label} is read from TF queue {queue.name!r} ({op.name!r}), which queuepipe does not feed: "
                f"behind queuepipe's prefetch_queue a plain TF1 queue would hide worker errors again; build that "
                f"input with queuepipe.from_generator / from_hdf5")
    if op.type in _ITERATOR_TYPES:
        return (f"{label} comes from a tf.data iterator ({op.name!r}), not from a queuepipe pipeline; build the "
                f"input with queuepipe.from_generator / from_hdf5")
    if op.type in _STAGING_TYPES:
        return (f"{label} comes from a staging area ({op.name!r}): pipe.staged() serves one consumer; for several "
                f"towers pass pipe.batch and use no staged()")
    return None


def _trace(flat: Sequence[tf.Tensor], labels: Sequence[str]) -> _Trace:
    """Walk back from every tensor (iteratively: input graphs can be deep) to the queuepipe batch
    it is computed from; refuse what cannot be served from one (see the module docstring)."""
    depends: Dict[Any, bool] = {}       # op -> whether it depends on a batch output
    per_tower: Dict[Any, bool] = {}     # ... or on a random op: run once per tower, as slim ran it per batch
    order: List[tf.Operation] = []      # ops whose inputs are all done, inputs first
    found: Dict[str, Tuple[Any, tf.Operation, int]] = {}
    for label, tensor in zip(labels, flat):
        visiting = set()
        stack = [tensor.op]
        while stack:
            op = stack[-1]
            if op in depends:
                stack.pop()
                continue
            output = _batch_output(op)
            if output is not None:
                found[op.outputs[0].name] = output
                depends[op] = per_tower[op] = True
                stack.pop()
                continue
            why = _refusal(op, label)
            if why is not None:
                raise ArgumentError(f"prefetch_queue: {why}")
            preds = list(op.control_inputs) + [t.op for t in op.inputs]  # data inputs walked first
            pending = [p for p in preds if p not in depends]
            if pending:
                if op in visiting:
                    raise ArgumentError(f"prefetch_queue: {label} is computed by a TF1 control-flow loop "
                                        f"({op.name!r}); apply it to batch_queue.dequeue()'s tensors instead")
                visiting.add(op)
                stack.extend(pending)
                continue
            depends[op] = any(depends[p] for p in preds)
            per_tower[op] = depends[op] or _is_random(op) or any(per_tower[p] for p in preds)
            order.append(op)
            stack.pop()
        if not depends[tensor.op]:
            raise ArgumentError(
                f"prefetch_queue: {label} ({tensor.name!r}) is not computed from a queuepipe batch: this "
                f"prefetch_queue serves queuepipe pipelines only (pipe.batch, pipe.dequeue() or tensors "
                f"computed from them). A plain TF1 queue behind a prefetch queue turns a worker's error into "
                f"a misleading OutOfRangeError (with a Coordinator) or a hang (without one): build the input "
                f"with queuepipe.from_generator / from_hdf5")
    pipelines = {id(p): p for p, _, _ in found.values()}
    if len(pipelines) > 1:
        raise ArgumentError(f"prefetch_queue: the tensors come from several pipelines "
                            f"({sorted(p.name for p in pipelines.values())}); pass the tensors of one batch")
    dequeues = {d.name for _, d, _ in found.values()}
    if len(dequeues) > 1:
        raise ArgumentError(f"prefetch_queue: the tensors come from different batches of one pipeline "
                            f"({sorted(dequeues)}); pass tensors of one batch (pipe.batch)")
    pipeline = next(iter(pipelines.values()))
    sources = {name: index for name, (_, _, index) in found.items()}
    copied = [op for op in order if per_tower[op]]
    return _Trace(pipeline, sources, copied)


def _is_random(op: tf.Operation) -> bool:
    """A stateful op drawing from a seeded stream (``RandomUniform``, ``TruncatedNormal``...)."""
    return "seed2" in op.node_def.attr and op.op_def.is_stateful


# --------------------------------------------------------------------------------------
# copying the ops between the batch and the tensors onto a fresh batch
# --------------------------------------------------------------------------------------

def _copy_onto(tensors: List[tf.Tensor], trace: _Trace, replace: Dict[str, tf.Tensor],
               copy_number: int) -> List[tf.Tensor]:
    """``tensors`` computed again from the fresh batch outputs in ``replace`` (keyed by the old
    batch outputs' names): the ops between them are imported anew (``import_graph_def`` of those
    ops alone, every other input mapped to the tensor it is), the rest of the graph is shared."""
    if not trace.copied:
        return [replace.get(t.name, t) for t in tensors]
    copied = {op.name for op in trace.copied}
    graph_def = tf1.GraphDef()
    graph_def.versions.CopyFrom(tensors[0].graph.graph_def_versions)
    input_map: Dict[str, Any] = {}
    for op in trace.copied:
        node = graph_def.node.add()
        node.CopyFrom(op.node_def)
        if "_class" in node.attr:  # colocation with ops that are not copied
            del node.attr["_class"]
        seeded = "seed2" in node.attr and (node.attr["seed2"].i or ("seed" in node.attr and node.attr["seed"].i))
        if seeded:  # a fixed seed: each copy its own stream
            node.attr["seed2"].i = (node.attr["seed2"].i + _SEED_STEP * copy_number) % (2 ** 31 - 1)
        for t in op.inputs:
            if t.op.name not in copied:
                input_map[t.name] = replace.get(t.name, t)
        for c in op.control_inputs:
            if c.name not in copied:
                input_map["^" + c.name] = _control_anchor(c, replace)
    wanted = [t.name for t in tensors if t.op.name in copied]
    imported = iter(tf1.import_graph_def(graph_def, input_map=input_map, return_elements=wanted, name="ops"))
    outputs = []
    for t in tensors:
        out = next(imported) if t.op.name in copied else replace.get(t.name, t)
        out.set_shape(t.shape)
        outputs.append(out)
    return outputs


def _control_anchor(op: tf.Operation, replace: Dict[str, tf.Tensor]) -> tf.Tensor:
    """A tensor whose op runs after ``op`` (``import_graph_def`` remaps a control input to a
    tensor's op): a fresh batch output for an old one, the op's own output, or a constant
    that waits for an op without outputs."""
    if op.outputs and op.outputs[0].name in replace:
        return replace[op.outputs[0].name]
    if op.outputs:
        return op.outputs[0]
    with tf.control_dependencies([op]):
        return tf.constant(0, name="after_" + op.name.replace("/", "_"))
