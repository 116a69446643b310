"""Keras 3 adapters: queuepipe pipelines as ``keras.utils.PyDataset`` for ``model.fit``,
``model.evaluate`` and ``model.predict``.

What replaces what:

- Keras 2's ``keras.utils.HDF5Matrix(path, "X")`` (with ``fit(..., shuffle="batch")``) ->
  :func:`hdf5_dataset` ``(files, {"x": "/X", "y": "/y"}, batch_size=...)``: the rows are
  read by queuepipe's workers in chunk-aligned blocks (optionally shuffled by block and
  through a row buffer), not fetched one index at a time.  Random access by index, which
  ``HDF5Matrix`` offered, is not the goal: a dataset is read as a stream.
- ``model.fit_generator(gen, steps_per_epoch=n, workers=4, use_multiprocessing=True)`` and
  ``GeneratorEnqueuer`` -> ``model.fit(PipelineDataset(make_pipeline, n), epochs=...)``,
  where ``make_pipeline`` builds e.g. ``queuepipe.from_generator(gen_fn, ..., workers=4,
  mode="process")``: queuepipe's workers run the generator, Keras' own workers are not used.

How a stream fits ``PyDataset``'s contract.  Keras asks for ``len(ds)`` batches per epoch
through ``ds[i]`` and calls ``on_epoch_begin``/``on_epoch_end`` around each epoch.  A
:class:`PipelineDataset` serves the pipeline's batches **in the order the pipeline delivers
them, whatever the index** (``fit(shuffle=True)`` permutes indices; that changes nothing
here -- shuffle in the pipeline instead).  One exception keeps the count exact: before its
first epoch, Keras' TensorFlow backend looks at the first two batches to learn their
shapes; batches looked at outside an epoch are kept and served first in the next epoch,
so none is lost.  When the pipeline's data ends, the next batch starts a new *pass* of it:
with ``make_pipeline`` a callable, it builds a fresh pipeline (in a graph of its own);
with a :class:`queuepipe.Pipeline`, it runs the same pipeline again.  So a finite pipeline
(``num_epochs=1, allow_smaller_final_batch=True``) whose batch count is
``batches_per_epoch`` gives every Keras epoch exactly one pass over the data, and an
endless one (``num_epochs=None``) is cut into epochs of ``batches_per_epoch`` batches.

Keras' own parallelism must stay off -- ``workers=1``, ``use_multiprocessing=False``, which
is what this class passes to ``PyDataset`` -- because queuepipe already parallelises (and
the dataset holds threads and a session, which cannot be pickled to Keras' processes).

Errors: a worker's error is raised by ``ds[i]`` with its original type, and again by every
later read (make a new dataset to try again); inside ``fit``, Keras' TensorFlow backend
reports it as a ``tf.errors.OpError`` whose message carries the original type and text.  Close a dataset when done (``ds.close()`` or ``with ds:``) to stop
its workers at once; garbage collection and interpreter exit also stop them.
"""
from __future__ import annotations

import collections
import itertools
import math
import os
import threading
from typing import Any, Callable, Deque, Iterator, List, Mapping, Optional, Tuple, Union

import keras
import numpy as np

import queuepipe
from queuepipe.errors import ArgumentError, ArgumentTypeError

__all__ = ["PipelineDataset", "hdf5_dataset"]

LOOKAHEAD_LIMIT = 16  # batches that may be looked at outside an epoch (Keras' shape probe takes 2)

PipelineFactory = Callable[[], "queuepipe.Pipeline"]


