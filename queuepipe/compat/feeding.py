"""From a hand-made "placeholder + enqueue thread" reader to a queuepipe pipeline, in a few lines.

Readers of the TF1 era (WaveNet's ``AudioReader`` and many like it) fed a queue themselves:
a placeholder, a ``PaddingFIFOQueue``, an enqueue op, and Python threads that ran
``sess.run(enqueue, feed_dict={placeholder: value})`` for every value their generator made.
:func:`from_feeds` keeps the generator and the placeholders and gives the rest to queuepipe:
the placeholders' dtypes and shapes become the pipeline's ``output_types`` /
``output_shapes`` (``dynamic_pad=True`` when a shape is not fully known, so each batch is
padded to its longest element with zeros -- or ``b""`` -- as ``PaddingFIFOQueue.dequeue_many``
padded), and queuepipe's workers run the generator.

How the old reader maps:

- ``ph = tf.placeholder(tf.float32, shape=None)``: kept -- ``from_feeds(gen, ph, ...)``;
- ``tf.PaddingFIFOQueue(32, ..., shapes=[(None, 1)])``: ``capacity=32`` (samples), and
  ``output_shapes=(None, 1)`` where the queue knew more than the placeholder;
- ``queue.enqueue([ph])`` and the thread's ``sess.run(enqueue, feed_dict={ph: audio})``: the
  generator yields what was fed (``audio``, or ``{ph: audio}``);
- the thread's ``while not coord.should_stop()`` loop over the files, forever:
  ``num_epochs=None`` (the generator is called again per epoch);
- ``queue.dequeue_many(n)``: ``batch_size=n``; the batch is ``pipe.batch``;
- ``start_threads(sess, n_threads)``: ``workers=n_threads`` (``mode="process"`` for
  Python-heavy decoding) and ``with queuepipe.running(sess):`` (or ``start_queue_runners``,
  or any monitored session);
- ``coord.request_stop(); coord.join(threads)`` (and closing the queue so a blocked enqueue
  ends): leaving ``running()`` stops and joins the workers.

What the generator yields, per element (what one ``sess.run(enqueue, feed_dict=...)`` fed):
a dict keyed by placeholder -- the tensor itself, its name (``"audio:0"``) or op name
(``"audio"``), or the key it has in a dict of placeholders -- or, with several placeholders,
a tuple (or list) of values in placeholder order; with one placeholder, any other value is
that placeholder's value.  A worker *process* cannot hold tensors: yield names or tuples there.
The batch has the structure of ``placeholders``: a tensor for one placeholder, a tuple for a
list or tuple of them, a dict for a dict.

Importing this module imports neither TensorFlow nor anything that does, so a generator
defined next to code that uses it can still run in a TF-free worker process.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Hashable, Iterator, List, Optional, Tuple

import queuepipe
from queuepipe.errors import ArgumentError, ArgumentTypeError, SpecError

if TYPE_CHECKING:  # annotations only: importing the TF layer would import TensorFlow
    from queuepipe.tf.pipeline import Pipeline

__all__ = ["from_feeds", "FeedsToSamples"]

_DERIVED = ("output_types",)   # from_generator options the placeholders decide
_REFUSED = ("resumable",)      # not through this adapter: use from_generator with generator(start=k)


def from_feeds(generator: Any, placeholders: Any, *, batch_size: int = 1,
               **from_generator_options: Any) -> "Pipeline":
    """A pipeline whose workers run ``generator`` and batch what it yields for ``placeholders``.

    generator: a callable returning an iterator (called once per worker and per epoch; it
        must be picklable, e.g. a module-level function, for ``mode="process"``) or an
        iterator object (shared by the workers), yielding one element per old enqueue (see
        the module docstring for the forms an element may take).
    placeholders: the placeholder tensor the old reader fed, or a list/tuple or dict of them;
        their dtypes and shapes define the batch (``output_shapes=`` in the options overrides
        the shapes, in the same structure).
    batch_size: the old ``dequeue_many(n)``'s ``n``.
    from_generator_options: anything ``queuepipe.from_generator`` takes (``workers``,
        ``mode``, ``capacity``, ``num_epochs``, ``allow_smaller_final_batch``, ``shuffle``,
        ``dynamic_pad`` to override the default, ``name`` ...), except ``output_types`` (the
        placeholders' dtypes) and ``resumable``.
    """
    for option in _DERIVED:
        if option in from_generator_options:
            raise ArgumentError(f"from_feeds({option}=...): the placeholders' dtypes are the output types; "
                                f"declare the dtype on the placeholder instead")
    for option in _REFUSED:
        if from_generator_options.get(option):
            raise ArgumentError(f"from_feeds({option}=True) is not supported: use queuepipe.from_generator with "
                                f"a generator taking start=k (README, 'Resuming')")
    kind, keys, tensors = _structure(placeholders)
    dtypes = [t.dtype.base_dtype for t in tensors]
    shapes = [None if t.shape.rank is None else tuple(t.shape.as_list()) for t in tensors]
    output_types, output_shapes = _pack(kind, keys, dtypes), _pack(kind, keys, shapes)
    output_shapes = from_generator_options.pop("output_shapes", output_shapes)
    unknown = any(s is None or None in s for s in shapes)
    from_generator_options.setdefault("dynamic_pad", unknown)
    mapper = FeedsToSamples(generator, kind, keys, _lookup(keys, tensors), _names(keys, tensors))
    if callable(generator) and not hasattr(generator, "__next__"):
        source: Any = mapper
    elif hasattr(generator, "__next__"):
        source = mapper.samples(generator)  # still an iterator object: the workers share it
    else:
        raise ArgumentTypeError(f"from_feeds: generator must be a callable returning an iterator or an iterator "
                                f"object, got {type(generator).__name__}")
    return queuepipe.from_generator(source, output_types, output_shapes, batch_size=batch_size,
                                    **from_generator_options)


class FeedsToSamples:
    """The generator the workers run: the user's, each element turned from the old reader's feed
    (a dict keyed by placeholder, a tuple, a bare value) into a sample of the pipeline's
    structure.  Picklable (names and positions only, no tensors) and TF-free, for worker
    processes."""

    def __init__(self, generator: Any, kind: str, keys: Optional[List[Any]], lookup: Dict[Hashable, int],
                 names: List[str]):
        self.generator = generator
        self.kind = kind            # "single", "tuple" or "dict": the pipeline's structure
        self.keys = keys            # the dict's keys (kind "dict")
        self.lookup = lookup        # what an element's dict may use for a placeholder -> its position
        self.names = names          # per position, for messages

    def __call__(self) -> Iterator[Any]:
        return self.samples(self.generator())

    def samples(self, source: Any) -> Iterator[Any]:
        """The elements of ``source`` as samples; closes ``source`` when closed itself."""
        try:
            for n, element in enumerate(source):
                yield self.sample(element, n)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def sample(self, element: Any, n: int) -> Any:
        """Element ``n`` as a sample: a value (one placeholder), a tuple, or a dict by key."""
        values = self._positional(element, n)
        if self.kind == "single":
            return values[0]
        if self.kind == "tuple":
            return tuple(values)
        return dict(zip(self.keys, values))  # type: ignore[arg-type]

    def _positional(self, element: Any, n: int) -> List[Any]:
        count = len(self.names)
        if isinstance(element, dict):
            values: List[Any] = [_MISSING] * count
            for key, value in element.items():
                i = self._position(key)
                if i is None:
                    raise SpecError(f"from_feeds: element {n} feeds {_describe(key)}, which is not one of the "
                                    f"placeholders {self.names}")
                values[i] = value
            missing = [self.names[i] for i, v in enumerate(values) if v is _MISSING]
            if missing:
                raise SpecError(f"from_feeds: element {n} feeds no value for placeholder(s) {missing}")
            return values
        if count == 1:
            return [element]
        if not isinstance(element, (tuple, list)) or len(element) != count:
            got = (f"a {type(element).__name__} of length {len(element)}" if isinstance(element, (tuple, list))
                   else f"a {type(element).__name__}")
            raise SpecError(f"from_feeds: element {n} must be a tuple of {count} values (placeholders "
                            f"{self.names}, in order) or a dict keyed by placeholder, got {got}")
        return list(element)

    def _position(self, key: Any) -> Optional[int]:
        if not isinstance(key, str) and hasattr(key, "op") and hasattr(key, "name"):
            key = key.name  # a tensor: by its name ("audio:0")
        try:
            return self.lookup.get(key)
        except TypeError:  # an unhashable key
            return None


_MISSING = object()


def _structure(placeholders: Any) -> Tuple[str, Optional[List[Any]], List[Any]]:
    """``(kind, dict keys or None, tensors)`` of ``placeholders``, each checked to be a graph tensor."""
    if isinstance(placeholders, dict):
        kind, keys, tensors = "dict", list(placeholders), list(placeholders.values())
        labels = [f"placeholders[{k!r}]" for k in keys]
    elif isinstance(placeholders, (list, tuple)):
        kind, keys, tensors = "tuple", None, list(placeholders)
        labels = [f"placeholders[{i}]" for i in range(len(tensors))]
    else:
        kind, keys, tensors, labels = "single", None, [placeholders], ["placeholders"]
    if not tensors:
        raise ArgumentError("from_feeds: no placeholders given")
    for label, t in zip(labels, tensors):
        if not (hasattr(t, "op") and hasattr(t, "dtype") and hasattr(t, "shape") and hasattr(t, "name")):
            raise ArgumentTypeError(f"from_feeds: {label} is a {type(t).__name__}, not a tf.compat.v1 placeholder "
                                    f"(or other graph tensor) whose dtype and shape define the batch")
    return kind, keys, tensors


def _pack(kind: str, keys: Optional[List[Any]], leaves: List[Any]) -> Any:
    if kind == "single":
        return leaves[0]
    if kind == "tuple":
        return tuple(leaves)
    return dict(zip(keys, leaves))  # type: ignore[arg-type]


def _lookup(keys: Optional[List[Any]], tensors: List[Any]) -> Dict[Hashable, int]:
    """Every name an element's dict may use for a placeholder -> its position: the tensor name,
    the op name when no other placeholder shares it, and the key in a dict of placeholders."""
    lookup: Dict[Hashable, int] = {}
    op_names: Dict[str, List[int]] = {}
    for i, t in enumerate(tensors):
        lookup[t.name] = i
        op_names.setdefault(t.op.name, []).append(i)
    for name, positions in op_names.items():
        if len(positions) == 1:
            lookup.setdefault(name, positions[0])
    for i, key in enumerate(keys or []):
        lookup[key] = i
    return lookup


def _names(keys: Optional[List[Any]], tensors: List[Any]) -> List[str]:
    """A readable name per position, for messages: the dict key, else the tensor name."""
    return [repr(k) for k in keys] if keys is not None else [t.name for t in tensors]


def _describe(key: Any) -> str:
    name = getattr(key, "name", None)
    return f"tensor {name!r}" if name is not None and not isinstance(key, str) else repr(key)
