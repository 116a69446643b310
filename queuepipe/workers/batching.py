"""From a worker's stream of column chunks to blocks of whole batches.

Rows per Python call decide throughput in a TF1 input pipeline (a ``py_func`` costs
~0.2 ms before any work), so a worker hands TensorFlow *blocks* of several whole
batches in one call, in 64-byte-aligned buffers that TF adopts without copying.
Shuffling happens here too, in numpy, with a ``min_after_dequeue``-style buffer:
far cheaper than a per-row ``RandomShuffleQueue``.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Collection, Deque, Iterable, Iterator, List, Optional, Union

import numpy as np

from ..errors import SpecError
from ..spec import Spec
from .buffers import ALIGNMENT, Block, BlockAllocator, aligned_block, aligned_empty

@dataclass(frozen=True)
class NewEpoch:
    """A marker in a worker's chunk stream: the chunks after it belong to ``epoch``.

    The worker loop puts it between epochs when epochs are delivered in order; the batcher
    then ends the epoch before it: every whole batch, then a tail of the epoch's leftover
    rows (see :mod:`.delivery`)."""

    epoch: int


Chunk = Union[List[np.ndarray], NewEpoch]
EpochRng = Callable[[int], np.random.Generator]  # epoch -> the shuffle stream of that epoch


def _pad_rows(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Stack per-row arrays of different shapes, padding each dim to the largest (0 or b'')."""
    shapes = [np.shape(v) for v in values]
    rank = len(shapes[0]) if shapes else 0
    if any(len(s) != rank for s in shapes):
        raise SpecError(f"rows of a padded field differ in rank: {sorted(set(shapes))}")
    target = tuple(max(s[d] for s in shapes) for d in range(rank)) if shapes else ()
    out = aligned_empty((len(values),) + target, dtype)
    out[...] = b"" if dtype == np.dtype(object) else 0
    for i, v in enumerate(values):
        out[(i,) + tuple(slice(0, n) for n in np.shape(v))] = v
    return out


