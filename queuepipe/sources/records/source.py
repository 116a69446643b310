"""The record source: records of many files dealt to workers in blocks, epoch after epoch.

A *record* is a row: record ids number the records of all files, concatenated, and the
selection (all of them, or one ``shard``) is cut into blocks of ``block_rows`` positions
-- whole batches -- dealt to workers exactly as the HDF5 source deals its blocks: per
epoch every worker computes the same block order (``planning.epoch_order``, permuted
from the pipeline seed when shuffling) and takes every ``count``-th block from position
``index``, regrouped into chunks of exactly ``block_rows`` rows (``planning.exact_chunks``).
So every selected record is delivered exactly once per epoch, whatever the workers.

A block is a stretch of consecutive records (two where it crosses into the next file):
one read each.  What a read turns into columns is the *format*'s job:
:class:`FixedLengthFormat` (``uint8 [n, record_bytes]``, read straight into the block's
buffer) or :class:`TFRecordFormat` (parsed ``tf.train.Example`` features).  TensorFlow-free.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ...errors import add_note
from ...options import BLOCK_TARGET_BYTES, PipelineOptions, Sizes, resolved_sizes
from ...spec import Spec
from ...workers.buffers import BlockAllocator, aligned_block
from ...workers.info import note_activity, worker_info
from ..hdf5.planning import dealt_chunks  # the same dealing as the HDF5 source's
from ..hdf5.selection import Selection
from .example_proto import ExampleDecoder, FeatureSpec
from .fixed_length import FixedLengthLayout, read_into
from .tfrecord import read_records

Piece = Tuple[int, int, int]  # (file index, first record, stop record) within one file


class RecordFormat(Protocol):
    """How one kind of record file turns a block's records into columns."""

    paths: List[str]
    counts: List[int]     # records per file
    spec: Spec            # the columns read (before any map_fn)

    def pack(self, columns: List[np.ndarray]) -> Any:
        """The columns as the structure a ``map_fn`` receives (and ``.batch`` has without one)."""
        ...

    def read(self, fds: "OpenFiles", pieces: List[Piece], allocate: BlockAllocator) -> List[np.ndarray]:
        """The columns of the records of ``pieces``, in order."""
        ...


class OpenFiles:
    """One worker's file descriptors, opened on first use and closed with the worker's chunks."""

    def __init__(self, paths: Sequence[str]):
        self.paths = paths
        self._fds: Dict[int, int] = {}

    def fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is None:
            fd = self._fds[index] = os.open(self.paths[index], os.O_RDONLY)
        return fd

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


class FixedLengthFormat:
    """``uint8 [n, record_bytes]`` per block, each stretch read with one ``preadv`` into the block."""

    def __init__(self, layout: FixedLengthLayout):
        self.layout = layout
        self.paths = layout.paths
        self.counts = layout.counts
        self.spec = Spec.build(np.uint8, (layout.record_bytes,))

    def pack(self, columns: List[np.ndarray]) -> Any:
        return columns[0]

    def read(self, fds: OpenFiles, pieces: List[Piece], allocate: BlockAllocator) -> List[np.ndarray]:
        n = sum(b - a for _, a, b in pieces)
        out = allocate([((n, self.layout.record_bytes), np.dtype(np.uint8))])[0]
        pos = 0
        for fi, a, b in pieces:
            read_into(fds.fd(fi), self.paths[fi], self.layout, a, b, out[pos:pos + b - a])
            pos += b - a
        return [out]


class TFRecordFormat:
    """A dict of feature columns per block, parsed from ``tf.train.Example`` records.

    offsets: per file, every record's start offset and the file's size (:func:`tfrecord.index_file`).
    check_crc: verify every record's data checksum as it is read.
    """

    def __init__(self, paths: List[str], offsets: List[np.ndarray], features: Sequence[FeatureSpec],
                 check_crc: bool = True):
        self.paths = paths
        self.offsets = offsets
        self.counts = [len(o) - 1 for o in offsets]
        self.features = list(features)
        self.check_crc = bool(check_crc)
        self.names = [f.name for f in self.features]
        self.spec = Spec.build({f.name: f.dtype for f in self.features},
                               {f.name: ((None,) if f.var_len else f.shape) for f in self.features},
                               dynamic_pad=True)
        self.decoder = ExampleDecoder(self.features)

    def pack(self, columns: List[np.ndarray]) -> Any:
        return dict(zip(self.names, columns))

    def read(self, fds: OpenFiles, pieces: List[Piece], allocate: BlockAllocator) -> List[np.ndarray]:
        parts = [read_records(fds.fd(fi), self.paths[fi], self.offsets[fi], a, b, self.check_crc)
                 for fi, a, b in pieces]
        if len(parts) == 1:
            buf, starts, stops = parts[0]
        else:  # a block across files: one buffer, so numbers decode in one pass
            shift = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
            buf = b"".join(p[0] for p in parts)
            starts = np.concatenate([p[1] + s for p, s in zip(parts, shift)])
            stops = np.concatenate([p[2] + s for p, s in zip(parts, shift)])
        firsts = np.cumsum([0] + [b - a for _, a, b in pieces])

        def locate(i: int) -> str:
            k = int(np.searchsorted(firsts, i, side="right")) - 1
            fi, a, _ = pieces[k]
            record = a + i - int(firsts[k])
            return f"{self.paths[fi]}, record {record} (byte offset {int(self.offsets[fi][record])})"
        return self.decoder.decode(buf, starts.tolist(), stops.tolist(), locate, allocate)


