"""Blocks and the aligned buffers they live in: the unit a worker hands over.

A *block* is several whole batches in 64-byte-aligned buffers, so TensorFlow adopts
them without a copy.  Where a block's buffers come from is the worker's
:data:`BlockAllocator`: plain aligned memory in a thread worker, a shared-memory slot
in a worker process (written once, where the parent reads it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

ALIGNMENT = 64  # EIGEN_MAX_ALIGN_BYTES: TF adopts numpy buffers aligned to this without a copy


def aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty`` whose data pointer is 64-byte aligned (object arrays as they come)."""
    dtype = np.dtype(dtype)
    if dtype == np.dtype(object):
        return np.empty(shape, dtype=object)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


Wanted = List[Tuple[Tuple[int, ...], np.dtype]]  # a block's columns, as (shape, dtype) each

# Where a worker's new blocks are written: called with the columns wanted, returns one
# uninitialised 64-byte-aligned buffer per column.  Passed explicitly to the batcher and
# the source (WorkerPlan.make_loop): plain memory in a thread worker, a shared-memory
# slot in a worker process (queuepipe.workers.process.child.Shipper.allocate).
BlockAllocator = Callable[[Wanted], List[np.ndarray]]


def aligned_block(wanted: Wanted) -> List[np.ndarray]:
    """Plain 64-byte-aligned memory for a block's columns: the allocator of thread workers."""
    return [aligned_empty(shape, dtype) for shape, dtype in wanted]


@dataclass
class Block:
    """Rows ready for the queue: ``n_batches`` batches of ``batch_size`` rows, or one smaller batch.

    ``columns`` follow the spec's field order.  ``tail`` marks a worker's leftover rows
    of an epoch (fewer than a batch, raw, unpadded), which are merged across workers
    (:mod:`.delivery`).  ``epoch``: the epoch of the block's rows (always 0 when epochs
    overlap).  ``error`` is set only on the poison block that carries a worker failure
    to the graph.
    """

    columns: List[np.ndarray]
    n_rows: int
    n_batches: int
    tail: bool = False
    error: Optional[str] = None
    epoch: int = 0
    merged: bool = False  # made by merging workers' leftovers (delivery.py), not by one worker


