"""The public entry points: ``from_generator``, ``from_hdf5`` and ``running``.

Each front door checks its own arguments, builds its source and hands it, with one
:class:`~queuepipe.options.PipelineOptions`, to :func:`queuepipe.build.build`.  This
module imports neither TensorFlow nor h5py: they are imported when a pipeline is
built, so ``import queuepipe`` stays cheap and TF-free (worker processes rely on it).
"""
from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Tuple

import numpy as np

from .errors import ArgumentError, ArgumentTypeError, HDF5InputError, HDF5TypeError
from .options import PipelineOptions

if TYPE_CHECKING:  # annotations only: importing these here would import TensorFlow
    import tensorflow as tf

    from .tf.pipeline import Pipeline


def from_generator(generator: Any, output_types: Any, output_shapes: Any = None, *, batch_size: int,
                   workers: int = 1, mode: str = "thread", yields: str = "samples",
                   shuffle: bool = False, min_after_dequeue: Optional[int] = None,
                   seed: Optional[int] = None, num_epochs: Optional[int] = 1,
                   capacity: Optional[int] = None, allow_smaller_final_batch: bool = False,
                   dynamic_pad: bool = False, batches_per_block: Optional[int] = None,
                   name: Optional[str] = None, start_method: Optional[str] = None,
                   overlap_epochs: bool = False, stall_timeout: Optional[float] = None,
                   resumable: bool = False) -> "Pipeline":
    """Batch tensors fed from a Python generator by ``workers`` background workers.

    generator: a callable returning an iterator -- called once per worker (and per
        epoch), so ``my_obj.generate_data`` works unchanged and every worker runs its
        own instance; use ``queuepipe.worker_info()`` inside it to shard or seed.  Or an
        iterator object, shared by all workers behind a lock (only conversion and
        enqueueing then overlap with training; ``num_epochs`` must be 1).
    output_types: a dtype, a tuple of dtypes or a dict of dtypes (TF or numpy); ``.batch``
        has the same structure.  ``tf.string`` fields take str/bytes.
    output_shapes: the per-sample shapes in the same structure (None dims allowed); static
        batch shapes follow from them.  Unknown dims take the first sample's shape unless
        ``dynamic_pad=True``, which pads each batch to its longest sample.
    yields: "samples" (each item one sample) or "blocks" (each item a structure of arrays
        with a leading row dimension -- many rows per Python step, the fast path).
    shuffle / min_after_dequeue / seed: shuffle rows within each worker through a buffer
        of at least ``min_after_dequeue`` rows (default: 16 batches or two blocks, whichever is
        more, capped at the worker's share of 256 MiB when every shape is declared -- but at
        least one batch), seeded per worker; drained at each epoch's end unless
        ``overlap_epochs``.
    num_epochs: times each worker's generator is called and run to exhaustion (None:
        forever).  After the last one, the remaining rows are delivered (a final smaller
        batch with ``allow_smaller_final_batch``), then ``sess.run`` raises OutOfRangeError.
    overlap_epochs: False (default): epochs are delivered in order -- every row of epoch
        k (of every worker) is in the queue before any row of epoch k+1, except that the
        one batch at each boundary may end with the next epoch's first rows; the shuffle
        buffer is drained at each epoch's end (as TF1's ``batch`` over an epoch-ordered
        ``string_input_producer``, or ``tf.data``'s ``shuffle().repeat()``).  True: epochs
        run on without a pause and the shuffle buffer mixes rows of neighbouring epochs
        (as TF1's ``shuffle_batch``, or ``repeat().shuffle()``): each row is still
        delivered once per epoch in total, not per epoch in order.
    stall_timeout: seconds a worker may spend producing one block before it is reported
        as stalled (``queuepipe.WorkerStalledError`` at ``sess.run``, naming what it was
        doing, e.g. the file and rows being read); a stalled worker process is killed.
        None (default): never (a slow generator is not an error).
    capacity: samples buffered in the queue (rounded up to whole batches).
    mode: "thread" or "process" (a child process per worker; see README for when).
    resumable: keep the consumer's position in the graph, in variables checkpoints save
        with the model; a session restored from a checkpoint resumes every worker's stream
        at the first sample not yet used (README, "Resuming").  The generator opts in:
        it is called as ``generator(start=k)`` and must begin with sample ``k`` of this
        worker's epoch (``queuepipe.worker_info()`` gives the worker, the epoch and its
        seed), the same samples in the same order as before.  Needs a callable, no
        ``shuffle`` (shuffle inside the generator, seeded from the worker's seed and the
        epoch), and with several workers ``num_epochs=1`` (an endless generator is one
        endless epoch) or ``overlap_epochs=True``; the same number of workers on restore.
    """
    from .build import build
    from .options import resolved_sizes
    from .sources.generator import GeneratorSource
    from .spec import Spec
    from .tf.pipeline import tf_dtypes_of

    if yields not in ("samples", "blocks"):
        raise ArgumentError(f"yields must be 'samples' or 'blocks', got {yields!r}")
    options = PipelineOptions(batch_size=batch_size, workers=workers, mode=mode, shuffle=shuffle,
                              min_after_dequeue=min_after_dequeue, seed=seed, num_epochs=num_epochs,
                              capacity=capacity, allow_smaller_final_batch=allow_smaller_final_batch,
                              batches_per_block=batches_per_block, name=name, start_method=start_method,
                              overlap_epochs=overlap_epochs, stall_timeout=stall_timeout, resumable=bool(resumable))
    ledger = None
    if resumable:
        _check_resumable_generator(generator, options)
        from .workers.resume import StreamLedger
        ledger = StreamLedger(workers)
    _, np_types = tf_dtypes_of(output_types)
    spec = Spec.build(np_types, output_shapes, dynamic_pad=dynamic_pad)
    source = GeneratorSource(generator, spec, yields=yields, num_epochs=num_epochs, chunk_rows=batch_size,
                             ledger=ledger)
    if source.shared is not None:
        if num_epochs != 1:
            raise ArgumentError("an iterator object can only be run once (num_epochs=1); pass a callable "
                                "that returns a new iterator (e.g. obj.generate_data) to repeat epochs")
        if mode == "process":
            raise ArgumentError("mode='process' needs a callable that returns an iterator (each child "
                                "process runs its own); an iterator object cannot be shared across processes")
    return build(source, output_types, options, resolved_sizes(options, spec))


