"""Rows read by HDF5 itself: the reader that serves any numeric dataset, and the reference.

A hyperslab of the file's dataspace is read with low-level h5py calls straight into the
caller's buffer, HDF5 converting types where needed (big-endian data to native order,
for one) and running every filter on the way.  That skips ``Dataset.__getitem__``'s and
``read_direct``'s Python-level selection work on every read.  It is the last of a
dataset's readers: it can read whatever the faster ones cannot, and they are checked
against it when a dataset is opened (:class:`.reader._Handle`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from h5py import h5s, h5t


class H5pyRows:
    """A :class:`.reader.RowReader` that reads through HDF5: it applies to every dataset."""

    errors_are_final = True  # HDF5's own error is the one reported

    def __init__(self, dsid, mem_dtype: Optional[np.dtype]):
        self.dsid = dsid
        self.fspace = dsid.get_space()
        self.rest = tuple(self.fspace.shape[1:])
        self.zeros = (0,) * len(self.rest)
        # the in-memory type HDF5 converts to; None: the dataset's own
        self.mtype = h5t.py_create(mem_dtype) if mem_dtype is not None else None

    @classmethod
    def can_read(cls, dsid, mem_dtype: Optional[np.dtype]) -> bool:
        """True: HDF5 reads every dataset (strings and compounds, though, are read as numpy
        arrays by :class:`.reader.WorkerFiles`, not into one buffer by a reader)."""
        return True

    @classmethod
    def describe(cls) -> str:
        return "h5py"

    def read_runs(self, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray, dest: np.ndarray) -> bool:
        """Rows ``[starts[i], stops[i])`` into rows ``out_pos[i]...`` of C-contiguous ``dest``,
        one HDF5 read per run; always True."""
        for start, stop, pos in zip(starts.tolist(), stops.tolist(), out_pos.tolist()):
            self.read_stretch(start, stop, dest[pos:pos + stop - start])
        return True

    def read_stretch(self, start: int, stop: int, dest: np.ndarray) -> None:
        """Rows [start, stop) into all of C-contiguous ``dest``."""
        n = stop - start
        self.fspace.select_hyperslab((start,) + self.zeros, (n,) + self.rest)
        self.dsid.read(h5s.create_simple((n,) + self.rest), self.fspace, dest, self.mtype)

    def close(self) -> None:
        """Nothing to release: the dataset belongs to the open file."""
