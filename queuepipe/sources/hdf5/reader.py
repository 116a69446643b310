"""Worker-side reading: a worker's own file handles, and the planned reads of one block.

Files are opened here, inside the worker (a thread or a child process), never in
the parent.  Numeric data is read with low-level h5py calls (~8 us per call, a fifth
of ``read_direct``'s Python path) straight into the caller's buffers, HDF5 converting
big-endian data to native order on the way -- or, for uncompressed native-order
rows, with ``os.preadv`` at their file offsets (:class:`RawRows`), and for
deflate/shuffle-compressed ones by decoding the stored chunks here, outside h5py's
lock (:mod:`.chunk_decode`).  Strings and
compounds are read as numpy arrays and copied into the output columns.  Any failure
becomes a :class:`HDF5ReadError` naming the file, the dataset, the rows and the cause.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np
from h5py import h5d, h5p, h5s, h5t

from .chunk_decode import DecodedChunks, pipeline_of
from .chunk_table import ChunkTable, StoredBytes
from ...errors import HDF5ReadError
from .inspect import Layout, filter_available, filters_of, missing_filter_message
from .planning import Direct, Plan

MAX_OPEN_FILES = 32


class RawRows(StoredBytes):
    """Rows of an uncompressed, native-order dataset, read with ``os.preadv`` at their offsets.

    HDF5 stores such a dataset's rows as plain bytes: contiguously, or in chunks that span
    whole rows (row r of chunk c at ``chunk_offset + (r - c * chunk_rows) * row_bytes``).
    Reading them with ``preadv`` costs ~2 us per call instead of ~10 us and releases the
    GIL.  Checked against h5py when opened; an unallocated chunk (fill value) returns
    False so the caller reads through h5py instead.
    """

    def __init__(self, dsid, row_bytes: int, n_rows: int):
        super().__init__(dsid)
        self.row_bytes = row_bytes
        dcpl = dsid.get_create_plist()
        chunks = dcpl.get_chunk() if dcpl.get_layout() == h5d.CHUNKED else None
        self.chunk_rows = int(chunks[0]) if chunks else None
        self.contiguous = None if chunks else dsid.get_offset()
        self.table = ChunkTable(dsid, n_rows, chunks) if chunks else None

    def read_into(self, start: int, stop: int, dest: np.ndarray) -> bool:
        """Rows [start, stop) into C-contiguous ``dest``; False where h5py must read instead."""
        return self._read_stretch(start, stop, 0, dest)

    def read_runs(self, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray, dest: np.ndarray) -> bool:
        """Rows ``[starts[i], stops[i])`` into rows ``out_pos[i]...`` of C-contiguous ``dest``.

        Offsets are computed for all runs at once; then one ``preadv`` per stretch that is
        contiguous both in the file and in ``dest`` (chunk pieces stored one after another
        merge) in a tight loop.  False, having read nothing, if a chunk is unallocated.
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

    def _pread_all(self, pieces, dest: np.ndarray) -> None:
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


def _coalesced(offsets: np.ndarray, at: np.ndarray, sizes: np.ndarray):
    """Byte stretches (file offset, buffer offset, size) with neighbours that continue each other
    in the file *and* in the buffer merged: chunks HDF5 wrote one after another are read in one
    call (a block of eight 1 MiB chunks: 1 ``preadv`` instead of 8, and 1 GIL round trip)."""
    if len(offsets) < 2:
        return offsets, at, sizes
    joins = (offsets[1:] == offsets[:-1] + sizes[:-1]) & (at[1:] == at[:-1] + sizes[:-1])
    if not joins.any():
        return offsets, at, sizes
    heads = np.flatnonzero(np.concatenate([[True], ~joins]))
    return offsets[heads], at[heads], np.add.reduceat(sizes, heads)