def from_hdf5(files: Any, datasets: Any, *, rows: Any = None, batch_size: int, workers: int = 1,
              mode: str = "thread", shuffle: bool = False, min_after_dequeue: Optional[int] = None,
              seed: Optional[int] = None, num_epochs: Optional[int] = 1,
              map_fn: Optional[Callable[[Any], Any]] = None, output_types: Any = None,
              output_shapes: Any = None, map_per_sample: bool = False,
              shard: Optional[Tuple[int, int]] = None, with_row_ids: bool = False,
              allow_external: bool = False,
              capacity: Optional[int] = None, allow_smaller_final_batch: bool = False,
              batches_per_block: Optional[int] = None, name: Optional[str] = None,
              start_method: Optional[str] = None, overlap_epochs: bool = False,
              stall_timeout: Optional[float] = None, resumable: bool = False) -> "Pipeline":
    """Batch tensors of selected rows of HDF5 datasets, read by ``workers`` background workers.

    files: a path, a glob pattern (matches sorted by name) or a list of them.  Several
        files form one logical dataset, in the given order; a row's *global id* is its
        position in the concatenation of all files' rows.
    datasets: a dataset path (``.batch`` is one tensor), a list/tuple of paths (a tuple
        of tensors) or a dict ``{name: path}`` (a dict of tensors).  Soft and external
        links are followed.  All selected datasets of a file must have the same number
        of rows; every file must have the same datasets with the same row shape/dtype.
        Numeric dtypes (big-endian ones converted to native order), fixed- and
        variable-length strings (``tf.string``, as bytes) and compound dtypes are
        supported.  A compound dataset gives one tensor per leaf field: key
        ``"<name>.<field>"`` (nested: ``"<name>.<field>.<sub>"``) in a dict of datasets,
        key ``"<field>"`` for a single compound dataset; in a tuple it is refused.
    rows: which rows, in which order: None (all), a slice, an index array (in any order,
        delivered in that order; duplicates delivered once per occurrence), a boolean
        mask over all rows, a list of ``(start, stop)`` ranges, or a callable
        ``(path, n_rows) -> one of these`` giving each file's own (file-local) rows.
        Except for the callable, a selection applies to global ids.
    with_row_ids: add an int64 tensor of global row ids: the last tuple element, or key
        ``"row_id"``; for a single dataset ``.batch`` becomes ``(data, row_id)``.
    shard: ``(index, count)``: deliver only part ``index`` of ``count`` contiguous,
        disjoint, near-equal parts of the selection (one per distributed trainer).
    shuffle / seed / min_after_dequeue: how shuffling works, and what it costs --
        the selection is cut into *blocks* of ``batches_per_block`` whole batches (whole
        HDF5 chunks where that fits), each read with one call per dataset.  Every epoch
        the block order is permuted (from ``seed``: the same permutation in every
        worker, blocks dealt to workers in turn), then each worker mixes rows through a
        shuffle buffer of at least ``min_after_dequeue`` rows (default: 16 batches or
        two blocks, whichever is more, capped at the worker's share of 256 MiB).  So a row's neighbours come from the ~buffer/block
        blocks in the buffer at that time, not from the whole selection: raise
        ``min_after_dequeue`` (memory: that many rows per worker, plus one copy of every
        row) or lower ``batches_per_block`` (more, smaller reads) for better mixing.
        Reads stay sequential within a block, which is what keeps shuffled reading fast.
        With ``seed`` and one worker the order is reproducible.
    num_epochs: passes over the selection (None: forever).  Each epoch delivers every
        selected row exactly once across all workers, and (unless ``overlap_epochs``)
        before any row of the next epoch.
    map_fn: numpy preprocessing run inside the workers: called on whole blocks (the
        structure ``.batch`` would have, with a leading row dim; it may return any
        number of rows; row ids included with ``with_row_ids``) -- or per sample with
        ``map_per_sample=True``.  Its results
        define ``.batch``: declare them with ``output_types`` (and ``output_shapes``)
        as in ``from_generator``.  For ``mode="process"`` it must be picklable.
    workers / mode / capacity / allow_smaller_final_batch / batches_per_block / name /
        start_method / overlap_epochs / stall_timeout: as in ``from_generator``.  With ``shuffle=False`` and one worker
        rows arrive in selection order; several workers read blocks in parallel, so
        block order then interleaves.

    allow_external: read datasets whose values are stored in other files -- external raw
        data files (``create_dataset(..., external=...)``), the source files of a virtual
        dataset, the target of an external link -- wherever those files are.  By default
        (False) they must resolve (symlinks followed) inside the HDF5 file's own folder
        or its subfolders, else building fails naming the file, the dataset and the
        target: an HDF5 file names those files by any path, so an untrusted file could
        otherwise make the pipeline deliver the bytes of any file this process can read.
    resumable: keep the consumer's position -- epoch, seed, which rows every step used --
        in graph variables that checkpoints (``tf.compat.v1.train.Saver``,
        ``MonitoredTrainingSession``) save with the model.  A session restored from a
        checkpoint delivers exactly the rows that checkpoint's steps had not used, in the
        order the interrupted run would have used (same seed; same workers for the same
        order -- another number of workers still delivers each remaining row once), then
        the following epochs as the uninterrupted run would have.  Costs 2 bits per
        selected row in the checkpoint and one small scatter per step; not with
        ``overlap_epochs``, and ``map_fn`` must keep every row (README, "Resuming").

    Files and datasets are checked here, before any worker starts: a missing, empty,
    truncated or non-HDF5 file, a missing dataset or dangling link, a scalar or 0-row
    dataset, row counts that differ, an out-of-range selection, an unsupported dtype or
    a compression filter that is not available (install and ``import hdf5plugin``)
    raises a clear error naming the file, the dataset and the reason.  A read that
    fails later (a corrupt chunk) raises :class:`queuepipe.HDF5ReadError`
    at the next ``sess.run`` of the batch, naming file, dataset, rows and h5py's error.
    """
    options = PipelineOptions(batch_size=batch_size, workers=workers, mode=mode, shuffle=shuffle,
                              min_after_dequeue=min_after_dequeue, seed=seed, num_epochs=num_epochs,
                              capacity=capacity, allow_smaller_final_batch=allow_smaller_final_batch,
                              batches_per_block=batches_per_block, name=name, start_method=start_method,
                              overlap_epochs=overlap_epochs, stall_timeout=stall_timeout, resumable=bool(resumable))
    if resumable and overlap_epochs:
        raise ArgumentError("resumable=True needs epochs in order (overlap_epochs=False): with overlapping "
                            "epochs a worker may run several epochs ahead, and the position would have to "
                            "remember every one of them")
    check_map_fn(map_fn, output_types, output_shapes, map_per_sample, mode, structure_from="the datasets")
    shard = _check_shard(shard)

    from .build import build, check_graph_mode
    from .sources.hdf5.inspect import inspect_files, resolve_files
    from .sources.hdf5.selection import select
    from .sources.hdf5.source import plan_source
    from .spec import Spec
    from .tf.pipeline import tf_dtypes_of

    check_graph_mode()  # here already, not only in build(): before any file is opened
    layout = inspect_files(resolve_files(files), datasets, with_row_ids=with_row_ids,
                           allow_external=bool(allow_external))
    selection = select(rows, [(f.path, f.n_rows) for f in layout.files])
    if shard is not None:
        selection = selection.shard(*shard)
    if shuffle:
        selection = selection.sorted()  # order is random anyway: read in file order
    if map_fn is None:
        import tensorflow as tf
        output_types = layout.pack([tf.string if c.dtype == object else tf.as_dtype(c.dtype)
                                    for c in layout.columns])
        spec = Spec.build(layout.pack([c.dtype for c in layout.columns]),
                          layout.pack([c.shape for c in layout.columns]))
    else:
        _, np_types = tf_dtypes_of(output_types)
        spec = Spec.build(np_types, output_shapes)
    source, sizes = plan_source(layout, selection, spec, options, map_fn=map_fn, map_per_sample=map_per_sample)
    return build(source, output_types, options, sizes)


