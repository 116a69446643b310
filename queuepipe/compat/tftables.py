"""A tftables-compatible facade over queuepipe: a tftables program runs with one import changed.

::

    import tftables                                  # before
    import queuepipe.compat.tftables as tftables     # after

The names and calls are tftables' (1.1): ``open_file(filename, batch_size)``,
``reader.get_batch(path, cyclic=..., ordered=...)``, ``reader.get_fifoloader(queue_size,
inputs, threads)``, ``reader.feed()``, ``reader.close()``, ``FIFOQueueLoader(reader, size,
inputs, threads)`` with ``dequeue()``, ``start(sess)`` / ``stop(sess)``, ``begin(sess,
catch_termination=True)`` and ``catch_termination()``, and ``load_dataset(filename,
dataset_path, batch_size, queue_size=8, input_transform=None, ordered=False, cyclic=True,
processes=None, threads=None)``.  Underneath, one ``queuepipe.from_hdf5`` pipeline per loader
reads every dataset the reader was asked for, so a program gets queuepipe's workers (threads
or processes), its error delivery (a worker's or a damaged file's error is raised from
``sess.run`` and, with its original type, when the loader stops) and a clean exit.

How it maps:

- ``get_batch(path)`` returns placeholders (a dict of them, nested, for a compound dataset),
  as tftables does, with queuepipe's dtypes and a ``[batch_size, ...]`` shape.  The graph
  you build on them (casts, one-hot...) is copied onto the pipeline's dequeued batch when
  the loader is made; ``dequeue()`` returns the copies of ``inputs``, in order (one tensor
  for one input, else a list).  So the transformation runs in the training step, after the
  queue, rather than in tftables' loader threads before it.
- ``cyclic=True`` -> ``num_epochs=None``; ``cyclic=False`` -> one pass, then
  ``OutOfRangeError`` (``begin(sess)`` and ``catch_termination()`` end the loop quietly).
- ``ordered=False`` -> ``shuffle=True``; ``ordered=True`` -> file order, read by one worker.
  All datasets of a reader come from one pipeline, so they stay row-aligned in either mode
  (tftables required ``ordered=True`` for that).  A reader whose ``get_batch`` calls ask for
  different ``cyclic`` values is refused; one ``ordered=True`` makes the whole reader ordered.
- ``processes=P`` (``load_dataset``; ``n_procs=P`` in ``get_batch``) -> ``mode="process",
  workers=P``; otherwise ``threads=T`` -> ``T`` thread workers; neither -> one thread worker.
  An ordered reader uses one worker whatever was asked.
- ``queue_size`` (batches) -> the pipeline's capacity; ``batch_size`` as given.  Batches are
  always whole: a last partial batch of a non-cyclic pass is dropped, as tftables did.
- ``open_file(filename, batch_size, **options)``: the options are ``queuepipe.from_hdf5``'s
  (``mode``, ``workers``, ``seed``, ``min_after_dequeue``, ``stall_timeout``,
  ``allow_external``...), not multitables' (those are refused by name).

What differs: bad input (a missing file or dataset) is refused by ``get_batch`` /
``load_dataset`` with queuepipe's error naming the file and dataset; a worker failure makes
``sess.run`` raise an ``OpError`` carrying the original error, and ``stop()`` / leaving
``begin()`` re-raise the original exception; ``reader.close()`` stops everything the reader
started; no thread or process outlives the program, even without ``stop()``.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf

import queuepipe
from queuepipe.errors import ArgumentError, ArgumentTypeError, GraphModeError

__all__ = ["open_file", "load_dataset", "FileReader", "FIFOQueueLoader"]

tf1 = tf.compat.v1
log = logging.getLogger("queuepipe")

_OWN_ARGS = {"files", "datasets", "batch_size", "shuffle", "num_epochs", "capacity", "rows", "with_row_ids",
             "map_fn", "output_types", "output_shapes", "map_per_sample", "allow_smaller_final_batch"}


def open_file(filename: str, batch_size: int, **kw_args: Any) -> "FileReader":
    """A reader of ``batch_size``-row batches of datasets of the HDF5 file ``filename``
    (``kw_args``: ``queuepipe.from_hdf5`` options, see the module docstring)."""
    return FileReader(filename, batch_size, **kw_args)


def load_dataset(filename: str, dataset_path: str, batch_size: int, queue_size: int = 8,
                 input_transform: Optional[Callable[[Any], Any]] = None, ordered: bool = False,
                 cyclic: bool = True, processes: Optional[int] = None,
                 threads: Optional[int] = None) -> "FIFOQueueLoader":
    """A loader of one dataset, as tftables' ``load_dataset``: ``input_transform`` (TF ops on
    the batch -- a tensor, or a dict of tensors for a compound dataset -- returning a tensor,
    a tuple or a list) is applied to the dequeued batch; ``loader.dequeue()`` returns its
    results in the same order.  Stopping the loader closes its reader."""
    reader = FileReader(filename, batch_size)
    batch = reader.get_batch(dataset_path, cyclic=cyclic, ordered=ordered, n_procs=processes)
    if input_transform is not None:
        processed = input_transform(batch)
    elif isinstance(batch, dict):
        raise ValueError("Table datasets must have an input transformation.")
    else:
        processed = batch
    loader = FIFOQueueLoader(reader, queue_size, _as_list(processed), threads=threads)
    loader.close_reader = True
    return loader


class FileReader:
    """Batches of datasets of one HDF5 file, as tftables' ``FileReader``."""

    def __init__(self, filename: str, batch_size: int, **kw_args: Any):
        allowed = set(inspect.signature(queuepipe.from_hdf5).parameters) - _OWN_ARGS
        unknown = sorted(set(kw_args) - allowed)
        if unknown:
            raise ArgumentTypeError(f"open_file() got {', '.join(unknown)}: its options are queuepipe.from_hdf5's "
                                    f"({', '.join(sorted(allowed))}), not multitables'")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.filename = filename
        self.batch_size = batch_size
        self.options = dict(kw_args)
        self.paths: List[str] = []                           # datasets asked for, each once
        self.placeholders: List[Tuple[tf.Tensor, str]] = []  # (placeholder, key in the pipeline's batch)
        self.cyclic: Optional[bool] = None
        self.ordered = False
        self.processes: Optional[int] = None
        self._started: "weakref.WeakSet[Any]" = weakref.WeakSet()  # loaders and feeds to stop at close()

    def get_batch(self, path: str, **kw_args: Any) -> Any:
        """Placeholders for one batch of the dataset at ``path`` (a dict of them for a compound
        dataset); ``cyclic`` (default True) and ``ordered`` (default True) as in tftables;
        ``n_procs``: read with that many worker processes."""
        if tf.executing_eagerly():
            raise GraphModeError("tftables' get_batch makes graph placeholders and TensorFlow is in eager mode here: "
                                 "call tf.compat.v1.disable_eager_execution() at program start, or build inside "
                                 "`with tf.Graph().as_default():`")
        cyclic = bool(kw_args.pop("cyclic", True))
        ordered = bool(kw_args.pop("ordered", True))
        n_procs = kw_args.pop("n_procs", None)
        if kw_args:
            raise ArgumentTypeError(f"get_batch() got unsupported arguments {sorted(kw_args)} "
                                    f"(supported: cyclic, ordered, n_procs)")
        if self.cyclic is not None and cyclic != self.cyclic:
            raise ArgumentError(f"get_batch({path!r}, cyclic={cyclic}): this reader's other datasets are read with "
                                f"cyclic={self.cyclic}; one reader's datasets are read together (open another "
                                f"reader for the other mode)")
        spec = _probe(self.filename, path, self.batch_size, self.options.get("allow_external", False))
        self.cyclic = cyclic
        self.ordered = self.ordered or ordered
        if n_procs is not None:
            self.processes = n_procs
        if path not in self.paths:
            self.paths.append(path)
        key = f"d{self.paths.index(path)}"
        if not isinstance(spec, dict):
            placeholder = tf1.placeholder(spec[0], [self.batch_size] + spec[1], name="tftables_batch")
            self.placeholders.append((placeholder, key))
            return placeholder
        flat = {}
        for field, (dtype, shape) in spec.items():
            flat[field] = tf1.placeholder(dtype, [self.batch_size] + shape, name="tftables_batch")
            self.placeholders.append((flat[field], f"{key}.{field}"))
        return _nest(flat)

    def feed(self) -> Iterator[Dict[tf.Tensor, Any]]:
        """A generator of ``feed_dict``s, one batch of every dataset asked for by ``get_batch``
        (run by a pipeline of its own, in its own graph; closing the generator stops it)."""
        self._check_requested()
        graph = tf.Graph()
        pipe = self._pipeline(graph, capacity_batches=None, threads=None)
        with contextlib.closing(pipe.numpy_batches()) as batches:
            self._started.add(batches)
            for batch in batches:
                yield {placeholder: batch[key] for placeholder, key in self.placeholders}

    def get_fifoloader(self, queue_size: int, inputs: Sequence[tf.Tensor],
                       threads: Optional[int] = None) -> "FIFOQueueLoader":
        """A :class:`FIFOQueueLoader` of ``inputs`` (tensors computed from this reader's batches)."""
        return FIFOQueueLoader(self, queue_size, inputs, threads=threads)

    def close(self) -> None:
        """Stop every loader started with ``start`` and every ``feed()`` generator of this reader."""
        for item in list(self._started):
            if isinstance(item, FIFOQueueLoader):
                item._stop_running()
            else:
                item.close()  # a feed()'s numpy_batches iterator

    # -- internals ---------------------------------------------------------------------------------

    def _check_requested(self) -> None:
        if not self.paths:
            raise ArgumentError("no dataset requested: call reader.get_batch(path) first")

    def _pipeline(self, graph: tf.Graph, capacity_batches: Optional[int], threads: Optional[int]) -> Any:
        """One pipeline over every dataset asked for, in ``graph``."""
        options = dict(self.options)
        if self.processes is not None:
            options.setdefault("mode", "process")
            options.setdefault("workers", self.processes)
        elif threads is not None:
            options.setdefault("workers", threads)
        if self.ordered and options.get("workers", 1) != 1:
            log.info("queuepipe.compat.tftables: ordered access reads with one worker (asked: %s)", options["workers"])
            options["workers"] = 1
        if capacity_batches is not None:
            options["capacity"] = capacity_batches * self.batch_size
        with graph.as_default():
            return queuepipe.from_hdf5(self.filename, {f"d{i}": p for i, p in enumerate(self.paths)},
                                       batch_size=self.batch_size, shuffle=not self.ordered,
                                       num_epochs=None if self.cyclic else 1, **options)


