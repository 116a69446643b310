"""The HDF5 source: a picklable description of what to read, run inside each worker.

The core calls :meth:`HDF5Source.chunks` once per worker per run.  Per epoch every
worker computes the same block order (the selection's blocks, permuted from the
pipeline seed when shuffling) and takes every ``count``-th block from position
``index`` -- so the workers split each epoch's blocks disjointly and every selected
row is delivered exactly once per epoch.  A worker's blocks run on across epochs and
are regrouped into chunks of exactly ``block_rows`` rows, each read straight into
fresh 64-byte-aligned buffers: the batcher hands them to TensorFlow without a copy
(``shuffle=False``) and never cuts a block early on a timer, so a seeded shuffle
with one worker is reproducible.
"""
from __future__ import annotations

import copy
import importlib
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np

from ...workers.buffers import empty_block
from ...errors import add_note
from ...spec import Spec
from ...workers.info import worker_info
from .inspect import Layout, filter_available
from .planning import Geometry, count_blocks, epoch_order, exact_chunks, plan_reads
from .reader import WorkerFiles
from .selection import Selection, runs_to_ids


class HDF5Source:
    """Column chunks of selected rows of HDF5 datasets, for one worker at a time.

    layout: files, datasets and output columns (from :func:`inspect.inspect_files`).
    selection: the rows, in delivery order (sorted already when shuffling).
    geometries: per dataset, what read planning needs (:func:`planning.geometry`).
    block_rows: rows per block (whole batches); blocks are the unit of order and work.
    seed: the pipeline's base seed -- the block permutation of epoch ``e`` derives from
        it, so all workers agree.
    map_fn: optional numpy function run on every chunk (or on every sample, with
        ``map_per_sample``); its results are converted against ``spec``.
    plugin_modules: modules to import in the worker before reading (e.g. hdf5plugin in
        a fresh child process) when the data needs a filter not yet registered.
    """

    def __init__(self, layout: Layout, selection: Selection, geometries: List[Geometry], *, block_rows: int,
                 shuffle: bool, seed: int, num_epochs: Optional[int], spec: Spec,
                 map_fn: Optional[Callable[[Any], Any]] = None, map_per_sample: bool = False,
                 plugin_modules: Tuple[str, ...] = ()):
        self.layout = layout
        self.selection = selection
        self.geometries = geometries
        self.block_rows = int(block_rows)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_epochs = num_epochs
        self.spec = spec
        self.map_fn = map_fn
        self.map_per_sample = map_per_sample
        self.plugin_modules = tuple(plugin_modules)

    def for_spec(self, spec: Spec) -> "HDF5Source":
        clone = copy.copy(self)
        clone.spec = spec
        return clone

    @property
    def n_blocks(self) -> int:
        return count_blocks(self.selection.size, self.block_rows)

    # -- the worker side -------------------------------------------------------------------------
    def segments(self, index: int, count: int, on_epoch: Callable[[int], None]) -> Iterator[Tuple[int, int]]:
        """Position ranges worker ``index`` of ``count`` reads, epoch after epoch."""
        blocks, size, rows = self.n_blocks, self.selection.size, self.block_rows
        if index >= blocks:
            on_epoch(0)
            return  # more workers than blocks: nothing for this one, in any epoch
        epoch = 0
        while self.num_epochs is None or epoch < self.num_epochs:
            on_epoch(epoch)
            for b in epoch_order(blocks, self.seed, epoch, self.shuffle)[index::count].tolist():
                yield b * rows, min(size, (b + 1) * rows)
            epoch += 1

    def chunks(self, where: str, on_epoch: Callable[[int], None]) -> Iterator[List[np.ndarray]]:
        """Column chunks (spec field order) for the worker running this generator."""
        info = worker_info()
        index, count = (info.index, info.count) if info is not None else (0, 1)
        self._load_plugins()
        files = WorkerFiles(self.layout)
        try:
            for segments in exact_chunks(self.segments(index, count, on_epoch), self.block_rows):
                columns = self.read(files, segments)
                if self.map_fn is not None:
                    columns = self._mapped(columns, f"{where}, selection positions "
                                                    f"{segments[0][0]}..{segments[-1][1] - 1}")
                    if len(columns[0]) == 0:
                        continue  # map_fn kept no rows of this chunk
                yield columns
        finally:
            files.close()

    def read(self, files: WorkerFiles, segments: List[Tuple[int, int]]) -> List[np.ndarray]:
        """The pre-``map_fn`` columns of selection positions ``segments`` (concatenated)."""
        runs = [self.selection.runs(p, q) for p, q in segments]
        starts = np.concatenate([r[0] for r in runs])
        stops = np.concatenate([r[1] for r in runs])
        n = int((stops - starts).sum())
        columns = empty_block([((n,) + c.shape, c.dtype) for c in self.layout.columns])
        for di, geo in enumerate(self.geometries):
            files.run(di, plan_reads(starts, stops, geo), columns)
        rid = self.layout.row_id_column
        if rid is not None:
            columns[rid][...] = runs_to_ids(starts, stops)
        return columns

    def _mapped(self, columns: List[np.ndarray], where: str) -> List[np.ndarray]:
        spec, fn = self.spec, self.map_fn
        try:
            if self.map_per_sample:
                outs = [fn(self.layout.pack([c[i] for c in columns])) for i in range(len(columns[0]))]
                result = spec.columns_from_samples(outs, where)
            else:
                result = spec.columns_from_block(fn(self.layout.pack(columns)), where)
        except Exception as exc:
            add_note(exc, f"(in map_fn, {where})")
            raise
        spec.lock_shapes(result)
        return result

    def _load_plugins(self) -> None:
        """Import filter plugins (hdf5plugin) in a fresh worker process when the data needs them."""
        if self.plugin_modules and not all(filter_available(c) for c in self.layout.plugin_filters):
            for name in self.plugin_modules:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass  # the read then fails naming the filter and how to get it