def assemble(spec: Spec, columns: List[np.ndarray], batch_size: int) -> List[Block]:
    """Whole-batch blocks from raw columns of n rows (padded fields padded per batch).

    Full batches go into one block (or one block per batch when a field is padded);
    a remainder becomes a final block of one smaller batch.
    """
    n = len(columns[0]) if columns else 0
    blocks: List[Block] = []
    if n == 0:
        return blocks
    per_block = batch_size if spec.any_padded else (n // batch_size) * batch_size
    start = 0
    while start < n:
        stop = min(start + per_block, n) if per_block else n
        if stop - start < batch_size:
            stop = n
        rows = stop - start
        out = []
        for field, col in zip(spec.fields, columns):
            part = col[start:stop]
            if field.padded:
                out.append(_pad_rows(part, field.dtype))
            else:
                buf = aligned_empty(part.shape, part.dtype)
                buf[...] = part
                out.append(buf)
        n_batches = rows // batch_size if rows >= batch_size else 1
        blocks.append(Block(out, rows, n_batches))
        start = stop
    return blocks


class _RowStore:
    """Pending rows as a list of chunks, taken from the front without concatenating first."""

    def __init__(self):
        self.chunks: Deque[List[np.ndarray]] = deque()
        self.rows = 0

    def add(self, columns: List[np.ndarray]) -> None:
        n = len(columns[0])
        if n:
            self.chunks.append(columns)
            self.rows += n

    def take_into(self, dest: List[np.ndarray], n: int) -> None:
        pos = 0
        while pos < n:
            head = self.chunks[0]
            k = min(n - pos, len(head[0]))
            for d, c in zip(dest, head):
                d[pos:pos + k] = c[:k]
            if k == len(head[0]):
                self.chunks.popleft()
            else:
                self.chunks[0] = [c[k:] for c in head]
            pos += k
        self.rows -= n

    def sample_column(self, k: int) -> np.ndarray:
        """Some pending data of field ``k`` (its row shape and dtype stand for all rows)."""
        return self.chunks[0][k]


class _ShuffleBuffer:
    """A pool of rows from which uniformly random rows are drawn (seeded).

    Rows stay where they were written: the pool keeps an index of occupied slots and a
    stack of free ones, so each row is copied in once and out once -- never moved to
    close the gap a drawn row leaves.

    Memory: ``capacity`` (the most rows the caller will ever keep in the pool: a batcher's
    reserve plus one batch) is allocated at the first add, once, and never copied; without
    it the pool starts at 64 rows or :attr:`FIRST_BYTES`, whichever is fewer (at least what
    the add needs), and doubles when full.  The buffers are ``np.empty``: a page costs memory
    only once a row is written in it, and freed slots are reused first (a stack), so the
    pool touches about as many rows as it ever held at once -- not its capacity.
    """

    FIRST_BYTES = 1 << 20  # without a capacity: the first allocation's size cap (one row at least)

    def __init__(self, rng: np.random.Generator, capacity: Optional[int] = None):
        self.rng = rng
        self.capacity = capacity
        self.columns: Optional[List[np.ndarray]] = None
        self.occupied = np.zeros(0, np.int64)  # slot of the i-th row in the pool, i < rows
        self.free = np.zeros(0, np.int64)      # free slots, used from the end
        self.n_free = 0
        self.rows = 0

    def _grow(self, need: int, like: List[np.ndarray]) -> None:
        """Room for ``need`` rows: ``capacity`` if that is enough, else (geometric growth)
        twice the old size, the first time a small first allocation."""
        old = 0 if self.columns is None else len(self.columns[0])
        if self.capacity is not None and need <= self.capacity:
            cap = self.capacity
        else:
            row_nbytes = sum(c.dtype.itemsize * int(np.prod(c.shape[1:], dtype=np.int64)) for c in like)
            first = max(1, min(64, self.FIRST_BYTES // max(1, row_nbytes)))
            cap = max(need, 2 * old, first)
        grown = []
        for k, c in enumerate(like):
            g = np.empty((cap,) + c.shape[1:], c.dtype)
            if old:
                g[:old] = self.columns[k]
                self.columns[k] = None  # the old buffer goes now: one field's old rows at a time
            grown.append(g)
        self.columns = grown
        occupied = np.zeros(cap, np.int64)
        occupied[:self.rows] = self.occupied[:self.rows]
        self.occupied = occupied
        free = np.zeros(cap, np.int64)
        free[:self.n_free] = self.free[:self.n_free]
        new_slots = np.arange(cap - 1, old - 1, -1)
        free[self.n_free:self.n_free + len(new_slots)] = new_slots
        self.free, self.n_free = free, self.n_free + len(new_slots)

    def add(self, columns: List[np.ndarray]) -> None:
        n = len(columns[0])
        if n == 0:
            return
        if self.n_free < n:
            self._grow(self.rows + n, columns)
        slots = self.free[self.n_free - n:self.n_free][::-1]
        self.n_free -= n
        contiguous = n == 1 or bool((np.diff(slots) == 1).all())
        for buf, c in zip(self.columns, columns):
            if contiguous:
                buf[slots[0]:slots[0] + n] = c
            else:
                buf[slots] = c
        self.occupied[self.rows:self.rows + n] = slots
        self.rows += n

    def sample_column(self, k: int) -> np.ndarray:
        return self.columns[k]

    def take_into(self, dest: List[np.ndarray], n: int) -> None:
        """Move ``n`` uniformly chosen rows into ``dest``; their slots become free."""
        size = self.rows
        chosen = self.rng.choice(size, n, replace=False) if n < size else self.rng.permutation(size)
        slots = self.occupied[chosen]
        for d, buf in zip(dest, self.columns):
            if buf.dtype == object:
                d[:] = buf[slots]
                buf[slots] = None  # drop the references now
            else:
                np.take(buf, slots, axis=0, out=d)
        keep = size - n
        if keep:  # close the gaps in the index (not in the data)
            taken = np.zeros(size, dtype=bool)
            taken[chosen] = True
            holes = np.flatnonzero(taken[:keep])
            movers = keep + np.flatnonzero(~taken[keep:])
            self.occupied[holes] = self.occupied[movers]
        self.free[self.n_free:self.n_free + n] = slots
        self.n_free += n
        self.rows = keep


class Batcher:
    """Turns one worker's column chunks into :class:`Block` s of whole batches.

    A block holds up to ``batches_per_block`` batches, but is handed over early once at
    least one batch is ready and ``time_budget`` seconds have passed, so slow
    generators still deliver promptly.  With ``shuffle_rows`` > 0 rows are drawn at
    random from a buffer kept at least that full (like ``min_after_dequeue``).
    At a :class:`NewEpoch` marker in the chunk stream the epoch ends: the shuffle buffer
    is drained into whole batches, and the leftover rows (fewer than a batch) either head
    the next epoch's first batch (one worker: delivery order is this stream's order) or,
    with ``epoch_tails`` (several workers: leftovers are merged across workers,
    :mod:`.delivery`), become the epoch's ``tail``.  The last block is always the final
    tail.  Every block carries its epoch.

    Resuming (:mod:`.resume`) adds three things.  ``epoch_rng``: each epoch draws from its
    own stream (``epoch_rng(e)``, taken at the epoch's marker), so the order of epoch ``e``
    never depends on the epochs before it and a restarted worker can recompute it.
    ``first_epoch``: the epoch of the first chunk (no marker comes before it).
    ``ordered_epochs``: epochs whose chunks already come in their final order (a resumed
    epoch's remaining rows): they are cut into batches as they are, never shuffled.
    """

    def __init__(self, spec: Spec, batch_size: int, batches_per_block: int,
                 shuffle_rows: int = 0, rng: Optional[np.random.Generator] = None,
                 time_budget: float = 0.05, allocate: BlockAllocator = aligned_block,
                 epoch_tails: bool = False, epoch_rng: Optional[EpochRng] = None,
                 first_epoch: int = 0, ordered_epochs: Collection[int] = ()):
        self.spec = spec
        self.batch_size = batch_size
        self.batches_per_block = 1 if spec.any_padded else max(1, batches_per_block)
        self.allocate = allocate
        self.shuffle_rows = shuffle_rows
        self.epoch_rng = epoch_rng
        if rng is None:
            rng = epoch_rng(first_epoch) if epoch_rng is not None else np.random.default_rng()
        self.rng = rng
        self.time_budget = time_budget
        self.epoch_tails = epoch_tails
        self.epoch = first_epoch  # the epoch of the rows being batched
        self.ordered_epochs = frozenset(ordered_epochs)
        self.carried_in: Optional[List[np.ndarray]] = None  # rows heading the first batch (a simulation's stand-ins)

    def blocks(self, chunks: Iterable[Chunk]) -> Iterator[Block]:
        """Blocks of whole batches, each labelled with its rows' epoch, ending with a tail."""
        inner = self._shuffled_blocks(chunks) if self.shuffle_rows > 0 else self._ordered_blocks(chunks)
        for block in inner:
            block.epoch = self.epoch
            yield block

    def _ordered_blocks(self, chunks: Iterable[Chunk]) -> Iterator[Block]:
        B = self.batch_size
        target = B * self.batches_per_block
        store = _RowStore()
        started = time.monotonic()
        for cols in chunks:
            if isinstance(cols, NewEpoch):
                if self.epoch_tails:
                    while store.rows >= B:
                        yield self._block(store, min(target, (store.rows // B) * B))
                    yield self._tail(store)
                self.epoch = cols.epoch  # without epoch tails, one batch may span the boundary
                continue
            if store.rows == 0 and self._passes_through(cols):
                yield Block(list(cols), len(cols[0]), len(cols[0]) // B)  # zero-copy fast path
                started = time.monotonic()
                continue
            store.add(cols)
            while store.rows >= target:
                yield self._block(store, target)
                started = time.monotonic()
            if store.rows >= B and time.monotonic() - started > self.time_budget:
                yield self._block(store, (store.rows // B) * B)
                started = time.monotonic()
        while store.rows >= B:
            yield self._block(store, min(target, (store.rows // B) * B))
        yield self._tail(store)

    def _shuffled_blocks(self, chunks: Iterable[Chunk]) -> Iterator[Block]:
        """Rows enter a buffer one by one (conceptually); each time it holds ``shuffle_rows + B``
        rows a batch of B is drawn at random.  Draw points depend only on the row sequence --
        never on chunk sizes or timing -- so a seed fixes the order; timing only decides how
        many drawn batches travel together in one block."""
        B, per_block, reserve = self.batch_size, self.batches_per_block, self.shuffle_rows
        pool = _ShuffleBuffer(self.rng, capacity=reserve + B)  # it never holds more: no growth copies
        carried = _RowStore()  # an ended epoch's last rows (< B): the head of the next batch
        if self.carried_in is not None:               # (or, in an ordered epoch, every row so far)
            carried.add(self.carried_in)
        ordered = self.epoch in self.ordered_epochs
        dest: Optional[List[np.ndarray]] = None
        drawn = 0
        started = time.monotonic()

        def draw_batch():
            nonlocal dest, drawn
            if dest is None:
                dest = self._new_dest(carried if pool.rows == 0 else pool, per_block * B)
            batch = [d[drawn * B:(drawn + 1) * B] for d in dest]
            k = min(carried.rows, B)
            if k:
                carried.take_into(batch, k)
            if k < B:
                pool.take_into([d[k:] for d in batch], B - k)
            drawn += 1

        def take_block() -> Block:
            nonlocal dest, drawn, started
            block = self._finish([d[:drawn * B] for d in dest], drawn * B)
            dest, drawn, started = None, 0, time.monotonic()
            return block

        def drain() -> Iterator[Block]:
            """Every whole batch left; the rest of the pool moves to ``carried``."""
            while pool.rows + carried.rows >= B:
                draw_batch()
                if drawn == per_block:
                    yield take_block()
            if drawn:
                yield take_block()
            if pool.rows:
                rest = self._empty_raw(pool, pool.rows)
                pool.take_into(rest, pool.rows)
                carried.add(rest)

        for cols in chunks:
            if isinstance(cols, NewEpoch):  # the epoch's rows all go before the next epoch's
                yield from drain()
                if self.epoch_tails:
                    yield self._tail(carried)
                self.epoch = cols.epoch
                ordered = self.epoch in self.ordered_epochs
                if self.epoch_rng is not None:
                    self.rng = pool.rng = self.epoch_rng(self.epoch)
                continue
            if ordered:  # rows already in their final order: whole batches as they come
                carried.add(cols)
                while carried.rows >= B:
                    draw_batch()
                    if drawn == per_block:
                        yield take_block()
                if drawn and time.monotonic() - started > self.time_budget:
                    yield take_block()
                continue
            n, pos = len(cols[0]), 0
            while pos < n:
                take = min(n - pos, reserve + B - pool.rows - carried.rows)
                pool.add([c[pos:pos + take] for c in cols] if (pos or take < n) else cols)
                pos += take
                if pool.rows + carried.rows >= reserve + B:
                    draw_batch()
                    if drawn == per_block:
                        yield take_block()
            if drawn and time.monotonic() - started > self.time_budget:
                yield take_block()
        yield from drain()
        yield self._tail(carried)

    def _new_dest(self, store, rows: int) -> List[np.ndarray]:
        if self.spec.any_padded:
            return self._empty_raw(store, rows)
        return self.allocate([((rows,) + self._row_shape(store, k), self._dtype(store, k))
                              for k in range(len(self.spec.fields))])

    def _finish(self, columns: List[np.ndarray], rows: int) -> Block:
        if self.spec.any_padded:
            return assemble(self.spec, columns, self.batch_size)[0]
        return Block(columns, rows, rows // self.batch_size)

    def _passes_through(self, cols: List[np.ndarray]) -> bool:
        """A chunk of whole batches in aligned contiguous buffers can be handed over as it is."""
        n = len(cols[0]) if cols else 0
        if n == 0 or n % self.batch_size or self.spec.any_padded:
            return False
        return all(c.flags.c_contiguous and (c.dtype == object or c.ctypes.data % ALIGNMENT == 0)
                   for c in cols)

    def _block(self, store, rows: int) -> Block:
        dest = self._new_dest(store, rows)
        store.take_into(dest, rows)
        return self._finish(dest, rows)

    def _tail(self, store) -> Block:
        """The leftover rows (fewer than a batch), raw and unpadded, in the store's order."""
        rows = store.rows
        if rows == 0:
            return Block([], 0, 0, tail=True)
        raw = self._empty_raw(store, rows)
        store.take_into(raw, rows)
        return Block(raw, rows, 0, tail=True)

    def _empty_raw(self, store, rows):
        return [np.empty((rows,) + self._row_shape(store, k), self._dtype(store, k))
                for k in range(len(self.spec.fields))]

    @staticmethod
    def _row_shape(store, k):
        return tuple(store.sample_column(k).shape[1:])

    @staticmethod
    def _dtype(store, k):
        return store.sample_column(k).dtype
