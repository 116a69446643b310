"""Fixed slots of anonymous shared memory that carry blocks from a child to the parent.

The memory is a ``memfd`` handed to the child as a file descriptor: it has no name,
so nothing can be left behind in ``/dev/shm`` whoever dies first -- the kernel frees
it when the last process holding it is gone.  A fixed number of slots bounds memory
(backpressure: a child waits for a free slot before producing more).
"""
from __future__ import annotations

import mmap
import os
from typing import List, Tuple

import numpy as np

from .batching import ALIGNMENT, aligned_empty

# (dtype str, shape, byte offset in slot) per numeric column; object columns travel pickled
ColumnMeta = Tuple[str, Tuple[int, ...], int]


def create_memfd(size: int, name: str = "queuepipe-slots") -> int:
    """An anonymous shared-memory file of ``size`` bytes; returns its descriptor."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


class SlotArena:
    """``n_slots`` slots of ``slot_bytes`` each, mapped from a shared-memory descriptor."""

    def __init__(self, fd: int, n_slots: int, slot_bytes: int):
        self.n_slots = n_slots
        self.slot_bytes = slot_bytes
        self._map = mmap.mmap(fd, n_slots * slot_bytes)
        self._buf = np.frombuffer(self._map, dtype=np.uint8)

    def close(self) -> None:
        self._buf = None
        try:
            self._map.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with the process
            pass

    @staticmethod
    def layout(columns: List[np.ndarray]) -> Tuple[List[ColumnMeta], int]:
        """Byte offsets (64-byte aligned) of the numeric columns of a block, and total bytes."""
        metas, offset = [], 0
        for col in columns:
            if col.dtype == object:
                metas.append(None)
                continue
            offset = (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
            metas.append((col.dtype.str, tuple(col.shape), offset))
            offset += col.nbytes
        return metas, offset

    def write(self, slot: int, columns: List[np.ndarray], metas: List[ColumnMeta]) -> None:
        base = slot * self.slot_bytes
        for col, meta in zip(columns, metas):
            if meta is None:
                continue
            dtype, shape, offset = meta
            view = self._buf[base + offset: base + offset + col.nbytes].view(np.dtype(dtype)).reshape(shape)
            np.copyto(view, col, casting="no")

    def read(self, slot: int, metas: List[ColumnMeta]) -> List[np.ndarray]:
        """Copies of the slot's numeric columns in fresh aligned buffers (TF adopts them as they are)."""
        base = slot * self.slot_bytes
        out = []
        for meta in metas:
            if meta is None:
                out.append(None)
                continue
            dtype, shape, offset = meta
            dt = np.dtype(dtype)
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            view = self._buf[base + offset: base + offset + n].view(dt).reshape(shape)
            arr = aligned_empty(shape, dt.newbyteorder("=") if dt.byteorder not in "=|" else dt)
            np.copyto(arr, view, casting="unsafe" if arr.dtype != dt else "no")
            out.append(arr)
        return out
