"""From a selection to reads: blocks, their order per epoch, and the reads of one block.

Measured on the reference machine (h5py 3.14, warm page cache, 4 KiB rows): one
low-level h5py read call costs ~8-15 us before any data moves, one raw ``preadv`` of
an uncompressed dataset's rows ~2-3 us; rows then stream at ~5-12 GB/s; reading any
part of a *compressed* chunk costs the whole chunk's decompression.  So:

* a *block* is a fixed number of selection positions -- whole batches, ideally whole
  chunks -- and is the unit dealt to workers and permuted per epoch;
* each dataset's part of a block is planned on its own (a 4 KiB image row and an
  8-byte label differ): selected stretches closer together than the cost of one call
  (in bytes) -- or sharing a compressed chunk -- are covered by one slab read and the
  wanted rows picked out in numpy; other stretches are read straight into the output
  buffer (no copy);
* never one call per row where a covering slab is cheaper, and never h5py fancy
  indexing (10x slower than a covering slab plus a numpy gather).

Everything here is pure numpy: cheap enough to run per block inside the worker, so
a plan never has to hold (or pickle) per-row arrays for the whole selection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .selection import runs_to_ids

CALL_BYTES = 128 << 10     # one h5py call costs about as much as streaming this many bytes
RAW_CALL_BYTES = 12 << 10  # one preadv of raw rows (uncompressed, native order) costs this much
COPY_FACTOR = 1.5          # a numpy gather moves a byte at ~2/3 of the read speed
SCRATCH_BYTES = 32 << 20   # most bytes one gather reads into a worker's scratch buffers


def merge_gap(row_bytes: int, call_bytes: int, filtered_chunk_rows: Optional[int]) -> int:
    """Unselected rows worth reading to save a call: two stretches this close share a slab.

    For a compressed (filtered) dataset, stretches whose gap is shorter than a chunk
    never skip a whole chunk, so reading the gap costs no extra decompression.
    """
    by_calls = call_bytes // max(1, row_bytes)
    by_chunks = (filtered_chunk_rows - 1) if filtered_chunk_rows else 0
    return int(max(by_calls, by_chunks))


@dataclass
class Geometry:
    """What the read planner needs to know about one dataset in every file (small; pickled).

    offsets: global row id of each file's first row, and the total at the end.
    call_bytes: per file, the cost of one read call in bytes (raw rows or h5py).
    max_gap: per file, the :func:`merge_gap` of the dataset there.
    row_bytes: bytes of one row of the dataset (strings estimated).
    """

    offsets: np.ndarray
    call_bytes: np.ndarray
    max_gap: np.ndarray
    row_bytes: int

    @property
    def max_span(self) -> int:
        """Most rows one gather reads into scratch."""
        return max(1, SCRATCH_BYTES // max(1, self.row_bytes))

    def file_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, ids, side="right") - 1


def geometry(file_rows: Sequence[int], filtered_chunk_rows: Sequence[Optional[int]], row_bytes: int,
             raw: Sequence[bool]) -> Geometry:
    """The :class:`Geometry` of one dataset: rows per file, its compressed chunk rows (or None)
    and whether it can be read raw, per file."""
    offsets = np.concatenate([[0], np.cumsum(file_rows)]).astype(np.int64)
    calls = np.array([RAW_CALL_BYTES if r else CALL_BYTES for r in raw], dtype=np.int64)
    gaps = np.array([merge_gap(row_bytes, int(c), f) for c, f in zip(calls, filtered_chunk_rows)],
                    dtype=np.int64)
    row_bytes = max(1, int(row_bytes))
    return Geometry(offsets=offsets, call_bytes=calls, max_gap=gaps, row_bytes=row_bytes)


@dataclass
class Direct:
    """Stretches read straight into the output rows ``[out_pos, out_pos + stop - start)``.

    Arrays, one entry per stretch: ``files`` and file-local ``starts``/``stops``.  Kept
    as arrays so a block of many short stretches costs one tight loop, not one Python
    object per stretch.
    """

    files: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    out_pos: np.ndarray

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class Gather:
    """Covering slabs read into scratch, then the wanted rows picked out in numpy.

    slabs: ``(file, start, stop)`` in file-local rows, read one after another into
        scratch (each one call).
    take: for each output row written, its row in the concatenated slabs.
    out_pos / out_index: the output rows written -- contiguous from ``out_pos``, or
        ``out_index`` when they are scattered over the block.
    """

    slabs: List[Tuple[int, int, int]]
    take: np.ndarray
    out_pos: int = 0
    out_index: Optional[np.ndarray] = None


@dataclass
class Plan:
    """The reads that fill one dataset's part of a block."""

    direct: Direct
    gathers: List[Gather]

    @property
    def calls(self) -> int:
        return len(self.direct) + sum(len(g.slabs) for g in self.gathers)


