"""``queuepipe.from_hdf5``: batches of selected rows of HDF5 datasets, read by background workers."""
from __future__ import annotations

import math
import pickle
import random
import sys
from typing import Any, Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from .api import default_batches_per_block, default_shuffle_rows, make_pipeline
from .spec import Spec
from .sources.hdf5.chunk_decode import inflater
from .errors import HDF5InputError, HDF5TypeError
from .sources.hdf5.inspect import inspect_files, resolve_files
from .sources.hdf5.planning import choose_block_batches, geometry
from .sources.hdf5.selection import select
from .sources.hdf5.source import HDF5Source
from .tf.pipeline import Pipeline, tf_dtypes_of


def from_hdf5(files: Any, datasets: Any, *, rows: Any = None, batch_size: int, workers: int = 1,
              mode: str = "thread", shuffle: bool = False, min_after_dequeue: Optional[int] = None,
              seed: Optional[int] = None, num_epochs: Optional[int] = 1,
              map_fn: Optional[Callable[[Any], Any]] = None, output_types: Any = None,
              output_shapes: Any = None, map_per_sample: bool = False,
              shard: Optional[Tuple[int, int]] = None, with_row_ids: bool = False,
              capacity: Optional[int] = None, allow_smaller_final_batch: bool = False,
              batches_per_block: Optional[int] = None, name: Optional[str] = None,
              start_method: Optional[str] = None) -> Pipeline:
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
        two blocks, whichever is more).  So a row's neighbours come from the ~buffer/block
        blocks in the buffer at that time, not from the whole selection: raise
        ``min_after_dequeue`` (memory: that many rows per worker, plus one copy of every
        row) or lower ``batches_per_block`` (more, smaller reads) for better mixing.
        Reads stay sequential within a block, which is what keeps shuffled reading fast.
        With ``seed`` and one worker the order is reproducible.
    num_epochs: passes over the selection (None: forever).  Each epoch delivers every
        selected row exactly once across all workers; epochs run on without a gap.
    map_fn: numpy preprocessing run inside the workers: called on whole blocks (the
        structure ``.batch`` would have, with a leading row dim; it may return any
        number of rows; row ids included with ``with_row_ids``) -- or per sample with
        ``map_per_sample=True``.  Its results
        define ``.batch``: declare them with ``output_types`` (and ``output_shapes``)
        as in ``from_generator``.  For ``mode="process"`` it must be picklable.
    workers / mode / capacity / allow_smaller_final_batch / batches_per_block / name /
        start_method: as in ``from_generator``.  With ``shuffle=False`` and one worker
        rows arrive in selection order; several workers read blocks in parallel, so
        block order then interleaves.

    Files and datasets are checked here, before any worker starts: a missing, empty,
    truncated or non-HDF5 file, a missing dataset or dangling link, a scalar or 0-row
    dataset, row counts that differ, an out-of-range selection, an unsupported dtype or
    a compression filter that is not available (install and ``import hdf5plugin``)
    raises a clear error naming the file, the dataset and the reason.  A read that
    fails later (a corrupt chunk) raises :class:`queuepipe.hdf5.errors.HDF5ReadError`
    at the next ``sess.run`` of the batch, naming file, dataset, rows and h5py's error.
    """
    for arg, value in (("batch_size", batch_size),
                       ("batches_per_block", 1 if batches_per_block is None else batches_per_block)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if num_epochs is not None and (isinstance(num_epochs, bool) or not isinstance(num_epochs, int)
                                   or num_epochs < 1):
        raise ValueError(f"num_epochs must be a positive int or None, got {num_epochs!r}")
    if map_fn is None and (output_types is not None or output_shapes is not None or map_per_sample):
        raise ValueError("output_types / output_shapes / map_per_sample describe map_fn's results; "
                         "without map_fn the batch structure comes from the datasets")
    if map_fn is not None and not callable(map_fn):
        raise TypeError(f"map_fn must be callable, got {type(map_fn).__name__}")
    if map_fn is not None and output_types is None:
        raise ValueError("map_fn needs output_types (and ideally output_shapes) describing what it "
                         "returns, as in from_generator")
    if map_fn is not None and mode == "process":
        try:
            pickle.dumps(map_fn)
        except Exception as exc:
            raise TypeError(f"mode='process' sends map_fn to each worker process: map_fn must be picklable, "
                            f"but pickling failed: {exc}. Use a top-level function or "
                            f"functools.partial(top_level_fn, ...), not a lambda or nested "
                            f"function") from None
    shard = _check_shard(shard)

    layout = inspect_files(resolve_files(files), datasets, with_row_ids=with_row_ids)
    selection = select(rows, [(f.path, f.n_rows) for f in layout.files])
    if shard is not None:
        selection = selection.shard(*shard)
    if shuffle:
        selection = selection.sorted()  # order is random anyway: read in file order

    if map_fn is None:
        output_types = layout.pack([tf.string if c.dtype == object else tf.as_dtype(c.dtype)
                                    for c in layout.columns])
        spec = Spec.build(layout.pack([c.dtype for c in layout.columns]),
                          layout.pack([c.shape for c in layout.columns]))
    else:
        _, np_types = tf_dtypes_of(output_types)
        spec = Spec.build(np_types, output_shapes)

    read_spec = Spec.build([c.dtype for c in layout.columns], [c.shape for c in layout.columns])
    if batches_per_block is None:
        per_block = choose_block_batches(batch_size, default_batches_per_block(read_spec, batch_size),
                                         layout.files[0].chunk_rows)
    else:
        per_block = batches_per_block
    block_rows = per_block * batch_size
    if shuffle:  # whole blocks: the batcher then never cuts a block early, so a seed reproduces
        wanted = (default_shuffle_rows(batch_size, per_block) if min_after_dequeue is None
                  else max(1, int(min_after_dequeue)))
        min_after_dequeue = math.ceil(wanted / block_rows) * block_rows
    if seed is None:  # one base seed for all workers: they must agree on the block order
        seed = random.SystemRandom().getrandbits(63)
    # a worker process starts without the parent's imports: let it register the same plugins
    plugins = ("hdf5plugin",) if layout.plugin_filters and "hdf5plugin" in sys.modules else ()

    if any(a == "decode" for f in layout.files for a in f.access):
        inflater()  # a bad QUEUEPIPE_INFLATE is refused here, not in a worker
    files_rows = [f.n_rows for f in layout.files]
    geometries = [geometry(files_rows, [f.filtered_chunk_rows[di] for f in layout.files], d.row_bytes,
                           [f.access[di] == "raw" for f in layout.files])
                  for di, d in enumerate(layout.datasets)]
    source = HDF5Source(layout, selection, geometries, block_rows=block_rows, shuffle=shuffle,
                        seed=seed, num_epochs=num_epochs, spec=spec, map_fn=map_fn,
                        map_per_sample=map_per_sample, plugin_modules=plugins)
    return make_pipeline(source, spec, output_types, batch_size=batch_size, workers=workers, mode=mode,
                         shuffle=shuffle, min_after_dequeue=min_after_dequeue, seed=seed,
                         capacity=capacity, allow_smaller_final_batch=allow_smaller_final_batch,
                         batches_per_block=per_block, name=name, start_method=start_method)


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
