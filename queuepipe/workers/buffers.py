"""Blocks and the aligned buffers they live in: the unit a worker hands over.

A *block* is several whole batches in 64-byte-aligned buffers, so TensorFlow adopts
them without a copy.  Where a block's buffers come from is the worker's
:data:`BlockAllocator`: plain aligned memory in a thread worker, a shared-memory slot
in a worker process (written once, where the parent reads it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

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


BlockAllocator = Callable[[List[Tuple[Tuple[int, ...], np.dtype]]], Optional[List[np.ndarray]]]
_block_allocator: Optional[BlockAllocator] = None


def set_block_allocator(allocator: Optional[BlockAllocator]) -> None:
    """Where new blocks' buffers come from in this process (a worker process: its shared-memory
    slots, so a block is written once, where the parent reads it).  The allocator returns
    None when it has nothing to give; None here restores plain aligned memory."""
    global _block_allocator
    _block_allocator = allocator


def empty_block(columns: List[Tuple[Tuple[int, ...], Any]]) -> List[np.ndarray]:
    """Uninitialised 64-byte-aligned buffers for a block's columns, given (shape, dtype) each."""
    wanted = [(tuple(shape), np.dtype(dtype)) for shape, dtype in columns]
    if _block_allocator is not None:
        got = _block_allocator(wanted)
        if got is not None:
            return got
    return [aligned_empty(shape, dtype) for shape, dtype in wanted]


@dataclass
class Block:
    """Rows ready for the queue: ``n_batches`` batches of ``batch_size`` rows, or one smaller batch.

    ``columns`` follow the spec's field order.  ``tail`` marks a worker's leftover rows
    (fewer than a batch, raw, unpadded), which are merged across workers at the end.
    ``error`` is set only on the poison block that carries a worker failure to the graph.
    """

    columns: List[np.ndarray]
    n_rows: int
    n_batches: int
    tail: bool = False
    error: Optional[str] = None


