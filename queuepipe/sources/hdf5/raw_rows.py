"""Uncompressed, native-order rows read with ``os.preadv`` at their offsets in the file.

HDF5 stores such a dataset's rows as plain bytes: contiguously, or in chunks that span
whole rows (row r of chunk c at ``chunk_offset + (r - c * chunk_rows) * row_bytes``).
Reading them with ``preadv`` skips HDF5's per-call machinery and h5py's lock, and
releases the GIL while the kernel copies.  Every block of an in-order read of plain rows
(W1) comes through :meth:`RawRows._read_stretch`, so that path is kept to plain integer
arithmetic: per-block costs there show in the benchmark (BENCHMARKS.md, "Where the time
goes").
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from h5py import h5d

from .chunk_table import ChunkTable, StoredBytes, chunk_shape, stored_as_read


class RawRows(StoredBytes):
    """A :class:`.reader.RowReader` for rows that are plain bytes in the file.

    Applies to numeric datasets stored as read (:func:`.chunk_table.stored_as_read`),
    unfiltered, contiguous or chunked in whole rows.  An unallocated chunk (or contiguous
    data never written), whose rows are the fill value, is a request it cannot serve.
    """

    errors_are_final = True  # its bytes are the data: a failed read is the file's fault

    def __init__(self, dsid, mem_dtype: Optional[np.dtype]):
        """``mem_dtype``: unused, the dataset's own dtype (see :meth:`can_read`)."""
        super().__init__(dsid)
        try:
            self.row_bytes = dsid.dtype.itemsize * int(np.prod(dsid.shape[1:], dtype=np.int64))
            chunks = chunk_shape(dsid)
            self.chunk_rows: Optional[int] = chunks[0] if chunks else None
            self.contiguous: Optional[int] = None if chunks else dsid.get_offset()
            self.table = ChunkTable(dsid, int(dsid.shape[0]), chunks) if chunks else None
        except BaseException:
            self.close()  # the descriptor StoredBytes opened
            raise

    @classmethod
    def can_read(cls, dsid, mem_dtype: Optional[np.dtype]) -> bool:
        """Whether the dataset's rows are plain bytes at offsets known from its layout."""
        if not stored_as_read(dsid, mem_dtype):
            return False
        dcpl = dsid.get_create_plist()
        if dcpl.get_nfilters() or dcpl.get_layout() not in (h5d.CONTIGUOUS, h5d.CHUNKED):
            return False
        chunks = chunk_shape(dsid)
        return chunks is None or chunks[1:] == tuple(int(d) for d in dsid.shape[1:])

    @classmethod
    def describe(cls) -> str:
        return "preadv of plain rows"

    def read_runs(self, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray, dest: np.ndarray) -> bool:
        """Rows ``[starts[i], stops[i])`` into rows ``out_pos[i]...`` of C-contiguous ``dest``.

        One stretch goes to :meth:`_read_stretch`.  For several, offsets are computed for
        all runs at once; then one ``preadv`` per stretch that is contiguous both in the
        file and in ``dest`` (chunk pieces stored one after another merge) in a tight loop.
        False, having read nothing, if a chunk is unallocated.
        """
        if len(starts) == 1:
            return self._read_stretch(int(starts[0]), int(stops[0]), int(out_pos[0]), dest)
        rb, cr = self.row_bytes, self.chunk_rows
        if cr is None:
            if self.contiguous is None:
                return False
            offsets = self.contiguous + starts * rb
        else:
            first, last = starts // cr, (stops - 1) // cr
            if np.any(last > first):  # cut runs at chunk boundaries
                pieces = last - first + 1
                run = np.repeat(np.arange(len(starts)), pieces)
                chunk = first[run] + np.arange(len(run)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
                new_starts = np.maximum(starts[run], chunk * cr)
                stops = np.minimum(stops[run], (chunk + 1) * cr)
                out_pos = out_pos[run] + (new_starts - starts[run])
                starts = new_starts
            else:
                chunk = first
            where = self.table.locate_many(chunk)
            if np.any(where < 0):
                return False
            offsets = where + (starts - chunk * cr) * rb
        offsets, at, sizes = _coalesced(offsets, out_pos * rb, (stops - starts) * rb)
        self._pread_all(zip(offsets.tolist(), at.tolist(), sizes.tolist()), dest)
        return True

    def _read_stretch(self, start: int, stop: int, out_row: int, dest: np.ndarray) -> bool:
        """:meth:`read_runs` for one stretch of rows -- every block of an in-order read -- in
        plain integer arithmetic: a handful of tiny numpy calls cost more than the loop."""
        rb, cr = self.row_bytes, self.chunk_rows
        if cr is None:
            if self.contiguous is None:
                return False
            self._pread_all([(self.contiguous + start * rb, out_row * rb, (stop - start) * rb)], dest)
            return True
        pieces: List[List[int]] = []  # [file offset, buffer offset, size], merged when contiguous
        for c in range(start // cr, (stop - 1) // cr + 1):
            where = self.table.locate(c)
            if where < 0:
                return False
            lo, hi = max(start, c * cr), min(stop, (c + 1) * cr)
            off, at, size = where + (lo - c * cr) * rb, (out_row + lo - start) * rb, (hi - lo) * rb
            last = pieces[-1] if pieces else None
            if last is not None and last[0] + last[2] == off and last[1] + last[2] == at:
                last[2] += size
            else:
                pieces.append([off, at, size])
        self._pread_all(pieces, dest)
        return True

    def _pread_all(self, pieces: Iterable[Sequence[int]], dest: np.ndarray) -> None:
        """``(file offset, byte offset in dest, size)`` each read whole into C-contiguous ``dest``."""
        flat = dest.reshape(-1).view(np.uint8)
        fd, preadv = self.fd, os.preadv
        for off, o, n in pieces:
            done = 0
            while done < n:  # the hot loop: one syscall per stretch (the kernel moves <= ~2 GiB a call)
                got = preadv(fd, [flat[o + done:o + n]], off + done)
                if got <= 0:  # the end of the file before the end of the data
                    raise self.short_read(n, off)
                done += got


def _coalesced(offsets: np.ndarray, at: np.ndarray, sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte stretches (file offset, buffer offset, size) with neighbours that continue each other
    in the file *and* in the buffer merged: chunks HDF5 wrote one after another are read in one
    call (a block of eight chunks: one ``preadv`` and one GIL round trip instead of eight)."""
    if len(offsets) < 2:
        return offsets, at, sizes
    joins = (offsets[1:] == offsets[:-1] + sizes[:-1]) & (at[1:] == at[:-1] + sizes[:-1])
    if not joins.any():
        return offsets, at, sizes
    heads = np.flatnonzero(np.concatenate([[True], ~joins]))
    return offsets[heads], at[heads], np.add.reduceat(sizes, heads)