class RecordSource:
    """Column chunks of the selected records of record files, for one worker at a time.

    fmt: the files and how to read them (:class:`FixedLengthFormat`, :class:`TFRecordFormat`).
    selection: the record ids delivered each epoch, in order (a ``Selection`` over the
        concatenation of the files' records).
    block_rows / shuffle / seed / num_epochs / overlap_epochs: how blocks are dealt
        (:func:`~queuepipe.sources.hdf5.planning.dealt_chunks`).
    spec: the pipeline's output structure (``fmt.spec`` without ``map_fn``).
    map_fn / map_per_sample: numpy preprocessing of each chunk (or sample) in the worker.
    """

    def __init__(self, fmt: RecordFormat, selection: Selection, *, block_rows: int, shuffle: bool, seed: int,
                 num_epochs: Optional[int], spec: Spec, map_fn: Optional[Callable[[Any], Any]] = None,
                 map_per_sample: bool = False, overlap_epochs: bool = False):
        self.fmt = fmt
        self.selection = selection
        self.block_rows = int(block_rows)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_epochs = num_epochs
        self.spec = spec
        self.map_fn = map_fn
        self.map_per_sample = map_per_sample
        self.overlap_epochs = overlap_epochs
        self.file_starts = np.concatenate([[0], np.cumsum(fmt.counts)]).astype(np.int64)

    def chunks(self, where: str, on_epoch: Callable[[int], None],
               allocate: BlockAllocator = aligned_block) -> Iterator[List[np.ndarray]]:
        """Column chunks (spec field order) for the worker running this call
        (:meth:`queuepipe.sources.Source.chunks`)."""
        spec = self.spec  # this worker's: locked to map_fn's first results' unknown dims
        info = worker_info()
        index, count = (info.index, info.count) if info is not None else (0, 1)
        fds = OpenFiles(self.fmt.paths)
        try:
            for segments in dealt_chunks(self.selection.size, self.block_rows, self.seed, self.shuffle,
                                         self.num_epochs, self.overlap_epochs, index, count, on_epoch):
                pieces = self.pieces(segments)
                note_activity(lambda: f"{where}: {self.describe(pieces)}")
                columns = self.fmt.read(fds, pieces, allocate)
                if self.map_fn is not None:
                    columns = self._mapped(spec, columns, f"{where}, {self.describe(pieces, reading=False)}")
                    spec = spec.locked(columns)
                    if len(columns[0]) == 0:
                        continue  # map_fn kept no rows of this chunk
                yield columns
        finally:
            fds.close()

    def pieces(self, segments: List[Tuple[int, int]]) -> List[Piece]:
        """The per-file record stretches of selection positions ``segments``, in order."""
        out: List[Piece] = []
        starts = self.file_starts
        for p, q in segments:
            for s, e in zip(*(r.tolist() for r in self.selection.runs(p, q))):
                while s < e:
                    fi = int(np.searchsorted(starts, s, side="right")) - 1
                    stop = min(e, int(starts[fi + 1]))
                    first = int(starts[fi])
                    if out and out[-1][0] == fi and out[-1][2] == s - first:
                        out[-1] = (fi, out[-1][1], stop - first)  # continues the previous stretch
                    else:
                        out.append((fi, s - first, stop - first))
                    s = stop
        return out

    def describe(self, pieces: List[Piece], reading: bool = True) -> str:
        """Which file and records a chunk starts with, in words (a stalled or failed worker's report)."""
        fi, a, b = pieces[0]
        n = sum(q - p for _, p, q in pieces)
        more = f" and {len(pieces) - 1} more stretch(es)" if len(pieces) > 1 else ""
        return (f"{'reading ' if reading else ''}{self.fmt.paths[fi]}, records {a}..{b - 1}{more} "
                f"({n} records)")

    def _mapped(self, spec: Spec, columns: List[np.ndarray], where: str) -> List[np.ndarray]:
        fn, pack = self.map_fn, self.fmt.pack
        try:
            if self.map_per_sample:
                outs = [fn(pack([c[i] for c in columns])) for i in range(len(columns[0]))]
                return spec.columns_from_samples(outs, where)
            return spec.columns_from_block(fn(pack(columns)), where)
        except Exception as exc:
            add_note(exc, f"(in map_fn, {where})")
            raise


def plan_record_source(fmt: RecordFormat, selection: Selection, spec: Spec, options: PipelineOptions, *,
                       record_nbytes: float, map_fn: Optional[Callable[[Any], Any]] = None,
                       map_per_sample: bool = False) -> Tuple[RecordSource, Sizes]:
    """The source for a record front door, and the sizes it reads in.

    A block is about ``BLOCK_TARGET_BYTES`` of records (by the larger of the decoded row and
    the average record on disk, ``record_nbytes``), whole batches, 1..32 of them -- one batch
    when a field is padded per batch; the shuffle buffer is rounded up to whole blocks."""
    batch_size = options.batch_size
    per_block = options.batches_per_block
    if per_block is None:
        row = max(float(fmt.spec.row_nbytes() or 0), float(record_nbytes), 1.0)
        per_block = 1 if fmt.spec.any_padded else int(max(1, min(32, BLOCK_TARGET_BYTES // (row * batch_size))))
    sizes = resolved_sizes(options, spec, batches_per_block=per_block, whole_blocks=True)
    source = RecordSource(fmt, selection, block_rows=sizes.batches_per_block * batch_size, shuffle=options.shuffle,
                          seed=sizes.seed, num_epochs=options.num_epochs, spec=spec, map_fn=map_fn,
                          map_per_sample=map_per_sample, overlap_epochs=options.overlap_epochs)
    return source, sizes
