"""The HDF5 source: a picklable description of what to read, run inside each worker.

The core calls :meth:`HDF5Source.chunks` once per worker per run.  Per epoch every
worker computes the same block order (the selection's blocks, permuted from the
pipeline seed when shuffling) and takes every ``count``-th block from position
``index`` -- so the workers split each epoch's blocks disjointly and every selected
row is delivered exactly once per epoch.  A worker's blocks are regrouped into chunks
of exactly ``block_rows`` rows (each epoch's last may be short), each read straight into
fresh 64-byte-aligned buffers: the batcher hands them to TensorFlow without a copy
(``shuffle=False``) and never cuts a block early on a timer, so a seeded shuffle
with one worker is reproducible.
"""
from __future__ import annotations

import copy
import importlib
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ...workers.buffers import BlockAllocator, aligned_block
from ...errors import ArgumentError, add_note
from ...options import PipelineOptions, Sizes, default_batches_per_block, resolved_sizes
from ...spec import Spec
from ...workers.info import note_activity, worker_info
from ...workers.resume import ResumePoint, SelectionLedger
from .chunk_decode import inflater
from .inspect import Layout, filter_available, needs_inflater, reads_plain_rows
from .planning import (Geometry, choose_block_batches, count_blocks, dealt_chunks, exact_chunks, geometry,
                       plan_reads, worker_ranges)
from .reader import WorkerFiles
from .selection import Selection, ids_to_runs, runs_to_ids

