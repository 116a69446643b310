"""From a selection to HDF5 reads: blocks, their order per epoch, and the reads of one block.

Measured on the reference machine (h5py 3.14, warm page cache, 4 KiB rows): one
low-level h5py read call costs ~8-15 us before any data moves, then rows stream at
~12 GB/s; reading any part of a *compressed* chunk costs the whole chunk's
decompression.  So:

* a *block* is a fixed number of selection positions -- whole batches, ideally whole
  chunks -- and is the unit dealt to workers and permuted per epoch;
* a block's rows are read as a few *slabs*: selected stretches closer together than
  the cost of one call (in bytes, :data:`CALL_BYTES`) -- or sharing a compressed
  chunk -- are covered by one slab read and the wanted rows picked out in numpy;
  a long contiguous stretch is read straight into the output buffer (no copy);
* never one call per row where a covering slab is cheaper, and never h5py fancy
  indexing (10x slower than a covering slab plus a numpy gather).

Everything here is pure numpy: cheap enough to run per block inside the worker, so
a plan never has to hold (or pickle) per-row arrays for the whole selection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .selection import runs_to_ids

CALL_BYTES = 128 << 10     # one h5py call costs about as much as streaming this many bytes
COPY_FACTOR = 1.5          # a numpy gather moves a byte at ~2/3 of the read speed
SCRATCH_BYTES = 32 << 20   # most bytes one gather reads into a worker's scratch buffers


def merge_gap(row_bytes: int, n_datasets: int, filtered_chunk_rows: Optional[int]) -> int:
    """Unselected rows worth reading to save a call: two stretches this close share a slab.

    For a compressed (filtered) dataset, stretches whose gap is shorter than a chunk
    never skip a whole chunk, so reading the gap costs no extra decompression.
    """
    by_calls = (n_datasets * CALL_BYTES) // max(1, row_bytes)
    by_chunks = (filtered_chunk_rows - 1) if filtered_chunk_rows else 0
    return int(max(by_calls, by_chunks))


@dataclass
class Geometry:
    """What the read planner needs to know about the files (small; pickled to workers).

    offsets: global row id of each file's first row, and the total at the end.
    max_gap: per file, the :func:`merge_gap` of its datasets.
    row_bytes: bytes of one row summed over the datasets read (strings estimated).
    n_datasets: datasets read per slab (each slab costs one call per dataset).
    """

    offsets: np.ndarray
    max_gap: np.ndarray
    row_bytes: int
    n_datasets: int

    @property
    def max_span(self) -> int:
        """Most rows one gather reads into scratch."""
        return max(1, SCRATCH_BYTES // max(1, self.row_bytes))

    def file_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, ids, side="right") - 1


def geometry(file_rows: Sequence[int], filtered_chunk_rows: Sequence[Optional[int]], row_bytes: int,
             n_datasets: int) -> Geometry:
    """The :class:`Geometry` of files with these row counts and per-file largest compressed chunk."""
    offsets = np.concatenate([[0], np.cumsum(file_rows)]).astype(np.int64)
    gaps = np.array([merge_gap(row_bytes, n_datasets, c) for c in filtered_chunk_rows], dtype=np.int64)
    return Geometry(offsets=offsets, max_gap=gaps, row_bytes=max(1, row_bytes), n_datasets=n_datasets)


@dataclass
class Read:
    """One step of a block: read ``slabs``, then place their rows into the output columns.

    slabs: ``(file, start, stop)`` in file-local rows; each costs one call per dataset.
    take: None -- the single slab is read straight into output rows
        ``[out_pos, out_pos + stop - start)``; else, for each output row written, its row
        in the concatenation of the slabs (read into scratch first).
    out_pos / out_index: the output rows written -- contiguous from ``out_pos``, or
        ``out_index`` when the gather's rows are scattered over the block.
    """

    slabs: List[Tuple[int, int, int]]
    take: Optional[np.ndarray] = None
    out_pos: int = 0
    out_index: Optional[np.ndarray] = None

    @property
    def n_out(self) -> int:
        if self.take is None:
            _, start, stop = self.slabs[0]
            return stop - start
        return len(self.take)


# -- blocks and their order ---------------------------------------------------------------------

def choose_block_batches(batch_size: int, batches: int, chunk_rows: Optional[int]) -> int:
    """Batches per block: about ``batches``, adjusted so a block is whole chunks when cheap.

    Blocks that start and end on chunk boundaries never make two workers decompress
    the same chunk.  Only done when a whole-chunk multiple is within 2x of the target.
    """
    if not chunk_rows or chunk_rows <= 0:
        return batches
    target = batches * batch_size
    unit = batch_size * chunk_rows // math.gcd(batch_size, chunk_rows)
    if unit > 2 * target:
        return batches
    return max(1, round(target / unit)) * unit // batch_size


def count_blocks(size: int, block_rows: int) -> int:
    return -(-size // block_rows)


def epoch_order(count: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Block order of one epoch: the file order, or a permutation every worker agrees on."""
    if not shuffle:
        return np.arange(count)
    return np.random.default_rng([int(seed) & ((1 << 63) - 1), int(epoch), 0xB10C]).permutation(count)