def running(sess: "tf.compat.v1.Session", *, coord: Optional["tf.compat.v1.train.Coordinator"] = None,
            stop_grace_period_secs: float = 10.0,
            pipelines: "Optional[list[Pipeline]]" = None) -> ContextManager["tf.compat.v1.train.Coordinator"]:
    """``with queuepipe.running(sess) as coord:`` -- start every queue runner of ``sess.graph``
    under a Coordinator (``coord`` or a new one) and yield it.

    pipelines: None (default): every queue runner of the graph, queuepipe's and any
        other.  A list of queuepipe pipelines (or one pipeline) of ``sess.graph``: only
        their runners are started, and only they are stopped, joined and checked for
        failures on exit; other queue runners of the graph are not started.

    On exit -- normal, end of data, an exception or Ctrl-C -- it requests stop, cancels
    pending enqueues, stops the workers and joins all threads (waiting at most
    ``stop_grace_period_secs`` for them).  A worker failure is raised here (its original
    exception) even if the body ended early or saw only an end of data.  The shutdown
    order is DESIGN.md's "Shutdown".

    Works from TF2's eager code on a session with its own graph
    (``tf.compat.v1.Session(graph=g)``): starting and stopping happen under
    ``sess.graph.as_default()``; the ``with`` body keeps the caller's mode.
    """
    from .tf.session import running as start
    return start(sess, coord=coord, stop_grace_period_secs=stop_grace_period_secs, pipelines=pipelines)