_NO_DIRECT = Direct(*(np.empty(0, np.int64) for _ in range(4)))


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


def worker_ranges(size: int, block_rows: int, seed: int, shuffle: bool, epoch: int, index: int,
                  count: int) -> List[Tuple[int, int]]:
    """The position ranges worker ``index`` of ``count`` reads in ``epoch``, in order: the
    epoch's blocks in :func:`epoch_order`, every ``count``-th from ``index``."""
    mine = epoch_order(count_blocks(size, block_rows), seed, epoch, shuffle)[index::count].tolist()
    return [(b * block_rows, min(size, (b + 1) * block_rows)) for b in mine]


def dealt_chunks(size: int, block_rows: int, seed: int, shuffle: bool, num_epochs: Optional[int],
                 overlap_epochs: bool, index: int, count: int, on_epoch: Callable[[int], None],
                 first_epoch: int = 0, remaining: Optional[Dict[int, np.ndarray]] = None
                 ) -> Iterator[Union[List[Tuple[int, int]], np.ndarray]]:
    """The selection positions of each chunk worker ``index`` of ``count`` reads, epoch after
    epoch -- every source that deals blocks of positions (HDF5, record files) deals them so.

    Chunks are exactly ``block_rows`` positions, except each epoch's last when epochs are
    delivered in order (an epoch's rows never share a chunk with the next's) -- or only the
    very last with ``overlap_epochs`` (a short block is topped up from the next epoch's
    first).  ``on_epoch(e)`` is called before the first chunk of epoch ``e``.  Resumed:
    epochs before ``first_epoch`` are skipped, and an epoch in ``remaining`` gives its
    positions as arrays in delivery order (chunks of ``block_rows``)."""
    remaining = remaining or {}

    def epochs(first: int) -> Iterator[Tuple[int, List[Tuple[int, int]]]]:
        if index >= count_blocks(size, block_rows):
            return  # more workers than blocks: nothing for this one, in any epoch
        epoch = first
        while num_epochs is None or epoch < num_epochs:
            yield epoch, worker_ranges(size, block_rows, seed, shuffle, epoch, index, count)
            epoch += 1

    on_epoch(first_epoch)
    if not overlap_epochs:
        for epoch, ranges in epochs(first_epoch):
            on_epoch(epoch)
            if epoch in remaining:
                left = remaining[epoch]
                for start in range(0, len(left), block_rows):
                    yield left[start:start + block_rows]
                continue
            yield from exact_chunks(ranges, block_rows)
        return

    def run_on() -> Iterator[Tuple[int, int]]:
        for epoch, ranges in epochs(0):
            on_epoch(epoch)  # approximate here: exact_chunks reads ahead to fill a chunk
            yield from ranges
    yield from exact_chunks(run_on(), block_rows)


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


def plan_reads(starts: np.ndarray, stops: np.ndarray, geo: Geometry) -> Plan:
    """The reads that fill a block whose rows are the runs ``[starts[i], stops[i])``, in order.

    Runs in file order are planned as such; so are a few such stretches one after another
    (a chunk that continues in another block); a really scattered order is read as
    covering slabs of the sorted rows and reordered in numpy.
    """
    if len(starts) == 1:  # one stretch (an in-order read): read straight into the block
        f = int(geo.file_of(starts)[0])
        if stops[0] <= geo.offsets[f + 1]:
            local = int(geo.offsets[f])
            return Plan(Direct(np.array([f], dtype=np.int64), starts - local, stops - local,
                               np.zeros(1, dtype=np.int64)), [])
    files, starts, stops = split_at_files(starts, stops, geo)
    breaks = np.flatnonzero(starts[1:] < stops[:-1]) + 1
    if len(breaks) == 0:
        return _plan_ordered(files, starts, stops, geo, 0)
    if len(breaks) > 8:
        return Plan(_NO_DIRECT, _plan_unordered(runs_to_ids(starts, stops), geo))
    bounds = np.concatenate([[0], breaks, [len(starts)]])
    out_first = np.concatenate([[0], np.cumsum(stops - starts)])[bounds]
    parts = [_plan_ordered(files[a:b], starts[a:b], stops[a:b], geo, int(o))
             for a, b, o in zip(bounds[:-1], bounds[1:], out_first)]
    direct = Direct(*(np.concatenate([getattr(p.direct, k) for p in parts])
                      for k in ("files", "starts", "stops", "out_pos")))
    pieces = Plan(direct, [g for p in parts for g in p.gathers])
    # stretches far apart (e.g. the end of one block and the start of another, as when a
    # worker's blocks run on across an epoch): no slab could serve two of them, so reading
    # them in one sorted pass cannot beat reading each on its own
    lo, hi = starts[bounds[:-1]], stops[bounds[1:] - 1]
    order = np.argsort(lo, kind="stable")
    if np.all(lo[order][1:] - hi[order][:-1] > geo.max_gap.max()):
        return pieces
    scattered = Plan(_NO_DIRECT, _plan_unordered(runs_to_ids(starts, stops), geo))
    return pieces if plan_cost(pieces, geo) <= plan_cost(scattered, geo) else scattered


