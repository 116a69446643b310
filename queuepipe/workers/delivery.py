"""The order in which one run's blocks reach the queue: epoch after epoch, leftovers merged, a failure last.

Workers produce blocks independently; :class:`Delivery` decides which of them may be
handed to the queue now.  It knows nothing about threads or TensorFlow: the runtime
calls it under one lock and waits on a condition when nothing is ready.

*Epochs in order* (the default, ``overlap_epochs=False``): a worker's batcher ends every
epoch with a *tail* -- its leftover rows of that epoch, fewer than a batch -- so no block
holds rows of two epochs.  A block of epoch ``e + 1`` waits until every row of epoch
``e`` has been enqueued: every worker has passed epoch ``e``, the workers' tails of
``e`` have been merged into whole batches and delivered, and every block of ``e`` has
been *confirmed* (its enqueue op returned: the runtime confirms a worker's previous
block when that worker asks for its next one).  The merged tails leave fewer than a
batch of rows, the *carry*: they go at the head of the first batch of the next epoch,
whose displaced last rows join that epoch's tails.  So delivery order is per epoch,
with at most one batch per epoch boundary holding rows of both epochs (oldest first)
-- what TF1's ``batch`` over an epoch-ordered ``string_input_producer`` gives.
With ``overlap_epochs=True`` every block counts as epoch 0: the only tails are the
workers' last ones, merged at the end of the run (TF1's ``shuffle_batch`` mixes epochs
the same way).

*A failure last*: once a worker failed, every pull answers with the failure (a poison
block), and the first poison waits until no other worker has data in flight -- nothing
reaches the queue behind it but more poison.

Only the very last batch of a run can be short (with ``allow_smaller``; without it
those rows are dropped and counted in ``dropped_rows``).

*Merged last* (``merged_last=True``, resumable generator pipelines): the merged leftovers
of an epoch go only once every worker's own blocks of that epoch are in the queue.  Then
each worker's rows reach the consumer in the worker's own order (its blocks, then its
leftovers), which a resumed generator relies on (:mod:`.resume`).  Without it the merged
tails -- delivered by whichever worker asks first -- may overtake a worker's last blocks.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np

from ..spec import Spec
from .batching import assemble
from .buffers import Block

log = logging.getLogger("queuepipe")

_NEVER = float("inf")


class Delivery:
    """Which of a run's blocks may go to the queue now, and the merged leftovers (see module doc).

    All methods are called with the runtime's lock held.  ``received`` takes each block
    a worker produced (split already into the shapes the enqueue op takes); ``take``
    answers worker ``i``'s request for its next block; ``confirm`` records that worker
    ``i``'s previous block is in the queue.
    """

    def __init__(self, spec: Spec, workers: int, batch_size: int, allow_smaller: bool,
                 split: Callable[[Block], List[Block]], merged_last: bool = False):
        """``split``: cuts a merged block into the shapes the enqueue op takes; ``merged_last``:
        see the module doc."""
        self.spec = spec
        self.merged_last = merged_last
        self.own_outstanding: Dict[int, int] = defaultdict(int)  # epoch -> workers' own blocks not yet confirmed
        self.split = split
        self.batch_size = batch_size
        self.allow_smaller = allow_smaller
        self.open = 0                                   # the epoch now being delivered
        self.passed: List[float] = [0] * workers        # worker i has no rows left of epochs < passed[i]
        self.ended = [False] * workers
        self.pending: List[List[Block]] = [[] for _ in range(workers)]  # each worker's next blocks
        self.shared: List[Block] = []                   # merged blocks, delivered by any worker
        self.in_flight: List[Optional[Block]] = [None] * workers  # pulled, not yet confirmed
        self.outstanding: Dict[int, int] = defaultdict(int)       # epoch -> blocks not yet confirmed
        self.tails: Dict[int, List[List[np.ndarray]]] = defaultdict(list)
        self.merged: Set[int] = set()
        self.last_epoch = 0                             # the highest epoch seen
        self.carry: Optional[Tuple[int, List[np.ndarray]]] = None  # (epoch, rows) < one batch
        self.carrier: Optional[Block] = None            # the block that took the carry, until confirmed
        self.final_done = False
        self.dropped_rows = 0

    # -- what the workers produce ----------------------------------------------------------------
    def received(self, i: int, block: Block) -> None:
        """A block (or a tail) produced by worker ``i``, in its stream's order."""
        epoch = block.epoch
        self.last_epoch = max(self.last_epoch, epoch)
        if block.tail:
            if block.n_rows:
                self.tails[epoch].append(block.columns)
            self.passed[i] = max(self.passed[i], epoch + 1)
        else:
            self.passed[i] = max(self.passed[i], epoch)
            self.outstanding[epoch] += 1
            self.own_outstanding[epoch] += 1
            self.pending[i].append(block)
        self._settle()

    def end(self, i: int) -> None:
        """Worker ``i``'s stream has ended (all its data produced, or it failed)."""
        self.ended[i] = True
        self.passed[i] = _NEVER
        self._settle()

    def confirm(self, i: int) -> None:
        """Worker ``i``'s previous block is in the queue (its enqueue op returned)."""
        block, self.in_flight[i] = self.in_flight[i], None
        if block is None or block.error is not None:
            return
        self.outstanding[block.epoch] -= 1
        if not block.merged:
            self.own_outstanding[block.epoch] -= 1
        if block is self.carrier:
            self.carrier = None
        self._settle()

    # -- what the workers deliver -----------------------------------------------------------------
    def take(self, i: int) -> Optional[Block]:
        """The block worker ``i`` may enqueue now (marked in flight), or None."""
        for source in (self.shared, self.pending[i]):
            if source and self._may_go(source[0]):
                block = self._with_carry(source.pop(0))
                self.in_flight[i] = block
                return block
        return None

    def ready(self, i: int) -> bool:
        """Whether :meth:`take` would answer worker ``i`` with a block now."""
        return any(source and self._may_go(source[0]) for source in (self.shared, self.pending[i]))

    def data_in_flight(self, but: int) -> bool:
        """Whether a worker other than ``but`` has pulled a data block not yet confirmed."""
        return any(b is not None and b.error is None for j, b in enumerate(self.in_flight) if j != but)

    # -- the rules --------------------------------------------------------------------------------
    def _may_go(self, block: Block) -> bool:
        # while the block carrying older rows is on its way, every other block's rows are newer
        if self.merged_last and block.merged and self.own_outstanding[block.epoch] > 0:
            return False
        return block.epoch <= self.open and self.carrier is None

    def _with_carry(self, block: Block) -> Block:
        """``block``, or -- if older rows are carried -- the carry followed by the block's first
        rows, the block's last rows joining its epoch's tails."""
        if self.carry is None or self.carry[0] >= block.epoch or self.spec.any_padded:
            return block  # padded batches cannot be re-cut: their carry joins the next merge
        epoch, rows = self.carry
        self.carry = None
        r, n = len(rows[0]), block.n_rows
        columns = [np.concatenate([c, b[:n - r]]) for c, b in zip(rows, block.columns)]
        self.tails[block.epoch].append([b[n - r:] for b in block.columns])
        joined = assemble(self.spec, columns, self.batch_size)
        assert len(joined) == 1 and joined[0].n_rows == n
        carrier = Block(joined[0].columns, n, block.n_batches, epoch=block.epoch)
        self.carrier = carrier
        return carrier

    def _settle(self) -> None:
        """Merge each epoch's tails once every worker has passed it; open the next epoch once
        everything of this one is in the queue; at the very end, the short final batch."""
        while True:
            e = self.open
            if e not in self.merged:
                if min(self.passed) <= e:
                    return
                self._merge(e)
            if self.outstanding[e] > 0 or self.carrier is not None:
                return
            if e >= self.last_epoch and all(self.ended):
                self._final()
                return
            self.open = e + 1

    def _merge(self, epoch: int) -> None:
        """The carry (older rows) and epoch ``epoch``'s tails: whole batches for anyone to deliver,
        the rest (< one batch) carried on."""
        parts = ([self.carry[1]] if self.carry is not None else []) + self.tails.pop(epoch, [])
        self.merged.add(epoch)
        self.carry = None
        if not parts:
            return
        columns = [np.concatenate(cols) for cols in zip(*parts)]
        n, B = len(columns[0]), self.batch_size
        whole = (n // B) * B
        if whole:
            self._share(assemble(self.spec, [c[:whole] for c in columns], B), epoch)
        if n > whole:
            self.carry = (epoch, [c[whole:] for c in columns])

    def _final(self) -> None:
        """Every worker has ended: the carried rows are the run's last, short batch."""
        if self.final_done:
            return
        self.final_done = True
        if self.carry is None:
            return
        epoch, rows = self.carry
        self.carry = None
        if not self.allow_smaller:
            self.dropped_rows = len(rows[0])
            log.info("queuepipe: %d final rows dropped (fewer than batch_size=%d; "
                     "pass allow_smaller_final_batch=True to get them)", self.dropped_rows, self.batch_size)
            return
        self._share(assemble(self.spec, rows, self.batch_size), epoch)

    def _share(self, blocks: List[Block], epoch: int) -> None:
        for block in blocks:
            for piece in self.split(block):
                piece.epoch = epoch
                piece.merged = True
                self.outstanding[epoch] += 1
                self.shared.append(piece)
