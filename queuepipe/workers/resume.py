"""Resumable input: which rows the consumer has used, and where restarted workers begin.

A resumable pipeline's every row carries a small *position label* (an extra int64 field at
the end of the queue's elements, never shown to the user).  The step that dequeues a batch
adds its labels into a variable kept with the model's checkpoint (``queuepipe/tf/position.py``),
so a checkpoint records exactly the rows whose model updates it holds -- never the rows that
sit read ahead in the queue.  When the pipeline's queue runner starts, it reads that variable
and hands the workers a :class:`ResumePoint`; each worker then skips what was used and
produces the rest *in the order the interrupted run would have used*.

Two ledgers, one per kind of source (both TF-free, both decoded here):

* :class:`SelectionLedger` (``from_hdf5``): a bitmap over the selection's positions per
  epoch parity -- 2 bits per selected row, e.g. 25 MB for 100 M rows -- plus a row count
  per parity.  Each label is ``[word, count index, signed bit, 1]``: the dequeue adds
  ``bit`` at ``word`` and 1 at the count (one ``scatter_add``).  Epoch ``e`` uses parity
  ``e % 2``; its generation ``e // 2`` decides whether it sets bits (even) or clears them
  (odd), so a parity never needs clearing.  Delivery keeps at most two epochs partly used
  (epoch ``e + 1``'s rows only follow all of epoch ``e``'s, but for one batch at the
  boundary), so two parities suffice.  Independent of worker count and interleaving:
  restarting with other workers still delivers every remaining row once.
* :class:`StreamLedger` (``from_generator``): per worker, the largest label used, each
  label ``(epoch << 40) | (index in the worker's epoch + 1)`` (one ``scatter_max``).  Valid
  because a generator worker's rows reach the consumer in the worker's own order (no
  shuffle across its stream; leftovers merged only at the end of the stream: see
  :mod:`.delivery`), so the rows used are a prefix of each worker's stream; the generator
  restarts from ``start`` (``queuepipe.worker_info().start``).

Recomputing a worker's order: with ``shuffle``, an HDF5 worker's rows of epoch ``e`` come out
of its shuffle buffer in an order fixed by the epoch's seed and the row sequence alone
(:class:`~.batching.Batcher`), so :func:`epoch_order` replays the batcher on the rows'
positions only -- no data read -- and the worker then reads just the rows not yet used, in
that order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..errors import ArgumentError

BITS_PER_WORD = 63          # bits of an int64 word a SelectionLedger uses (never the sign bit)
EPOCH_SHIFT = 40            # a StreamLedger label: epoch above this bit, index + 1 below
INDEX_MASK = (1 << EPOCH_SHIFT) - 1
LEDGER_VERSION = 1


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts, decoded from the consumer's ledger (picklable; sent to workers).

    seed: the pipeline seed of the interrupted run (block order and shuffle derive from it).
    first_epoch: epochs before it were used completely (HDF5).
    used: epoch -> boolean mask over selection positions of the rows already used, for
        the (at most two) epochs used in part (HDF5).
    starts: per worker, ``(epoch, start)``: the epoch it resumes in and how many of that
        epoch's samples were used (generators).
    """

    seed: int
    first_epoch: int = 0
    used: Dict[int, np.ndarray] = field(default_factory=dict)
    starts: Optional[List[Tuple[int, int]]] = None

    @property
    def fresh(self) -> bool:
        """Nothing used yet: the run starts at the beginning."""
        return self.first_epoch == 0 and not self.used and not any(s != (0, 0) for s in (self.starts or ()))