class PipelineDataset(keras.utils.PyDataset):
    """A ``keras.utils.PyDataset`` serving a queuepipe pipeline's batches as numpy.

    make_pipeline: a callable that builds the pipeline (called in a ``tf.Graph`` of the
        dataset's own, as the default graph: write ``lambda: queuepipe.from_hdf5(...)``),
        once now -- so bad input fails here -- and again for each later pass; or an
        already-built :class:`queuepipe.Pipeline`, run again for each pass.
    batches_per_epoch: ``len(ds)``, the batches of one Keras epoch; None: an endless
        dataset (Keras then needs ``steps_per_epoch``).
    to_keras: turns a batch (the structure of ``pipe.batch``, as numpy) into what Keras
        takes: a tuple ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``, or a dict for
        ``x`` alone; e.g. ``lambda b: (b["X"], b["y"])``.  Default: the batch as it is.
    config: the ``tf.compat.v1.ConfigProto`` of the sessions that run the pipeline.

    Batches are served in delivery order, whatever index Keras asks for (see the module's
    docstring for epochs and passes).  Thread-safe; Keras' own ``workers`` stay at 1.
    """

    def __init__(self, make_pipeline: Union[PipelineFactory, "queuepipe.Pipeline"],
                 batches_per_epoch: Optional[int], *, to_keras: Optional[Callable[[Any], Any]] = None,
                 config: Any = None):
        super().__init__(workers=1, use_multiprocessing=False)
        if batches_per_epoch is not None and (isinstance(batches_per_epoch, bool) or
                                              not isinstance(batches_per_epoch, (int, np.integer)) or
                                              batches_per_epoch < 1):
            raise ArgumentError(f"batches_per_epoch must be an int >= 1 (or None: endless), got {batches_per_epoch!r}")
        if to_keras is not None and not callable(to_keras):
            raise ArgumentTypeError(f"to_keras must be callable, got {type(to_keras).__name__}")
        self._batches_per_epoch = None if batches_per_epoch is None else int(batches_per_epoch)
        self._to_keras = to_keras
        self._config = config
        self._lock = threading.RLock()
        self._stream: Optional[Iterator[Any]] = None  # the current pass's numpy_batches()
        self._ahead: Deque[Any] = collections.deque()  # batches looked at outside an epoch
        self._in_epoch = False
        self._closed = False
        self._failure: Optional[BaseException] = None  # a worker's error: the dataset is done
        self.passes = 0  # passes started so far (each a run of the pipeline)
        if isinstance(make_pipeline, _pipeline_class()):
            self._factory: Optional[PipelineFactory] = None
            self._pipe: Optional[queuepipe.Pipeline] = make_pipeline
        elif callable(make_pipeline):
            self._factory = make_pipeline
            self._pipe = self._build()
        else:
            raise ArgumentTypeError(f"make_pipeline must be a callable that builds a queuepipe pipeline, or a "
                                    f"Pipeline; got {type(make_pipeline).__name__}")

    # -- Keras' contract ---------------------------------------------------------------------------

    @property
    def num_batches(self) -> Optional[int]:
        return self._batches_per_epoch

    def __len__(self) -> int:
        if self._batches_per_epoch is None:
            raise TypeError("an endless PipelineDataset has no len(); give Keras steps_per_epoch")
        return self._batches_per_epoch

    def __getitem__(self, index: int) -> Any:
        """The next batch of the stream (``index`` is not a position in the data: see the
        class docstring); outside an epoch, the ``index``-th batch ahead, kept for the next
        epoch."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"PipelineDataset indices are ints, got {type(index).__name__}")
        if index < 0 or (self._batches_per_epoch is not None and index >= self._batches_per_epoch):
            raise IndexError(f"batch index {index} out of range for {self._batches_per_epoch} batches per epoch")
        with self._lock:
            if self._in_epoch:
                batch = self._ahead.popleft() if self._ahead else self._read()
            else:
                if index >= LOOKAHEAD_LIMIT:
                    raise IndexError(
                        f"outside an epoch only the next {LOOKAHEAD_LIMIT} batches can be looked at (index "
                        f"{index}): iterate with `for batch in ds`, or call on_epoch_begin() first")
                while len(self._ahead) <= index:
                    self._ahead.append(self._read())
                batch = self._ahead[index]
        return batch if self._to_keras is None else self._to_keras(batch)

    def on_epoch_begin(self) -> None:
        with self._lock:
            self._in_epoch = True

    def on_epoch_end(self) -> None:
        with self._lock:
            self._in_epoch = False

    def __iter__(self) -> Iterator[Any]:
        """One epoch (endless for an endless dataset), as Keras would read it."""
        self.on_epoch_begin()
        try:
            indices = range(self._batches_per_epoch) if self._batches_per_epoch is not None else itertools.count()
            for i in indices:
                yield self[i]
        finally:
            self.on_epoch_end()

    # -- life cycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the pipeline's workers now and drop batches read ahead; later reads fail."""
        with self._lock:
            self._closed = True
            self._ahead.clear()
            stream, self._stream = self._stream, None
            self._pipe = None
            if stream is not None:
                stream.close()

    def __enter__(self) -> "PipelineDataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown, or a half-made object
            pass

    def __getstate__(self) -> Any:
        raise TypeError("a PipelineDataset cannot be pickled (it runs threads and a session): keep Keras' "
                        "workers=1 and use_multiprocessing=False -- queuepipe's workers already run in parallel")

    def __repr__(self) -> str:
        return f"<PipelineDataset {self._batches_per_epoch} batches/epoch, passes={self.passes}>"

    # -- the stream --------------------------------------------------------------------------------

    def _build(self) -> "queuepipe.Pipeline":
        import tensorflow as tf
        with tf.Graph().as_default():
            pipe = self._factory()
        if not isinstance(pipe, _pipeline_class()):
            raise ArgumentTypeError(f"make_pipeline must return a queuepipe Pipeline, got {type(pipe).__name__}")
        return pipe

    def _read(self) -> Any:
        """The stream's next batch; a pass that has ended is followed by a new one."""
        for _ in range(2):
            if self._failure is not None:
                raise self._failure
            fresh = self._stream is None
            if fresh:
                if self._closed:
                    raise ArgumentError("this PipelineDataset is closed")
                if self._pipe is None:
                    self._pipe = self._build()
                self._stream = self._pipe.numpy_batches(config=self._config)
                self.passes += 1
            try:
                return next(self._stream)
            except StopIteration:
                self._end_pass()
                if fresh:
                    break
            except Exception as exc:
                self._end_pass()
                self._failure = exc  # raised again by every later read, as sess.run would
                raise
            except BaseException:  # Ctrl-C: the pass is stopped; a later read starts a new one
                self._end_pass()
                raise
        raise ArgumentError("the pipeline delivered no batch in a whole pass (an empty selection or generator, "
                            "or fewer rows than one batch without allow_smaller_final_batch)")

    def _end_pass(self) -> None:
        self._stream = None
        if self._factory is not None:
            self._pipe = None  # the next pass builds a fresh pipeline