Segments = List[Tuple[int, int]]      # a chunk's selection positions, as ranges
Piece = Union[Segments, np.ndarray]   # ... or, in a resumed epoch, as an array in delivery order
# (epoch, the positions of each chunk a worker's source yields in it, in order) -> the order
# the worker's batcher puts them out in (workers.resume.epoch_order with the worker's settings)
OrderOf = Callable[[int, List[np.ndarray]], np.ndarray]


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
    overlap_epochs: let a worker's chunks run on across epochs (see ``worker_chunks``).
    ledger: set for a resumable pipeline: every chunk then ends with a column of position
        labels (:class:`~queuepipe.workers.resume.SelectionLedger`), after ``map_fn``.
    """

    def __init__(self, layout: Layout, selection: Selection, geometries: List[Geometry], *, block_rows: int,
                 shuffle: bool, seed: int, num_epochs: Optional[int], spec: Spec,
                 map_fn: Optional[Callable[[Any], Any]] = None, map_per_sample: bool = False,
                 plugin_modules: Tuple[str, ...] = (), overlap_epochs: bool = False,
                 ledger: Optional[SelectionLedger] = None):
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
        self.overlap_epochs = overlap_epochs
        self.ledger = ledger

    def reseeded(self, seed: int) -> "HDF5Source":
        """This source with another base seed (a resumed run keeps the interrupted run's)."""
        if int(seed) == self.seed:
            return self
        other = copy.copy(self)
        other.seed = int(seed)
        return other

    @property
    def n_blocks(self) -> int:
        return count_blocks(self.selection.size, self.block_rows)

    # -- the worker side -------------------------------------------------------------------------
    def ranges(self, index: int, count: int, epoch: int) -> Segments:
        """The position ranges worker ``index`` of ``count`` reads in ``epoch``, in order."""
        return worker_ranges(self.selection.size, self.block_rows, self.seed, self.shuffle, epoch, index, count)

    def remaining(self, resume: ResumePoint, index: int, count: int, order_of: OrderOf) -> Dict[int, np.ndarray]:
        """For each epoch used in part: the positions worker ``index`` of ``count`` still has to
        deliver, in the order the interrupted run would have delivered them."""
        out = {}
        if index >= self.n_blocks:
            return out
        for epoch, used in resume.used.items():
            chunks = [np.concatenate([np.arange(p, q, dtype=np.int64) for p, q in segments])
                      for segments in exact_chunks(self.ranges(index, count, epoch), self.block_rows)]
            order = order_of(epoch, chunks)
            out[epoch] = order[~used[order]]
        return out

    def worker_chunks(self, index: int, count: int, on_epoch: Callable[[int], None],
                      resume: Optional[ResumePoint] = None, remaining: Optional[Dict[int, np.ndarray]] = None
                      ) -> Iterator[Piece]:
        """The positions of each chunk worker ``index`` of ``count`` reads
        (:func:`planning.dealt_chunks`); resumed (``resume``), from ``resume.first_epoch``,
        with the epochs in ``remaining`` as arrays of positions in delivery order."""
        return dealt_chunks(self.selection.size, self.block_rows, self.seed, self.shuffle, self.num_epochs,
                            self.overlap_epochs, index, count, on_epoch,
                            first_epoch=resume.first_epoch if resume is not None else 0, remaining=remaining)

    def chunks(self, where: str, on_epoch: Callable[[int], None],
               allocate: BlockAllocator = aligned_block, resume: Optional[ResumePoint] = None,
               remaining: Optional[Dict[int, np.ndarray]] = None) -> Iterator[List[np.ndarray]]:
        """Column chunks (spec field order) for the worker running this call, each read
        straight into a block from ``allocate`` (:meth:`queuepipe.sources.Source.chunks`).
        A resumable source adds each chunk's position labels as a last column; resumed, it
        starts where ``resume`` says, with the positions ``remaining`` in the epochs used in part."""
        spec = self.spec  # this worker's: locked to map_fn's first results' unknown dims
        info = worker_info()
        index, count = (info.index, info.count) if info is not None else (0, 1)
        self._load_plugins()
        files = WorkerFiles(self.layout)
        epoch = [resume.first_epoch if resume is not None else 0]

        def entered(e: int) -> None:
            epoch[0] = e
            on_epoch(e)
        try:
            for piece in self.worker_chunks(index, count, entered, resume, remaining):
                note_activity(lambda: f"{where}: {self.describe(piece)}")
                columns = self.read(files, piece, allocate)
                if self.map_fn is not None:
                    n_read = len(columns[0])
                    columns = self._mapped(spec, columns, f"{where}, {self._positions_text(piece)}")
                    spec = spec.locked(columns)
                    if self.ledger is not None and len(columns[0]) != n_read:
                        raise ArgumentError(
                            f"{where}: map_fn returned {len(columns[0])} rows for a block of {n_read} "
                            f"({self._positions_text(piece)}): with resumable=True map_fn must keep every "
                            f"row (one output row per input row), so the position of each row is known")
                    if len(columns[0]) == 0:
                        continue  # map_fn kept no rows of this chunk
                if self.ledger is not None:
                    columns = list(columns) + [self.ledger.labels(self._positions(piece), epoch[0])]
                yield columns
        finally:
            files.close()

    @staticmethod
    def _positions(piece: Piece) -> np.ndarray:
        if isinstance(piece, np.ndarray):
            return piece
        return np.concatenate([np.arange(p, q, dtype=np.int64) for p, q in piece])

    @staticmethod
    def _positions_text(piece: Piece) -> str:
        if isinstance(piece, np.ndarray):
            return f"{len(piece)} selection positions from {int(piece[0])} (a resumed epoch)"
        return f"selection positions {piece[0][0]}..{piece[-1][1] - 1}"

    def describe(self, piece: Piece) -> str:
        """Which file and rows a chunk starts with, in words (a stalled worker's report)."""
        if isinstance(piece, np.ndarray):
            first = int(self.selection.ids_at(piece[:1])[0])
        else:
            first = int(self.selection.runs(*piece[0])[0][0])
        n_rows = np.array([f.n_rows for f in self.layout.files], dtype=np.int64)
        fi = int(np.searchsorted(np.cumsum(n_rows), first, side="right"))
        local = first - int(n_rows[:fi].sum())
        n = len(piece) if isinstance(piece, np.ndarray) else sum(q - p for p, q in piece)
        return (f"reading {self.layout.files[fi].path}, a block of {n} rows starting at row {local} "
                f"(datasets {', '.join(d.path for d in self.layout.datasets)})")

    def read(self, files: WorkerFiles, piece: Piece,
             allocate: BlockAllocator = aligned_block) -> List[np.ndarray]:
        """The pre-``map_fn`` columns of selection positions ``piece`` (ranges, concatenated,
        or an array of positions in any order)."""
        if isinstance(piece, np.ndarray):
            starts, stops = ids_to_runs(self.selection.ids_at(piece))
        else:
            runs = [self.selection.runs(p, q) for p, q in piece]
            starts = np.concatenate([r[0] for r in runs])
            stops = np.concatenate([r[1] for r in runs])
        n = int((stops - starts).sum())
        columns = allocate([((n,) + c.shape, c.dtype) for c in self.layout.columns])
        for di, geo in enumerate(self.geometries):
            files.read_plan(di, plan_reads(starts, stops, geo), columns)
        rid = self.layout.row_id_column
        if rid is not None:
            columns[rid][...] = runs_to_ids(starts, stops)
        return columns

    def _mapped(self, spec: Spec, columns: List[np.ndarray], where: str) -> List[np.ndarray]:
        fn = self.map_fn
        try:
            if self.map_per_sample:
                outs = [fn(self.layout.pack([c[i] for c in columns])) for i in range(len(columns[0]))]
                result = spec.columns_from_samples(outs, where)
            else:
                result = spec.columns_from_block(fn(self.layout.pack(columns)), where)
        except Exception as exc:
            add_note(exc, f"(in map_fn, {where})")
            raise
        return result

    def _load_plugins(self) -> None:
        """Import filter plugins (hdf5plugin) in a fresh worker process when the data needs them."""
        if self.plugin_modules and not all(filter_available(c) for c in self.layout.plugin_filters):
            for name in self.plugin_modules:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass  # the read then fails naming the filter and how to get it


def plan_source(layout: Layout, selection: Selection, spec: Spec, options: PipelineOptions, *,
                map_fn: Optional[Callable[[Any], Any]] = None,
                map_per_sample: bool = False) -> Tuple[HDF5Source, Sizes]:
    """The HDF5 source for ``from_hdf5``, and the sizes it reads in.

    Blocks are whole batches and, where that fits, whole HDF5 chunks (``choose_block_batches``);
    the shuffle buffer is rounded up to whole blocks; every worker gets the same base seed
    (they must agree on each epoch's block order)."""
    read_spec = Spec.build([c.dtype for c in layout.columns], [c.shape for c in layout.columns])
    batch_size = options.batch_size
    batches_per_block = options.batches_per_block or choose_block_batches(
        batch_size, default_batches_per_block(read_spec, batch_size), layout.files[0].chunk_rows)
    sizes = resolved_sizes(options, spec, batches_per_block=batches_per_block, whole_blocks=True)
    if needs_inflater(layout):
        inflater()  # a bad QUEUEPIPE_INFLATE is refused here, not in a worker
    # a worker process starts without the parent's imports: let it register the same plugins
    plugins = ("hdf5plugin",) if layout.plugin_filters and "hdf5plugin" in sys.modules else ()
    files_rows = [f.n_rows for f in layout.files]
    geometries = [geometry(files_rows, [f.filtered_chunk_rows[di] for f in layout.files], d.row_bytes,
                           [reads_plain_rows(layout, fi, di) for fi in range(len(layout.files))])
                  for di, d in enumerate(layout.datasets)]
    source = HDF5Source(layout, selection, geometries, block_rows=sizes.batches_per_block * batch_size,
                        shuffle=options.shuffle, seed=sizes.seed, num_epochs=options.num_epochs, spec=spec, map_fn=map_fn,
                        map_per_sample=map_per_sample, plugin_modules=plugins,
                        overlap_epochs=options.overlap_epochs,
                        ledger=SelectionLedger(selection.size) if options.resumable else None)
    return source, sizes