class SelectionLedger:
    """The bitmap ledger of a selection of ``size`` positions (see module doc)."""

    width = 4

    def __init__(self, size: int):
        if size < 1:
            raise ArgumentError("resumable=True needs a non-empty selection")
        self.size = int(size)
        self.words = math.ceil(self.size / BITS_PER_WORD)

    @property
    def length(self) -> int:
        """Entries of the ledger variable: two bitmaps, then two row counts."""
        return 2 * self.words + 2

    def labels(self, positions: np.ndarray, epoch: int) -> np.ndarray:
        """``[n, 4]`` int64 labels of rows at selection ``positions`` in ``epoch``."""
        positions = np.asarray(positions, dtype=np.int64)
        parity = epoch % 2
        sign = 1 if (epoch // 2) % 2 == 0 else -1
        out = np.empty((len(positions), 4), dtype=np.int64)
        np.floor_divide(positions, BITS_PER_WORD, out=out[:, 0])
        out[:, 0] += parity * self.words
        out[:, 1] = 2 * self.words + parity
        np.left_shift(1, positions % BITS_PER_WORD, out=out[:, 2], dtype=np.int64)
        if sign < 0:
            np.negative(out[:, 2], out=out[:, 2])
        out[:, 3] = 1
        return out

    def resume_point(self, ledger: np.ndarray, seed: int, where: str) -> ResumePoint:
        """Decode the ledger variable's value: the first epoch not used completely and the
        rows used of each epoch used in part."""
        ledger = np.asarray(ledger, dtype=np.int64)
        if ledger.shape != (self.length,):
            raise ArgumentError(f"{where}: the checkpoint's input position has {ledger.shape[0]} entries, "
                                f"this pipeline needs {self.length} (selection of {self.size} rows): was it "
                                f"made for another selection?")
        counts = ledger[-2:]
        first = []
        used: Dict[int, np.ndarray] = {}
        for parity in (0, 1):
            complete, rows = divmod(int(counts[parity]), self.size)
            epoch = 2 * complete + parity  # the first epoch of this parity not used completely
            first.append(epoch)
            if rows:
                words = ledger[parity * self.words:(parity + 1) * self.words]
                bits = self._bits(words)
                mask = bits if (epoch // 2) % 2 == 0 else ~bits
                if int(mask.sum()) != rows:
                    raise ArgumentError(f"{where}: the checkpoint's input position is inconsistent "
                                        f"({int(mask.sum())} rows marked used in epoch {epoch}, {rows} counted)")
                used[epoch] = mask
        return ResumePoint(seed=seed, first_epoch=min(first), used=used)

    def _bits(self, words: np.ndarray) -> np.ndarray:
        shifts = np.arange(BITS_PER_WORD, dtype=np.int64)
        bits = ((words[:, None] >> shifts[None, :]) & 1).astype(bool).reshape(-1)
        return bits[:self.size]


class StreamLedger:
    """The per-worker high-water ledger of generator workers (see module doc)."""

    width = 2

    def __init__(self, workers: int):
        self.workers = int(workers)

    @property
    def length(self) -> int:
        return self.workers

    def labels(self, worker: int, epoch: int, first_index: int, n: int) -> np.ndarray:
        """``[n, 2]`` int64 labels of a worker's ``n`` rows from ``first_index`` of ``epoch``."""
        out = np.empty((n, 2), dtype=np.int64)
        out[:, 0] = worker
        out[:, 1] = (int(epoch) << EPOCH_SHIFT) + np.arange(first_index + 1, first_index + n + 1, dtype=np.int64)
        return out

    def resume_point(self, ledger: np.ndarray, seed: int, where: str) -> ResumePoint:
        ledger = np.asarray(ledger, dtype=np.int64)
        if ledger.shape != (self.length,):
            raise ArgumentError(f"{where}: the checkpoint's input position is for {ledger.shape[0]} generator "
                                f"worker(s), this pipeline has {self.workers}: each worker resumes its own "
                                f"stream, so keep the number of workers when restoring")
        starts = [(int(v) >> EPOCH_SHIFT, int(v) & INDEX_MASK) for v in ledger.tolist()]
        return ResumePoint(seed=seed, starts=starts)


# -- a worker's order, recomputed ------------------------------------------------------------------

def epoch_order(position_chunks: Iterable[np.ndarray], *, batch_size: int, batches_per_block: int,
                shuffle_rows: int, rng: np.random.Generator, carried_in: int = 0) -> np.ndarray:
    """Selection positions in the order a worker's batcher puts them out in one epoch.

    ``position_chunks``: the positions of the chunks the worker's source yields in that epoch;
    ``rng``: the epoch's shuffle stream; ``carried_in``: rows of the previous epoch that head
    the epoch's first batch (one worker, epochs in order).  Replays the real
    :class:`~.batching.Batcher` on a one-field column of positions, so it can never drift
    from what the worker does."""
    from ..spec import Spec
    from .batching import Batcher
    chunks = [np.asarray(c, dtype=np.int64) for c in position_chunks]
    if not shuffle_rows:
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    batcher = Batcher(Spec.build(np.int64, ()), batch_size, batches_per_block, shuffle_rows, rng=rng,
                      time_budget=math.inf, epoch_tails=True)
    if carried_in:
        batcher.carried_in = [np.full(carried_in, -1, dtype=np.int64)]
    out = [block.columns[0] for block in batcher.blocks([c] for c in chunks) if block.n_rows]
    order = np.concatenate(out) if out else np.zeros(0, np.int64)
    return order[order >= 0]