class FIFOQueueLoader:
    """A queue of ``inputs`` filled in the background, as tftables' ``FIFOQueueLoader``."""

    def __init__(self, reader: FileReader, size: int, inputs: Any, threads: Optional[int] = 1):
        reader._check_requested()
        inputs = _as_list(inputs)
        if not inputs or not all(isinstance(t, tf.Tensor) for t in inputs):
            raise ArgumentTypeError("inputs must be a non-empty list of tensors made from reader.get_batch()")
        graph = inputs[0].graph
        if any(t.graph is not graph for t in inputs) or any(p.graph is not graph for p, _ in reader.placeholders):
            raise ArgumentError("inputs and the reader's get_batch() placeholders must be in one graph")
        self.reader = reader
        self.pipeline = reader._pipeline(graph, capacity_batches=size, threads=threads)
        batch = self.pipeline.batch
        with graph.as_default(), tf1.name_scope("tftables_loader"):
            self._outputs = _rebind(inputs, {p.ref(): batch[key] for p, key in reader.placeholders})
        self.close_reader = False
        self._stack: Optional[contextlib.ExitStack] = None

    def dequeue(self) -> Any:
        """The dequeued ``inputs``: one tensor for one input, else a list in ``inputs``' order
        (the same tensors at every call: running them takes one batch)."""
        return self._outputs[0] if len(self._outputs) == 1 else list(self._outputs)

    def start(self, sess: tf1.Session) -> None:
        """Start filling the queue in ``sess`` (``queuepipe.running(sess, pipelines=[...])``)."""
        if self._stack is not None:
            raise RuntimeError("This loader has already been started.")
        stack = contextlib.ExitStack()
        stack.enter_context(queuepipe.running(sess, pipelines=[self.pipeline]))
        self._stack = stack
        self.reader._started.add(self)

    def stop(self, sess: tf1.Session) -> None:
        """Stop and join the workers; a worker's failure is raised here with its original type."""
        try:
            self._stop_running()
        finally:
            if self.close_reader:
                self.reader.close()

    @staticmethod
    def catch_termination() -> ContextManager[None]:
        """Ends a loop quietly at the end of a non-cyclic pass (suppresses ``OutOfRangeError``)."""
        return contextlib.suppress(tf.errors.OutOfRangeError)

    @contextlib.contextmanager
    def begin(self, tf_session: tf1.Session, catch_termination: bool = True) -> Iterator[None]:
        """``with loader.begin(sess):`` -- start, run the body (an end of data ends it quietly
        with ``catch_termination``), stop.  A worker failure is raised with its original type."""
        if self._stack is not None:
            raise RuntimeError("This loader has already been started.")
        try:
            with queuepipe.running(tf_session, pipelines=[self.pipeline]):
                if catch_termination:
                    with self.catch_termination():
                        yield
                else:
                    yield
        finally:
            if self.close_reader:
                self.reader.close()

    def _stop_running(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()


# -- helpers ---------------------------------------------------------------------------------------

def _as_list(value: Any) -> List[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    return [value]


def _probe(filename: str, path: str, batch_size: int, allow_external: bool) -> Any:
    """``(dtype, row shape)`` of the dataset as queuepipe delivers it, or a dict of them per
    compound field (flat ``"a.b"`` keys): from a pipeline built and dropped in a graph of its own
    (nothing is started), so bad input is refused with queuepipe's own errors."""
    with tf.Graph().as_default():
        probe = queuepipe.from_hdf5(filename, path, batch_size=batch_size, allow_external=allow_external)
    if isinstance(probe.batch, dict):
        return {k: (t.dtype, list(t.shape[1:])) for k, t in probe.batch.items()}
    return probe.batch.dtype, list(probe.batch.shape[1:])


def _nest(flat: Dict[str, Any]) -> Dict[str, Any]:
    """``{"a.b": x, "c": y}`` -> ``{"a": {"b": x}, "c": y}`` (tftables' nested compound dicts)."""
    out: Dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _rebind(outputs: List[tf.Tensor], replace: Dict[Any, tf.Tensor]) -> List[tf.Tensor]:
    """``outputs`` recomputed with the placeholders in ``replace`` (keys: ``tensor.ref()``)
    replaced by their values: the ops between them are copied (``import_graph_def`` of just
    those ops, every other input mapped to the existing tensor), the rest is shared."""
    sources = {ref.deref().op for ref in replace}
    depends = _depending_ops(outputs, sources)
    copied = [op for op, dep in depends.items() if dep and op not in sources]
    if not copied:
        return [replace.get(t.ref(), t) for t in outputs]
    copied_set = set(copied)
    graph_def = tf1.GraphDef()
    graph_def.versions.CopyFrom(outputs[0].graph.graph_def_versions)
    input_map: Dict[str, tf.Tensor] = {}
    for op in copied:
        node = graph_def.node.add()
        node.CopyFrom(op.node_def)
        if "_class" in node.attr:  # colocation with ops that are not copied
            del node.attr["_class"]
        for t in op.inputs:
            if t.op not in copied_set:
                input_map[t.name] = replace.get(t.ref(), t)
        for c in op.control_inputs:
            if c not in copied_set:
                if not c.outputs:
                    raise ArgumentError(f"an input depends on a control dependency on {c.name!r}, which has no "
                                        f"output to re-bind; apply it to loader.dequeue()'s tensors instead")
                input_map["^" + c.name] = c.outputs[0]
    wanted = [t.name for t in outputs if t.op in copied_set]
    imported = iter(tf1.import_graph_def(graph_def, input_map=input_map, return_elements=wanted, name="inputs"))
    return [next(imported) if t.op in copied_set else replace.get(t.ref(), t) for t in outputs]


def _depending_ops(outputs: List[tf.Tensor], sources: set) -> Dict[Any, bool]:
    """Every op ``outputs`` depend on -> whether it depends on one of ``sources`` (iterative:
    input graphs can be deep).  A foreign placeholder or a graph cycle (TF1 loops) is refused."""
    depends: Dict[Any, bool] = {}
    visiting = set()
    stack = [t.op for t in outputs]
    while stack:
        op = stack[-1]
        if op in depends:
            stack.pop()
            continue
        if op in sources:
            depends[op] = True
            stack.pop()
            continue
        if op.type in ("Placeholder", "PlaceholderV2"):
            raise ArgumentError(f"loader inputs depend on placeholder {op.name!r}, which is not one of this reader's "
                                f"get_batch() placeholders")
        preds = [t.op for t in op.inputs] + list(op.control_inputs)
        pending = [p for p in preds if p not in depends]
        if pending and op not in visiting:
            visiting.add(op)
            stack.extend(pending)
            continue
        if pending:
            raise ArgumentError(f"loader inputs are computed by a TF1 control-flow loop ({op.name!r}); apply it to "
                                f"loader.dequeue()'s tensors instead")
        depends[op] = any(depends[p] for p in preds)
        stack.pop()
    return depends