def hdf5_dataset(files: Any, datasets: Mapping[str, Any], *, batch_size: int, workers: int = 1,
                 mode: str = "thread", shuffle: bool = False, seed: Optional[int] = None, rows: Any = None,
                 shard: Optional[Tuple[int, int]] = None, drop_remainder: bool = False, config: Any = None,
                 **options: Any) -> PipelineDataset:
    """A Keras ``PyDataset`` of HDF5 rows, one pass over the selection per Keras epoch.

    datasets: which HDF5 datasets feed which Keras role: ``{"x": ..., "y": ..., "sample_weight":
        ...}`` ("x" required), each a dataset path, a list of paths (a multi-input model's
        inputs, in order) or a dict ``{input_name: path}`` (named inputs); sample weights
        are one path.  Batches are ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``.
    batch_size / workers / mode / shuffle / seed / rows / shard: as in
        ``queuepipe.from_hdf5``; pass ``k`` (Keras epoch ``k`` in ``fit``) shuffles with
        ``seed + k``, so epochs differ and a run is reproducible.
    drop_remainder: False (default): the last, smaller batch of each pass is delivered and
        ``len(ds) = ceil(rows / batch_size)``; True: it is dropped, ``len(ds) = rows // batch_size``.
    options: other ``from_hdf5`` options (``min_after_dequeue``, ``capacity``,
        ``batches_per_block``, ``stall_timeout``, ``allow_external``, ``name`` ...).

    ``predict`` returns rows in delivery order: file (selection) order with
    ``shuffle=False`` and ``workers=1``; several workers interleave blocks.
    """
    refused = sorted(set(options) & {"num_epochs", "allow_smaller_final_batch", "map_fn", "output_types",
                                     "output_shapes", "map_per_sample", "with_row_ids"})
    if refused:
        raise ArgumentError(f"hdf5_dataset() sets {', '.join(refused)} itself (one pass per Keras epoch; batches "
                            f"are the roles' datasets); for other pipelines use PipelineDataset(make_pipeline, n)")
    import tensorflow as tf
    paths, to_keras = _roles(datasets)
    build = _HDF5Passes(dict(files=files, datasets=tuple(paths), rows=rows, shard=shard, batch_size=batch_size,
                             workers=workers, mode=mode, shuffle=shuffle, num_epochs=1,
                             allow_smaller_final_batch=not drop_remainder, **options), seed)
    with tf.Graph().as_default():
        build.first = build()  # every argument and file checked here, with from_hdf5's errors
    n_rows = _rows_per_pass(files, paths, rows, shard, bool(options.get("allow_external", False)))
    batches = n_rows // batch_size if drop_remainder else math.ceil(n_rows / batch_size)
    if batches < 1:
        raise ArgumentError(f"hdf5_dataset(): {n_rows} selected rows make no batch of {batch_size}"
                            f"{' (drop_remainder=True)' if drop_remainder else ''}")
    return PipelineDataset(build, batches, to_keras=to_keras, config=config)