def _check_resumable_generator(generator: Any, options: PipelineOptions) -> None:
    """Refuse, at build time, a resumable generator pipeline whose position could not be kept."""
    import inspect
    if not callable(generator) or hasattr(generator, "__next__"):
        raise ArgumentError("resumable=True needs a callable that returns a new iterator (e.g. obj.generate_data), "
                            "called as generator(start=k) to begin with sample k; an iterator object cannot restart")
    name = getattr(generator, "__qualname__", None) or type(generator).__name__
    try:
        params = inspect.signature(generator).parameters
    except (TypeError, ValueError):
        params = {}
    takes_start = "start" in params and params["start"].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if not takes_start and not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ArgumentError(
            f"resumable=True: the generator {name} must accept a `start` argument: queuepipe calls it as "
            f"generator(start=k) when a checkpoint's steps already used k samples of this worker's epoch, and "
            f"it must then begin with sample k (same samples, same order as before; worker_info() gives the "
            f"worker, epoch and seed). Add `start=0` to its parameters and skip or seek to it")
    if options.shuffle:
        raise ArgumentError("resumable=True with from_generator needs shuffle=False: a restarted generator begins "
                            "at a sample count, which a shuffle buffer would scramble. Shuffle inside the generator, "
                            "seeded from queuepipe.worker_info().seed and .epoch, so the order can be replayed")
    if options.workers > 1 and not options.overlap_epochs and options.num_epochs != 1:
        raise ArgumentError(
            f"resumable=True with {options.workers} generator workers and num_epochs={options.num_epochs}: at each "
            f"epoch's end the workers' leftover rows are merged and re-cut into batches, so a worker's count of "
            f"used samples would no longer say which ones were used. Use num_epochs=1 (the default; an endless "
            f"generator is one endless epoch), overlap_epochs=True, or one worker")


