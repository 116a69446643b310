"""Fixed slots of anonymous shared memory that carry blocks from a child to the parent.

The memory is a ``memfd`` handed to the child as a file descriptor: it has no name,
so nothing can be left behind in ``/dev/shm`` whoever dies first -- the kernel frees
it when the last process holding it is gone.  A fixed number of slots bounds memory
(backpressure: a child waits for a free slot before producing more).
"""
from __future__ import annotations

import mmap
import os
import weakref
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np

from ..buffers import ALIGNMENT, aligned_empty

# Slots the parent never keeps lent to TensorFlow: the child may still hold views of one
# block (the chunk it just shipped) while it writes the next, so the protocol keeps one
# more slot coming back than the child can hold (see child._Shipper._may_wait).
CHILD_RESERVE = 1

# (dtype str, shape, byte offset in slot) per numeric column; object columns travel pickled
ColumnMeta = Tuple[str, Tuple[int, ...], int]


def create_memfd(size: int, name: str = "queuepipe-slots") -> int:
    """An anonymous shared-memory file of ``size`` bytes; returns its descriptor."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


class _SlotLease(np.ndarray):
    """Marks the bytes of one lent slot: alive while any view of the slot is."""


class SlotArena:
    """``n_slots`` slots of ``slot_bytes`` each, mapped from a shared-memory descriptor."""

    def __init__(self, fd: int, n_slots: int, slot_bytes: int):
        self.n_slots = n_slots
        self.slot_bytes = slot_bytes
        self._map = mmap.mmap(fd, n_slots * slot_bytes)
        self._buf = np.frombuffer(self._map, dtype=np.uint8)
        self._leases: Dict[int, Tuple[Any, int]] = {}  # id(token) -> (token, slot)

    def close(self) -> None:
        self._buf = None
        try:
            self._map.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with the process
            pass

    @staticmethod
    def layout(columns: List[np.ndarray]) -> Tuple[List[ColumnMeta], int]:
        """Byte offsets (64-byte aligned) of the numeric columns of a block, and total bytes."""
        return SlotArena.layout_of([(c.shape, c.dtype) for c in columns])

    @staticmethod
    def layout_of(wanted: List[Tuple[Tuple[int, ...], np.dtype]]) -> Tuple[List[ColumnMeta], int]:
        """:meth:`layout` for columns given as (shape, dtype)."""
        metas, offset = [], 0
        for shape, dt in wanted:
            if dt == object:
                metas.append(None)
                continue
            offset = (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
            metas.append((dt.str, tuple(shape), offset))
            offset += int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        return metas, offset

    @staticmethod
    def _column(region: np.ndarray, meta: ColumnMeta) -> np.ndarray:
        """The column ``meta`` describes, as a view of ``region`` (a slot's bytes)."""
        dtype, shape, offset = meta
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        return region[offset: offset + n].view(dt).reshape(shape)

    def _slot(self, slot: int) -> np.ndarray:
        return self._buf[slot * self.slot_bytes: (slot + 1) * self.slot_bytes]

    def write(self, slot: int, columns: List[np.ndarray], metas: List[ColumnMeta]) -> None:
        region = self._slot(slot)
        for col, meta in zip(columns, metas):
            if meta is not None:
                np.copyto(self._column(region, meta), col, casting="no")

    def lend(self, slot: int, metas: List[ColumnMeta], notify: Callable[[Any], Any]) -> List[np.ndarray]:
        """The slot's numeric columns as views of the slot itself -- no copy.

        The views are 64-byte aligned, so TensorFlow adopts them as tensors without a copy
        either.  The slot stays leased (:meth:`leased_slots`) until the last view, and every
        tensor made from one, is gone; then ``notify(token)`` is called and :meth:`released`
        turns the token back into the slot number.  Columns must be in native byte order
        (:meth:`native`); others are for :meth:`read`.

        ``notify`` must be a C-level callable such as ``deque.append`` or ``SimpleQueue.put``:
        it runs wherever the last reference drops -- inside TensorFlow's delayed decref in the
        user's ``sess.run``, typically -- and Python code run there could swallow a pending
        Ctrl-C (exceptions in weakref callbacks are only printed).
        """
        # slicing the lease keeps it as the base: numpy does not collapse view chains
        # through an ndarray subclass, so the token waits for every view made here
        lease = self._slot(slot).view(_SlotLease)
        token = weakref.ref(lease, notify)
        self._leases[id(token)] = (token, slot)
        return [None if meta is None else self._column(lease, meta).view(np.ndarray) for meta in metas]

    def released(self, token: Any) -> int:
        """The slot whose views are all gone, from the token :meth:`lend` passed to ``notify``."""
        return self._leases.pop(id(token))[1]

    def leased_slots(self) -> Set[int]:
        """Slots lent by :meth:`lend` / :meth:`lease` whose release has not been collected."""
        return {slot for _, slot in list(self._leases.values())}  # list(): one atomic C call

    @staticmethod
    def native(metas: List[ColumnMeta]) -> bool:
        """Whether every numeric column is in native byte order (TF can adopt it as it is)."""
        return all(m is None or np.dtype(m[0]).byteorder in "=|" for m in metas)

    def lease(self, slot: int, wanted: List[Tuple[Tuple[int, ...], np.dtype]],
              notify: Callable[[Any], Any]) -> Optional[List[np.ndarray]]:
        """Uninitialised columns (shape, dtype) laid out in ``slot`` (the writing side), or None
        when they do not fit; object columns are ordinary arrays.  ``notify`` as in :meth:`lend`."""
        metas, nbytes = self.layout_of(wanted)
        if nbytes > self.slot_bytes:
            return None
        views = self.lend(slot, metas, notify)
        return [v if v is not None else np.empty(shape, dt) for v, (shape, dt) in zip(views, wanted)]

    def locate(self, columns: List[np.ndarray]) -> Optional[Tuple[int, List[ColumnMeta]]]:
        """(slot, metas) if every numeric column is a contiguous, aligned stretch of one slot --
        a block written in place, which ships without a copy; else None."""
        start = self._buf.ctypes.data
        slot, metas = None, []
        for col in columns:
            if col.dtype == object:
                metas.append(None)
                continue
            if not col.flags.c_contiguous or col.dtype.byteorder not in "=|":
                return None
            pos = col.ctypes.data - start
            s = pos // self.slot_bytes if 0 <= pos < self.n_slots * self.slot_bytes else None
            if s is None or (slot is not None and s != slot):
                return None
            slot = s
            offset = pos - s * self.slot_bytes
            if offset % ALIGNMENT or offset + col.nbytes > self.slot_bytes:
                return None
            metas.append((col.dtype.str, tuple(col.shape), offset))
        return (slot, metas) if slot is not None else None

    def read(self, slot: int, metas: List[ColumnMeta]) -> List[np.ndarray]:
        """Copies of the slot's numeric columns in fresh aligned buffers (TF adopts them as they are)."""
        region = self._slot(slot)
        out = []
        for meta in metas:
            if meta is None:
                out.append(None)
                continue
            view = self._column(region, meta)
            dt = view.dtype
            arr = aligned_empty(view.shape, dt.newbyteorder("=") if dt.byteorder not in "=|" else dt)
            np.copyto(arr, view, casting="unsafe" if arr.dtype != dt else "no")
            out.append(arr)
        return out
