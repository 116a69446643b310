"""Worker-side reading: a worker's own file handles, and the planned reads of one block.

Files are opened here, inside the worker (a thread or a child process), never in
the parent.  Numeric data is read with low-level h5py calls (~8 us per call, a
fifth of ``read_direct``'s Python path) straight into the caller's buffers, HDF5
converting big-endian data to native order on the way.  Strings and compounds are
read as numpy arrays and copied into the output columns.  Any h5py failure becomes a
:class:`HDF5ReadError` naming the file, the dataset, the rows and h5py's message.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np
from h5py import h5d, h5p, h5s, h5t

from .errors import HDF5ReadError
from .inspect import Layout, filter_available, filters_of, missing_filter_message
from .planning import Read

MAX_OPEN_FILES = 32


class _Handle:
    """One dataset opened in one file, with what each read reuses."""

    def __init__(self, f, path: str, cache_bytes: int, mem_dtype: Optional[np.dtype]):
        dapl = h5p.create(h5p.DATASET_ACCESS)
        # 0 bytes: uncompressed chunks are read straight into our buffers, not via the cache
        dapl.set_chunk_cache(1009 if cache_bytes else 0, cache_bytes, 1.0)
        self.dsid = h5d.open(f.id, path.encode("utf-8"), dapl)
        self.dataset = h5py.Dataset(self.dsid)
        self.fspace = self.dsid.get_space()
        self.rest = tuple(self.fspace.shape[1:])
        self.zeros = (0,) * len(self.rest)
        self.mtype = h5t.py_create(mem_dtype) if mem_dtype is not None else None

    def read_into(self, start: int, stop: int, dest: np.ndarray) -> None:
        n = stop - start
        self.fspace.select_hyperslab((start,) + self.zeros, (n,) + self.rest)
        self.dsid.read(h5s.create_simple((n,) + self.rest), self.fspace, dest, self.mtype)


def _failing_chunk(handle: _Handle, start: int, stop: int) -> Optional[Tuple[int, int]]:
    """After a failed read of rows [start, stop): the rows of the first chunk that fails alone."""
    chunks = handle.dataset.chunks
    if chunks is None or stop - start <= chunks[0]:
        return None
    step = int(chunks[0])
    first = start - start % step
    for a in range(first, stop, step)[:4096]:
        lo, hi = max(a, start), min(a + step, stop)
        try:
            handle.dataset[lo:hi]
        except Exception:
            return lo, hi
    return None


def _field(arr: np.ndarray, path: Tuple[str, ...]) -> np.ndarray:
    for name in path:
        arr = arr[name]
    return arr


class WorkerFiles:
    """The files one worker reads, opened on first use (at most :data:`MAX_OPEN_FILES` at once)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self._open: "OrderedDict[int, Tuple[h5py.File, Dict[int, _Handle]]]" = OrderedDict()
        self._scratch: Dict[int, np.ndarray] = {}

    def close(self) -> None:
        while self._open:
            _, (f, _handles) = self._open.popitem(last=False)
            f.close()

    def _handle(self, fi: int, di: int) -> _Handle:
        entry = self._open.get(fi)
        if entry is None:
            if len(self._open) >= MAX_OPEN_FILES:
                _, (old, _h) = self._open.popitem(last=False)
                old.close()
            entry = (h5py.File(self.layout.files[fi].path, "r"), {})
            self._open[fi] = entry
        else:
            self._open.move_to_end(fi)
        f, handles = entry
        handle = handles.get(di)
        if handle is None:
            read = self.layout.datasets[di]
            handle = _Handle(f, read.path, self.layout.files[fi].cache_bytes[di], read.mem_dtype)
            handles[di] = handle
        return handle

    def _failed(self, exc: BaseException, fi: int, di: int, start: int, stop: int) -> HDF5ReadError:
        info = self.layout.files[fi]
        path = self.layout.datasets[di].path
        first = sum(f.n_rows for f in self.layout.files[:fi])
        message = (f"{info.path}: dataset '{path}': reading rows {start}..{stop - 1} (global rows "
                   f"{first + start}..{first + stop - 1}) failed: {type(exc).__name__}: {exc}")
        try:
            handle = self._open[fi][1].get(di)
            if handle is not None:
                bad = _failing_chunk(handle, start, stop)
                if bad is not None:
                    message += f" (the failing chunk holds rows {bad[0]}..{bad[1] - 1})"
                for code, name, _flags in filters_of(handle.dataset):
                    if not filter_available(code):
                        message += " -- " + missing_filter_message(info.path, path, code, name)
        except Exception:
            pass
        return HDF5ReadError(message)

    # -- reads -------------------------------------------------------------------------------------
    def run(self, read: Read, columns: List[np.ndarray]) -> None:
        """Carry out one planned read into the block's output ``columns``."""
        for di, ds in enumerate(self.layout.datasets):
            outs = [columns[c] for c in ds.columns]
            if read.take is None:
                fi, start, stop = read.slabs[0]
                self._direct(fi, di, start, stop, [o[read.out_pos:read.out_pos + stop - start] for o in outs])
                continue
            sources = self._slabs(di, read.slabs)
            for out, src in zip(outs, sources):
                if read.out_index is not None:
                    out[read.out_index] = src[read.take]
                elif out.dtype == object:
                    out[read.out_pos:read.out_pos + len(read.take)] = src[read.take]
                else:
                    np.take(src, read.take, axis=0, out=out[read.out_pos:read.out_pos + len(read.take)])

    def _direct(self, fi: int, di: int, start: int, stop: int, dests: List[np.ndarray]) -> None:
        ds = self.layout.datasets[di]
        try:
            handle = self._handle(fi, di)
            if ds.kind == "numeric":
                handle.read_into(start, stop, dests[0])
                return
            data = handle.dataset[start:stop]
        except Exception as exc:
            raise self._failed(exc, fi, di, start, stop) from exc
        for dest, col in zip(dests, ds.columns):
            dest[...] = _field(data, self.layout.columns[col].field)

    def _slabs(self, di: int, slabs: List[Tuple[int, int, int]]) -> List[np.ndarray]:
        """The slabs' rows of dataset ``di``, concatenated: one array per output column."""
        ds = self.layout.datasets[di]
        rows = sum(stop - start for _, start, stop in slabs)
        if ds.kind == "numeric":
            col = self.layout.columns[ds.columns[0]]
            scratch = self._scratch.get(di)
            if scratch is None or len(scratch) < rows:
                scratch = np.empty((max(rows, 2 * len(scratch) if scratch is not None else rows),)
                                   + col.shape, col.dtype)
                self._scratch[di] = scratch
            pos = 0
            for fi, start, stop in slabs:
                try:
                    self._handle(fi, di).read_into(start, stop, scratch[pos:pos + stop - start])
                except Exception as exc:
                    raise self._failed(exc, fi, di, start, stop) from exc
                pos += stop - start
            return [scratch[:rows]]
        pieces = []
        for fi, start, stop in slabs:
            try:
                pieces.append(self._handle(fi, di).dataset[start:stop])
            except Exception as exc:
                raise self._failed(exc, fi, di, start, stop) from exc
        out = []
        for col in ds.columns:
            column = self.layout.columns[col]
            parts = [_field(piece, column.field).astype(column.dtype, copy=False) for piece in pieces]
            out.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        return out