def check_map_fn(map_fn: Any, output_types: Any, output_shapes: Any, map_per_sample: bool, mode: str, *,
                 structure_from: str) -> None:
    """A file source's ``map_fn`` and the arguments describing its results, checked at build
    time (``structure_from``: where the batch structure comes from without one)."""
    if map_fn is None and (output_types is not None or output_shapes is not None or map_per_sample):
        raise ArgumentError("output_types / output_shapes / map_per_sample describe map_fn's results; "
                            f"without map_fn the batch structure comes from {structure_from}")
    if map_fn is None:
        return
    if not callable(map_fn):
        raise ArgumentTypeError(f"map_fn must be callable, got {type(map_fn).__name__}")
    if output_types is None:
        raise ArgumentError("map_fn needs output_types (and ideally output_shapes) describing what it "
                            "returns, as in from_generator")
    if mode == "process":
        try:
            pickle.dumps(map_fn)
        except Exception as exc:
            raise ArgumentTypeError(
                f"mode='process' sends map_fn to each worker process: map_fn must be picklable, "
                f"but pickling failed: {exc}. Use a top-level function or functools.partial(top_level_fn, "
                f"...), not a lambda or nested function") from None


def _check_shard(shard: Any) -> Optional[Tuple[int, int]]:
    if shard is None:
        return None
    try:
        index, count = shard
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (index, count))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise HDF5TypeError(f"shard must be a pair (index, count) of ints, got {shard!r}")
    if count < 1 or not 0 <= index < count:
        raise HDF5InputError(f"shard=({index}, {count}): need count >= 1 and 0 <= index < count")
    return int(index), int(count)
