"""Worker-side reading: a worker's own file handles, and the planned reads of one block.

Files are opened here, inside the worker (a thread or a child process), never in the
parent.  Numeric rows are read straight into the caller's buffers by the dataset's
readers (:class:`RowReader`), fastest first: plain rows with ``os.preadv`` at their file
offsets (:mod:`.raw_rows`), deflate/shuffle chunks decoded here, outside h5py's lock
(:mod:`.chunk_decode`), and everything else by HDF5 itself (:mod:`.h5py_rows`), which
converts big-endian data to native order on the way.  Which readers apply to a dataset
was settled when the pipeline was built (``FileInfo.readers``: each reader's
``can_read``); each faster one is checked against h5py when a worker opens the dataset.
Strings and compounds are read as numpy arrays and copied into the output columns.  Any
failure becomes a :class:`HDF5ReadError` naming the file, the dataset, the rows and the
cause.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar, Dict, List, Optional, Protocol, Sequence, Tuple, Type

import h5py
import numpy as np
from h5py import h5d, h5p

from ...errors import HDF5ReadError
from .h5py_rows import H5pyRows
from .inspect import Layout, filter_available, filters_of, missing_filter_message
from .planning import Direct, Plan

MAX_OPEN_FILES = 32


class RowReader(Protocol):
    """One way of reading a dataset's rows into a buffer.

    Implemented by :class:`.raw_rows.RawRows`, :class:`.chunk_decode.DecodedChunks` and
    :class:`.h5py_rows.H5pyRows`.  A reader is built as ``cls(dsid, mem_dtype)`` (the
    dataset's low-level h5py id and the dtype the rows are wanted in) only for a dataset
    whose ``can_read`` said yes, and is owned by one :class:`_Handle`.
    """

    #: True: an exception from :meth:`read_runs` is the data's fault and is reported.
    #: False: it may be the reader's own limit, so h5py reads the request instead and
    #: has the last word (see :meth:`_Handle.read_runs`).
    errors_are_final: ClassVar[bool]

    def __init__(self, dsid, mem_dtype: Optional[np.dtype]) -> None: ...

    @classmethod
    def can_read(cls, dsid, mem_dtype: Optional[np.dtype]) -> bool:
        """Whether this reader applies to the dataset (asked once, when the pipeline is built)."""

    @classmethod
    def describe(cls) -> str:
        """A human name of this way of reading (``queuepipe bench`` prints it per dataset)."""

    def read_runs(self, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray, dest: np.ndarray) -> bool:
        """Rows ``[starts[i], stops[i])`` (int64 arrays) into rows ``out_pos[i]...`` of
        C-contiguous ``dest``.  False: this reader cannot serve this request (an unallocated
        chunk, say), and it has read nothing."""

    def close(self) -> None:
        """Release what the reader holds (a file descriptor)."""


class _Handle:
    """One dataset opened in one file, with its readers, which serve every numeric read.

    ``readers``: the reader classes the layout lists for this dataset, in the order they
    are tried, h5py last.  h5py's reader is the reference: any other is kept only if a few
    rows read through it equal h5py's when the dataset is opened.
    """

    def __init__(self, f, path: str, cache_bytes: int, mem_dtype: Optional[np.dtype],
                 readers: Sequence[Type[RowReader]]):
        dapl = h5p.create(h5p.DATASET_ACCESS)
        # 0 bytes: uncompressed chunks are read straight into our buffers, not via the cache
        dapl.set_chunk_cache(1009 if cache_bytes else 0, cache_bytes, 1.0)
        self.dsid = h5d.open(f.id, path.encode("utf-8"), dapl)
        self.dataset = h5py.Dataset(self.dsid)
        self.h5py = H5pyRows(self.dsid, mem_dtype)
        opened = (self.h5py if cls is H5pyRows else self._checked(cls, mem_dtype) for cls in readers)
        self.readers: List[RowReader] = [r for r in opened if r is not None]

    def _checked(self, cls: Type[RowReader], mem_dtype: Optional[np.dtype]) -> Optional[RowReader]:
        """A ``cls`` reader of this dataset if rows read through it equal h5py's, else None."""
        try:
            reader = cls(self.dsid, mem_dtype)
        except Exception:
            return None
        row = np.empty((1,) + self.dataset.shape[1:], self.dataset.dtype)
        probes = {0, self.dataset.shape[0] - 1}
        if self.dataset.chunks is not None and self.dsid.get_num_chunks():
            probes.add(int(self.dsid.get_chunk_info(0).chunk_offset[0]))  # an allocated chunk
        checked, at_zero = 0, np.zeros(1, np.int64)
        try:
            for r in sorted(probes):
                probe, first = np.empty_like(row), np.array([r], np.int64)
                if reader.read_runs(first, first + 1, at_zero, probe):
                    self.h5py.read_stretch(r, r + 1, row)
                    if row.tobytes() != probe.tobytes():
                        raise ValueError("the reader's bytes differ from h5py's")
                    checked += 1
        except Exception:
            checked = 0
        if not checked:
            reader.close()
            return None
        return reader

    def close(self) -> None:
        for reader in self.readers:
            reader.close()

    def read_runs(self, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray, dest: np.ndarray) -> None:
        """Rows ``[starts[i], stops[i])`` into rows ``out_pos[i]...`` of C-contiguous ``dest``.

        The readers are asked in order.  One that cannot serve a request passes it on -- a
        request of several runs is first split into single runs, so only the runs it
        cannot serve (those touching an unallocated chunk) go further down the list.  An
        error from a reader whose errors are not final (the decoder) is overruled by h5py
        (:meth:`_overrule`); any other error is raised.
        """
        for reader in self.readers:
            try:
                if reader.read_runs(starts, stops, out_pos, dest):
                    return
            except Exception:
                if reader.errors_are_final:
                    raise
                self._overrule(reader, starts, stops, out_pos, dest)
                return
            if len(starts) > 1:
                for i in range(len(starts)):
                    self.read_runs(starts[i:i + 1], stops[i:i + 1], out_pos[i:i + 1], dest)
                return
        raise HDF5ReadError("none of this dataset's readers could read these rows")

    def _overrule(self, reader: RowReader, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray,
                  dest: np.ndarray) -> None:
        """h5py reads a request ``reader`` failed on.  If h5py fails too, its error -- naming
        HDF5's reason -- is the one reported, and ``reader`` stays.  If h5py reads what
        ``reader`` could not, ``reader`` is wrong for this data: it is dropped for this
        dataset, and the readers after it serve the rest."""
        self.h5py.read_runs(starts, stops, out_pos, dest)
        self.readers = [r for r in self.readers if r is not reader]
        reader.close()


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
            handle = _Handle(f, read.path, info.cache_bytes[di], read.mem_dtype, info.readers[di])
            handles[di] = handle
        return handle

    def _failed(self, exc: BaseException, fi: int, di: int, start: int, stop: int) -> HDF5ReadError:
        info = self.layout.files[fi]
        path = self.layout.datasets[di].path
        first = sum(f.n_rows for f in self.layout.files[:fi])
        cause = str(exc) if isinstance(exc, HDF5ReadError) else f"{type(exc).__name__}: {exc}"
        message = (f"{info.path}: dataset '{path}': reading rows {start}..{stop - 1} (global rows "
                   f"{first + start}..{first + stop - 1}) failed: {cause}")
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
    def read_plan(self, di: int, plan: Plan, columns: List[np.ndarray]) -> None:
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
        """Runs of rows read straight into their places in the output columns."""
        numeric = self.layout.datasets[di].kind == "numeric"
        files = direct.files
        one_file = bool(np.all(files == files[0]))
        for fi in ([int(files[0])] if one_file else np.unique(files).tolist()):
            mine = slice(None) if one_file else files == fi
            starts, stops, out_pos = direct.starts[mine], direct.stops[mine], direct.out_pos[mine]
            if not numeric:
                for start, stop, pos in zip(starts.tolist(), stops.tolist(), out_pos.tolist()):
                    self._records(fi, di, start, stop, [o[pos:pos + stop - start] for o in outs])
                continue
            try:  # every block of an in-order read comes here: one call down to the reader
                self._handle(fi, di).read_runs(starts, stops, out_pos, outs[0])
            except Exception as exc:
                raise self._failed(exc, fi, di, int(starts.min()), int(stops.max())) from exc

    def _records(self, fi: int, di: int, start: int, stop: int, dests: List[np.ndarray]) -> None:
        """Rows [start, stop) of a string or compound dataset, copied into ``dests`` (one per column)."""
        try:
            data = self._handle(fi, di).dataset[start:stop]
        except Exception as exc:
            raise self._failed(exc, fi, di, start, stop) from exc
        for dest, col in zip(dests, self.layout.datasets[di].columns):
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
            while first < len(slabs):  # consecutive slabs of one file: one request
                fi, last = slabs[first][0], first + 1
                while last < len(slabs) and slabs[last][0] == fi:
                    last += 1
                group = slabs[first:last]
                starts = np.array([s[1] for s in group], dtype=np.int64)
                stops = np.array([s[2] for s in group], dtype=np.int64)
                at = pos + np.concatenate([[0], np.cumsum(stops - starts)[:-1]]).astype(np.int64)
                try:
                    self._handle(fi, di).read_runs(starts, stops, at, scratch)
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