def exact_chunks(segments: Iterable[Tuple[int, int]], rows: int) -> Iterator[List[Tuple[int, int]]]:
    """Regroup position ranges into chunks of exactly ``rows`` positions (the last may be short).

    A worker's blocks run on across epochs, so a short block (the selection's last)
    is topped up from the next one: every chunk but the very last is whole batches,
    handed to TensorFlow without a copy, and the batcher's behaviour never depends
    on timing -- a seeded shuffle is reproducible.
    """
    pending: List[Tuple[int, int]] = []
    have = 0
    for p, q in segments:
        while p < q:
            k = min(q - p, rows - have)
            if pending and pending[-1][1] == p:
                pending[-1] = (pending[-1][0], p + k)
            else:
                pending.append((p, p + k))
            have += k
            p += k
            if have == rows:
                yield pending
                pending, have = [], 0
    if pending:
        yield pending


# -- the reads of one block -----------------------------------------------------------------------

def split_at_files(starts: np.ndarray, stops: np.ndarray, geo: Geometry
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs cut where they cross from one file to the next; returns (file, starts, stops)."""
    files = geo.file_of(starts)
    last = geo.file_of(stops - 1)
    cross = np.flatnonzero(last != files)
    if len(cross) == 0:
        return files, starts, stops
    f_out, s_out, e_out = [], [], []
    prev = 0
    for i in cross:
        f_out.append(files[prev:i])
        s_out.append(starts[prev:i])
        e_out.append(stops[prev:i])
        for f in range(files[i], last[i] + 1):
            f_out.append([f])
            s_out.append([max(starts[i], geo.offsets[f])])
            e_out.append([min(stops[i], geo.offsets[f + 1])])
        prev = i + 1
    f_out.append(files[prev:])
    s_out.append(starts[prev:])
    e_out.append(stops[prev:])
    return (np.concatenate(f_out).astype(np.int64), np.concatenate(s_out).astype(np.int64),
            np.concatenate(e_out).astype(np.int64))


def plan_reads(starts: np.ndarray, stops: np.ndarray, geo: Geometry) -> List[Read]:
    """The reads that fill a block whose rows are the runs ``[starts[i], stops[i])``, in order."""
    files, starts, stops = split_at_files(starts, stops, geo)
    if len(starts) < 2 or np.all(starts[1:] >= stops[:-1]):
        return _plan_ordered(files, starts, stops, geo)
    return _plan_unordered(runs_to_ids(starts, stops), geo)


def _clusters(files: np.ndarray, heads: np.ndarray, tails: np.ndarray, gaps: np.ndarray,
              geo: Geometry) -> List[Tuple[int, int]]:
    """Index ranges [a, b) of consecutive items a single slab should cover."""
    join = (files[1:] == files[:-1]) & (gaps <= geo.max_gap[files[1:]])
    cuts = np.flatnonzero(~join) + 1
    bounds = np.concatenate([[0], cuts, [len(files)]])
    out: List[Tuple[int, int]] = []
    limit = geo.max_span
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if tails[b - 1] - heads[a] <= limit or b - a == 1:
            out.append((a, b))
            continue
        first = a  # too wide for scratch: cut greedily
        for i in range(a + 1, b):
            if tails[i] - heads[first] > limit:
                out.append((first, i))
                first = i
        out.append((first, b))
    return out


def _plan_ordered(files: np.ndarray, starts: np.ndarray, stops: np.ndarray, geo: Geometry) -> List[Read]:
    """Rows in file order: direct reads of long stretches, covering slabs over short gaps."""
    lengths = stops - starts
    out_pos = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    calls = geo.n_datasets * CALL_BYTES
    reads: List[Read] = []
    for a, b in _clusters(files, starts, stops, starts[1:] - stops[:-1], geo):
        f = int(files[a])
        off = int(geo.offsets[f])
        if b - a > 1:
            span = int(stops[b - 1] - starts[a])
            wanted = int(lengths[a:b].sum())
            direct_cost = (b - a) * calls + wanted * geo.row_bytes
            gather_cost = calls + span * geo.row_bytes + COPY_FACTOR * wanted * geo.row_bytes
            if gather_cost < direct_cost:
                s0 = int(starts[a])
                reads.append(Read([(f, s0 - off, int(stops[b - 1]) - off)],
                                  take=runs_to_ids(starts[a:b] - s0, stops[a:b] - s0),
                                  out_pos=int(out_pos[a])))
                continue
        for i in range(a, b):
            reads.append(Read([(f, int(starts[i]) - off, int(stops[i]) - off)], out_pos=int(out_pos[i])))
    return reads


def _plan_unordered(ids: np.ndarray, geo: Geometry) -> List[Read]:
    """Rows in a user-chosen order: read covering slabs of the sorted ids, reorder in numpy."""
    uniq = np.unique(ids)
    files = geo.file_of(uniq)
    clusters = _clusters(files, uniq, uniq + 1, uniq[1:] - uniq[:-1] - 1, geo)
    slab_first = np.array([uniq[a] for a, _ in clusters], dtype=np.int64)
    slab_stop = np.array([uniq[b - 1] + 1 for _, b in clusters], dtype=np.int64)
    slab_file = files[[a for a, _ in clusters]]
    spans = slab_stop - slab_first
    # scratch groups: consecutive slabs whose spans fit the scratch budget together
    groups = np.zeros(len(spans), dtype=np.int64)
    total, g = 0, 0
    for k, span in enumerate(spans.tolist()):
        if total and total + span > geo.max_span:
            g, total = g + 1, 0
        groups[k] = g
        total += span
    group_start = np.zeros(len(spans), dtype=np.int64)  # each slab's row within its group's scratch
    for k in range(1, len(spans)):
        group_start[k] = 0 if groups[k] != groups[k - 1] else group_start[k - 1] + spans[k - 1]
    slab_of_id = np.searchsorted(slab_first, ids, side="right") - 1
    take = ids - slab_first[slab_of_id] + group_start[slab_of_id]
    slabs = [(int(f), int(s - geo.offsets[f]), int(e - geo.offsets[f]))
             for f, s, e in zip(slab_file, slab_first, slab_stop)]
    if g == 0:
        return [Read(slabs, take=take, out_pos=0)]
    reads = []
    group_of_id = groups[slab_of_id]
    for gi in range(g + 1):
        members = np.flatnonzero(groups == gi)
        index = np.flatnonzero(group_of_id == gi)
        reads.append(Read([slabs[k] for k in members.tolist()], take=take[index], out_index=index))
    return reads
