"""The options every pipeline takes, validated once, in one frozen object.

Both front doors (:func:`queuepipe.from_generator`, :func:`queuepipe.from_hdf5`) build a
:class:`PipelineOptions` from their keyword arguments; :func:`queuepipe.build.build`
takes it whole.  A new option is one field here (with its check in ``__post_init__``).
TensorFlow-free.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Optional

from .errors import ArgumentError
from .spec import Spec

MODES = ("thread", "process")
BLOCK_TARGET_BYTES = 8 << 20  # bytes handed to TF per Python call (see DESIGN.md, "Why blocks")
# The default shuffle buffers of all workers together hold at most about this many bytes
# (each worker ``SHUFFLE_BUDGET_BYTES / workers``, but never less than one batch); a
# ``min_after_dequeue`` the user names is taken as given.  See DESIGN.md, "Memory bounds".
SHUFFLE_BUDGET_BYTES = 256 << 20


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive int (not a bool), else an :class:`ArgumentError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class PipelineOptions:
    """What every pipeline takes (documented on the front doors, which pass them through).

    ``None`` means "queuepipe chooses": ``seed`` (random), ``min_after_dequeue``,
    ``capacity``, ``batches_per_block`` (see :func:`resolved_sizes`), ``name``.
    """

    batch_size: int
    workers: int = 1
    mode: str = "thread"
    shuffle: bool = False
    min_after_dequeue: Optional[int] = None
    seed: Optional[int] = None
    num_epochs: Optional[int] = 1
    capacity: Optional[int] = None
    allow_smaller_final_batch: bool = False
    batches_per_block: Optional[int] = None
    name: Optional[str] = None
    start_method: Optional[str] = None
    overlap_epochs: bool = False
    stall_timeout: Optional[float] = None
    resumable: bool = False

    def __post_init__(self) -> None:
        positive_int("batch_size", self.batch_size)
        positive_int("workers", self.workers)
        if self.mode not in MODES:
            raise ArgumentError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_epochs is not None and (isinstance(self.num_epochs, bool)
                                            or not isinstance(self.num_epochs, int) or self.num_epochs < 1):
            raise ArgumentError(f"num_epochs must be a positive int or None (forever), got {self.num_epochs!r}")
        if self.capacity is not None:
            positive_int("capacity", self.capacity)
        if self.batches_per_block is not None:
            positive_int("batches_per_block", self.batches_per_block)
        if self.stall_timeout is not None and (isinstance(self.stall_timeout, bool)
                                               or not isinstance(self.stall_timeout, (int, float))
                                               or not self.stall_timeout > 0):
            raise ArgumentError(f"stall_timeout must be a positive number of seconds or None (never), "
                                f"got {self.stall_timeout!r}")

    def base_seed(self) -> int:
        """The pipeline's seed: the given one, or a fresh random one (all workers share it)."""
        return int(self.seed) if self.seed is not None else random.SystemRandom().getrandbits(63)

    def capacity_batches(self, batches_per_block: int) -> int:
        """The queue's capacity in batches: ``capacity`` samples rounded up to whole batches, or
        two blocks per worker (at least 8 batches)."""
        if self.capacity is None:
            return max(8, 2 * self.workers * batches_per_block)
        return max(1, math.ceil(self.capacity / self.batch_size))


def default_batches_per_block(spec: Spec, batch_size: int) -> int:
    """Batches per Python call when the user names none: about ``BLOCK_TARGET_BYTES`` per call
    (fewer calls, less per-call overhead), 1..32; 1 when a field is padded per batch."""
    if spec.any_padded:
        return 1
    row = spec.row_nbytes()
    if not row:
        return 8
    return int(max(1, min(32, BLOCK_TARGET_BYTES // max(1, row * batch_size))))


def default_shuffle_rows(batch_size: int, batches_per_block: int, row_nbytes: Optional[int] = None,
                         workers: int = 1) -> int:
    """Shuffle buffer rows per worker when the user names none: 16 batches, and at least two
    blocks, so every draw mixes rows of two or more blocks (a source's read units) -- but, when
    the row size is known, no more than the worker's share of :data:`SHUFFLE_BUDGET_BYTES`,
    and never less than one batch (each draw still mixes two batches' worth of rows).

    Without the byte cap, large samples made the default explode: 16 batches of 18 MB rows
    are 288 MB per worker, 1.15 GB for four."""
    rows = max(16, 2 * batches_per_block) * batch_size
    if row_nbytes:
        budget_rows = SHUFFLE_BUDGET_BYTES // max(1, workers) // row_nbytes
        rows = min(rows, max(batch_size, budget_rows))
    return rows


@dataclass(frozen=True)
class Sizes:
    """The block and buffer sizes a pipeline runs with, once every default is resolved."""

    batches_per_block: int
    shuffle_rows: int      # 0: no shuffling
    seed: int


def resolved_sizes(options: PipelineOptions, spec: Spec, batches_per_block: Optional[int] = None,
                   whole_blocks: bool = False) -> Sizes:
    """``options`` with every size decided.  A source that reads in its own units (HDF5: whole
    chunk-aligned blocks) passes its ``batches_per_block``, and ``whole_blocks`` to round the
    shuffle buffer up to whole blocks (the batcher then never cuts a block early, so a seed
    reproduces the order); otherwise sizes follow from the options and the spec."""
    if spec.any_padded:
        per_block = 1
    elif batches_per_block is not None:
        per_block = batches_per_block
    elif options.batches_per_block is not None:
        per_block = options.batches_per_block
    else:
        per_block = default_batches_per_block(spec, options.batch_size)
    if not options.shuffle:
        rows = 0
    elif options.min_after_dequeue is None:
        rows = default_shuffle_rows(options.batch_size, per_block, spec.row_nbytes(), options.workers)
    else:
        rows = max(1, int(options.min_after_dequeue))
    if rows and whole_blocks:
        block_rows = per_block * options.batch_size
        rows = math.ceil(rows / block_rows) * block_rows
    return Sizes(batches_per_block=per_block, shuffle_rows=rows, seed=options.base_seed())