class _Handle:
    """One dataset opened in one file, with what each read reuses.

    ``access`` (from :func:`.inspect._file_settings`) picks the fast path: ``raw`` rows
    read with ``preadv`` (:class:`RawRows`), ``decode`` chunks decoded here
    (:class:`.chunk_decode.DecodedChunks`), or h5py for everything.  A fast path is
    used only if a few rows read through it equal h5py's when the dataset is opened.
    """

    def __init__(self, f, path: str, cache_bytes: int, mem_dtype: Optional[np.dtype], access: str):
        dapl = h5p.create(h5p.DATASET_ACCESS)
        # 0 bytes: uncompressed chunks are read straight into our buffers, not via the cache
        dapl.set_chunk_cache(1009 if cache_bytes else 0, cache_bytes, 1.0)
        self.dsid = h5d.open(f.id, path.encode("utf-8"), dapl)
        self.dataset = h5py.Dataset(self.dsid)
        self.fspace = self.dsid.get_space()
        self.rest = tuple(self.fspace.shape[1:])
        self.zeros = (0,) * len(self.rest)
        self.mtype = h5t.py_create(mem_dtype) if mem_dtype is not None else None
        self.raw: Optional[RawRows] = None
        self.decoded: Optional[DecodedChunks] = None
        if access == "raw":
            self.raw = self._checked(self._make_raw)
        elif access == "decode":
            self.decoded = self._checked(self._make_decoded)

    def _make_raw(self, row_bytes: int) -> RawRows:
        return RawRows(self.dsid, row_bytes, self.dataset.shape[0])

    def _make_decoded(self, row_bytes: int) -> DecodedChunks:
        return DecodedChunks(self.dsid, self.dataset.shape[0], row_bytes, pipeline_of(self.dsid))

    def _checked(self, make):
        """``make(row_bytes)``'s reader if rows read through it equal h5py's, else None."""
        row = np.empty((1,) + self.dataset.shape[1:], self.dataset.dtype)
        try:
            fast = make(row.nbytes)
        except Exception:
            return None
        probes = {0, self.dataset.shape[0] - 1}
        if self.dataset.chunks is not None and self.dsid.get_num_chunks():
            probes.add(int(self.dsid.get_chunk_info(0).chunk_offset[0]))  # an allocated chunk
        checked = 0
        try:
            for r in sorted(probes):
                probe = np.empty_like(row)
                if fast.read_into(r, r + 1, probe):
                    self._h5py_read(r, r + 1, row)
                    if row.tobytes() != probe.tobytes():
                        raise ValueError("fast-path bytes differ from h5py's")
                    checked += 1
        except Exception:
            checked = 0
        if not checked:
            fast.close()
            return None
        return fast

    def close(self) -> None:
        for fast in (self.raw, self.decoded):
            if fast is not None:
                fast.close()

    def read_into(self, start: int, stop: int, dest: np.ndarray) -> None:
        if self.raw is not None and self.raw.read_into(start, stop, dest):
            return
        if self.decoded is not None:
            try:
                if self.decoded.read_into(start, stop, dest):
                    return
            except Exception:
                # a chunk that does not decode here: h5py reads it, and its error (naming
                # HDF5's reason) is the one reported; if h5py can read what we could not,
                # our decoder is wrong for this data and h5py reads the rest too
                self._h5py_read(start, stop, dest)
                self.decoded.close()
                self.decoded = None
                return
        self._h5py_read(start, stop, dest)

    def _h5py_read(self, start: int, stop: int, dest: np.ndarray) -> None:
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


def _close(f, handles: Dict[int, _Handle]) -> None:
    for handle in handles.values():
        handle.close()
    f.close()


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
            _, (f, handles) = self._open.popitem(last=False)
            _close(f, handles)

    def _handle(self, fi: int, di: int) -> _Handle:
        entry = self._open.get(fi)
        if entry is None:
            if len(self._open) >= MAX_OPEN_FILES:
                _, (old, old_handles) = self._open.popitem(last=False)
                _close(old, old_handles)
            entry = (h5py.File(self.layout.files[fi].path, "r"), {})
            self._open[fi] = entry
        else:
            self._open.move_to_end(fi)
        f, handles = entry
        handle = handles.get(di)
        if handle is None:
            read, info = self.layout.datasets[di], self.layout.files[fi]
            handle = _Handle(f, read.path, info.cache_bytes[di], read.mem_dtype, info.access[di])
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
    def run(self, di: int, plan: Plan, columns: List[np.ndarray]) -> None:
        """Carry out dataset ``di``'s plan for one block, into the block's output ``columns``."""
        ds = self.layout.datasets[di]
        outs = [columns[c] for c in ds.columns]
        if len(plan.direct):
            self._run_direct(di, plan.direct, outs)
        for gather in plan.gathers:
            for out, src in zip(outs, self._slabs(di, gather.slabs)):
                if gather.out_index is not None:
                    out[gather.out_index] = src[gather.take]
                elif out.dtype == object:
                    out[gather.out_pos:gather.out_pos + len(gather.take)] = src[gather.take]
                else:
                    dest = out[gather.out_pos:gather.out_pos + len(gather.take)]
                    np.take(src, gather.take, axis=0, out=dest)

    def _run_direct(self, di: int, direct: Direct, outs: List[np.ndarray]) -> None:
        files = direct.files
        one_file = bool(np.all(files == files[0]))
        for fi in ([int(files[0])] if one_file else np.unique(files).tolist()):
            mine = slice(None) if one_file else files == fi
            starts, stops, out_pos = direct.starts[mine], direct.stops[mine], direct.out_pos[mine]
            handle = self._handle(fi, di)
            if handle.raw is not None:
                try:
                    if handle.raw.read_runs(starts, stops, out_pos, outs[0]):
                        continue
                except Exception as exc:
                    raise self._failed(exc, fi, di, int(starts.min()), int(stops.max())) from exc
            for start, stop, pos in zip(starts.tolist(), stops.tolist(), out_pos.tolist()):
                self._direct(fi, di, start, stop, [o[pos:pos + stop - start] for o in outs])

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
            pos, first = 0, 0
            while first < len(slabs):  # consecutive slabs of one file: one vectorised raw call
                fi, last = slabs[first][0], first + 1
                while last < len(slabs) and slabs[last][0] == fi:
                    last += 1
                group = slabs[first:last]
                handle = self._handle(fi, di)
                starts = np.array([s[1] for s in group], dtype=np.int64)
                stops = np.array([s[2] for s in group], dtype=np.int64)
                at = pos + np.concatenate([[0], np.cumsum(stops - starts)[:-1]]).astype(np.int64)
                try:
                    if handle.raw is None or not handle.raw.read_runs(starts, stops, at, scratch):
                        for start, stop, a in zip(starts.tolist(), stops.tolist(), at.tolist()):
                            handle.read_into(start, stop, scratch[a:a + stop - start])
                except Exception as exc:
                    raise self._failed(exc, fi, di, int(starts.min()), int(stops.max())) from exc
                pos += int((stops - starts).sum())
                first = last
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