class _HDF5Passes:
    """Builds the pipeline of one pass over the selection; pass ``k`` is seeded ``seed + k``."""

    def __init__(self, kwargs: dict, seed: Optional[int]):
        self.kwargs = kwargs
        self.seed = seed
        self.built = 0
        self.first: Optional[queuepipe.Pipeline] = None  # built ahead to check the arguments: pass 0's

    def __call__(self) -> "queuepipe.Pipeline":
        if self.first is not None:
            first, self.first = self.first, None
            return first
        seed = None if self.seed is None else self.seed + self.built
        self.built += 1
        return queuepipe.from_hdf5(seed=seed, **self.kwargs)


def _roles(datasets: Mapping[str, Any]) -> Tuple[List[str], Callable[[Tuple[np.ndarray, ...]], tuple]]:
    """``{"x": ..., "y": ..., "sample_weight": ...}`` -> (dataset paths in column order, a function
    turning the pipeline's tuple of columns into Keras' ``(x, y, sample_weight)`` tuple)."""
    if not isinstance(datasets, Mapping):
        raise ArgumentTypeError(f"datasets must be a dict like {{'x': '/X', 'y': '/y'}}, got {type(datasets).__name__}")
    unknown = sorted(set(datasets) - {"x", "y", "sample_weight"})
    if unknown or "x" not in datasets:
        raise ArgumentError(f"datasets takes the keys 'x' (required), 'y' and 'sample_weight'; got {sorted(datasets)}")
    if "sample_weight" in datasets and "y" not in datasets:
        raise ArgumentError("datasets: 'sample_weight' needs 'y' (Keras reads (x, y, sample_weight))")
    paths: List[str] = []

    def place(spec: Any, role: str, nested: bool = True) -> Callable[[tuple], Any]:
        if isinstance(spec, (str, os.PathLike)):
            i = len(paths)
            paths.append(os.fspath(spec))
            return lambda cols: cols[i]
        if nested and isinstance(spec, Mapping) and spec:
            parts = {name: place(p, role, nested=False) for name, p in spec.items()}
            return lambda cols: {name: part(cols) for name, part in parts.items()}
        if nested and isinstance(spec, (list, tuple)) and spec:
            items = [place(p, role, nested=False) for p in spec]
            return lambda cols: tuple(part(cols) for part in items)
        raise ArgumentTypeError(f"datasets[{role!r}] must be a dataset path, a non-empty list of paths or a dict "
                                f"{{input_name: path}}; got {spec!r}")

    roles = [place(datasets[r], r, nested=(r != "sample_weight"))
             for r in ("x", "y", "sample_weight") if r in datasets]
    return paths, lambda cols: tuple(role(cols) for role in roles)


def _rows_per_pass(files: Any, paths: List[str], rows: Any, shard: Optional[Tuple[int, int]],
                   allow_external: bool) -> int:
    """Rows one pass delivers: queuepipe's own reading of ``files`` and ``rows=`` (the functions
    ``from_hdf5`` uses), so ``len(ds)`` agrees with what the pipeline delivers."""
    from queuepipe.sources.hdf5.inspect import inspect_files, resolve_files
    from queuepipe.sources.hdf5.selection import select
    layout = inspect_files(resolve_files(files), tuple(paths), allow_external=allow_external)
    selection = select(rows, [(f.path, f.n_rows) for f in layout.files])
    if shard is not None:
        selection = selection.shard(*shard)
    return selection.size


def _pipeline_class() -> type:
    from queuepipe.tf.pipeline import Pipeline
    return Pipeline