def plan_cost(plan: Plan, geo: Geometry) -> float:
    """Estimated cost of a plan in bytes streamed: calls, rows read, rows gathered."""
    d = plan.direct
    cost = float(geo.call_bytes[d.files].sum() + (d.stops - d.starts).sum() * geo.row_bytes)
    for g in plan.gathers:
        for f, start, stop in g.slabs:
            cost += geo.call_bytes[f] + (stop - start) * geo.row_bytes
        cost += COPY_FACTOR * len(g.take) * geo.row_bytes
    return cost


def _clusters(files: np.ndarray, heads: np.ndarray, tails: np.ndarray, gaps: np.ndarray,
              geo: Geometry) -> Tuple[np.ndarray, np.ndarray]:
    """Index ranges [a, b) of consecutive items a single slab should cover (as two arrays)."""
    join = (files[1:] == files[:-1]) & (gaps <= geo.max_gap[files[1:]])
    cuts = np.flatnonzero(~join) + 1
    a = np.concatenate([[0], cuts]).astype(np.int64)
    b = np.concatenate([cuts, [len(files)]]).astype(np.int64)
    limit = geo.max_span
    wide = np.flatnonzero((tails[b - 1] - heads[a] > limit) & (b - a > 1))
    if len(wide) == 0:
        return a, b
    extra_a, extra_b = [], []
    for k in wide.tolist():  # too wide for scratch: cut greedily (rare)
        first = int(a[k])
        for i in range(first + 1, int(b[k])):
            if tails[i] - heads[first] > limit:
                extra_a.append(first)
                extra_b.append(i)
                first = i
        a[k] = first
    order = np.argsort(np.concatenate([a, extra_a]), kind="stable")
    return np.concatenate([a, extra_a])[order], np.concatenate([b, extra_b])[order]


def _plan_ordered(files: np.ndarray, starts: np.ndarray, stops: np.ndarray, geo: Geometry,
                  first_out: int) -> Plan:
    """Rows in file order (to output rows from ``first_out``): direct reads of stretches,
    covering slabs where gaps are cheap."""
    lengths = stops - starts
    out_pos = first_out + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    a, b = _clusters(files, starts, stops, starts[1:] - stops[:-1], geo)
    runs = b - a
    calls = geo.call_bytes[files[a]].astype(np.float64)
    wanted = np.add.reduceat(lengths, a).astype(np.float64) * geo.row_bytes
    span = (stops[b - 1] - starts[a]).astype(np.float64) * geo.row_bytes
    gather = (runs > 1) & (calls + span + COPY_FACTOR * wanted < runs * calls + wanted)
    direct = np.repeat(~gather, runs)
    local = geo.offsets[files]
    plan_direct = Direct(files[direct], (starts - local)[direct], (stops - local)[direct], out_pos[direct])
    gathers = []
    for k in np.flatnonzero(gather).tolist():
        i, j = int(a[k]), int(b[k])
        f, s0 = int(files[i]), int(starts[i])
        off = int(geo.offsets[f])
        gathers.append(Gather([(f, s0 - off, int(stops[j - 1]) - off)],
                              take=runs_to_ids(starts[i:j] - s0, stops[i:j] - s0), out_pos=int(out_pos[i])))
    return Plan(plan_direct, gathers)


def _plan_unordered(ids: np.ndarray, geo: Geometry) -> List[Gather]:
    """Rows in a user-chosen order: read covering slabs of the sorted ids, reorder in numpy."""
    uniq = np.unique(ids)
    files = geo.file_of(uniq)
    a, b = _clusters(files, uniq, uniq + 1, uniq[1:] - uniq[:-1] - 1, geo)
    slab_first, slab_stop, slab_file = uniq[a], uniq[b - 1] + 1, files[a]
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
        return [Gather(slabs, take=take, out_pos=0)]
    gathers = []
    group_of_id = groups[slab_of_id]
    for gi in range(g + 1):
        members = np.flatnonzero(groups == gi)
        index = np.flatnonzero(group_of_id == gi)
        gathers.append(Gather([slabs[k] for k in members.tolist()], take=take[index], out_index=index))
    return gathers
