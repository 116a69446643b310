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
cause -- a failure to open a file or a dataset, or to read its chunk index, names the file,
the dataset and the cause (and leaves nothing open).  HDF5 reads zeros past the end of a
file cut short after it was opened, so every read HDF5 serves is bracketed by a size
check (:class:`FileSize`); the ``preadv`` and decoder paths see such a file as a short read.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import ClassVar, Dict, List, Optional, Protocol, Sequence, Tuple, Type

import h5py
import numpy as np
from h5py import h5d, h5i, h5p

from ...errors import HDF5ReadError
from .chunk_table import external_raw_files, index_error, shorter_than_data
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


class FileSize:
    """The size a worker's open HDF5 file must keep while it is read: the end of what HDF5
    found allocated in it when the worker opened it.

    HDF5 checks a file's size only when it opens it.  A file truncated afterwards reads as
    zeros past its new end -- whatever the dtype or filter -- or, for a variable-length
    string's heap, may keep HDF5 from returning at all.  So every read HDF5 serves is
    checked against this before and after (one ``fstat`` each; see :meth:`_Handle.check_size`).
    The ``preadv`` and decoder paths need no check: a read past the end comes back short
    (:meth:`.chunk_table.StoredBytes.short_read`).
    """

    def __init__(self, fid):
        self.path = os.fsdecode(fid.name)
        try:
            self.fd: Optional[int] = int(fid.get_vfd_handle())  # HDF5's own descriptor (sec2)
        except Exception:
            self.fd = None
        self.needed = int(fid.get_filesize())  # max(size at open, end of allocated space)

    def check(self) -> None:
        """Raise :class:`HDF5ReadError` if the file is now shorter than its data."""
        size = os.fstat(self.fd).st_size if self.fd is not None else os.stat(self.path).st_size
        if size < self.needed:
            raise HDF5ReadError(shorter_than_data(size, self.needed))


class _Handle:
    """One dataset opened in one file, with its readers, which serve every numeric read.

    ``readers``: the reader classes the layout lists for this dataset, in the order they
    are tried, h5py last.  h5py's reader is the reference: any other is kept only if a few
    rows read through it equal h5py's when the dataset is opened.  Opening reads the
    dataset's object header and, where a faster reader applies, its chunk index; any
    failure there is raised (:meth:`WorkerFiles._handle` names the file and dataset), and
    whatever was opened before it is closed.
    """

    def __init__(self, f, path: str, cache_bytes: int, mem_dtype: Optional[np.dtype],
                 readers: Sequence[Type[RowReader]]):
        dapl = h5p.create(h5p.DATASET_ACCESS)
        # 0 bytes: uncompressed chunks are read straight into our buffers, not via the cache
        dapl.set_chunk_cache(1009 if cache_bytes else 0, cache_bytes, 1.0)
        self.readers: List[RowReader] = []
        self.dsid = h5d.open(f.id, path.encode("utf-8"), dapl)
        self.dataset = h5py.Dataset(self.dsid)
        # the file the data is in (another one, through an external link) and any external
        # raw data files, (path, bytes each must hold): checked around every h5py read
        self.size = FileSize(h5i.get_file_id(self.dsid))
        self.external = external_raw_files(self.dsid, self.size.path)
        self.check_size()
        self.h5py = H5pyRows(self.dsid, mem_dtype)
        try:
            probes: Optional[List[int]] = None
            for cls in readers:
                if cls is H5pyRows:
                    self.readers.append(self.h5py)
                    continue
                if probes is None:
                    probes = self._probe_rows()
                reader = self._checked(cls, mem_dtype, probes)
                if reader is not None:
                    self.readers.append(reader)
        except BaseException:
            self.close()
            raise

    def _probe_rows(self) -> List[int]:
        """Rows a faster reader is checked on: the first, the last and the first of the first
        allocated chunk -- which reads the chunk index: a damaged one is an error here."""
        n = int(self.dataset.shape[0])
        probes = {0, n - 1}
        if self.dataset.chunks is not None:
            try:
                if self.dsid.get_num_chunks():
                    first = self.dsid.get_chunk_info(0).chunk_offset
                    if first is not None:  # None: HDF5 finds no address (reads give the fill value)
                        probes.add(int(first[0]))  # an allocated chunk
            except Exception as exc:
                raise index_error(exc) from exc
        return sorted(probes)

    def _checked(self, cls: Type[RowReader], mem_dtype: Optional[np.dtype], probes: List[int]
                 ) -> Optional[RowReader]:
        """A ``cls`` reader of this dataset if rows read through it equal h5py's, else None."""
        try:
            reader = cls(self.dsid, mem_dtype)
        except Exception:
            return None
        row = np.empty((1,) + self.dataset.shape[1:], self.dataset.dtype)
        checked, at_zero = 0, np.zeros(1, np.int64)
        try:
            for r in probes:
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

    def check_size(self) -> None:
        """Raise :class:`HDF5ReadError` if the file, or an external raw data file, is now
        shorter than the data it holds (HDF5 would read zeros there).  Called before and
        after every read HDF5 serves; never on the ``preadv`` path."""
        self.size.check()
        for name, needed in self.external:
            try:
                size = os.stat(name).st_size
            except OSError as exc:
                raise HDF5ReadError(f"external raw data file {name} cannot be read: {exc}") from None
            if size < needed:
                raise HDF5ReadError(f"external raw data file {name}: " + shorter_than_data(size, needed))

    def records(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a numpy array (strings and compounds), read by h5py."""
        self.check_size()
        try:
            data = self.dataset[start:stop]
        except Exception:
            self.check_size()  # a file cut short: say so, not HDF5's symptom of it
            raise
        self.check_size()
        return data

    def read_runs(self, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray, dest: np.ndarray) -> None:
        """Rows ``[starts[i], stops[i])`` into rows ``out_pos[i]...`` of C-contiguous ``dest``.

        The readers are asked in order.  One that cannot serve a request passes it on -- a
        request of several runs is first split into single runs, so only the runs it
        cannot serve (those touching an unallocated chunk) go further down the list.  An
        error from a reader whose errors are not final (the decoder) is overruled by h5py
        (:meth:`_overrule`); any other error is raised.  A read h5py serves is bracketed by
        :meth:`check_size`.
        """
        for reader in self.readers:
            hdf5 = reader is self.h5py
            if hdf5:
                self.check_size()
            try:
                done = reader.read_runs(starts, stops, out_pos, dest)
            except Exception:
                if reader.errors_are_final:
                    if hdf5:
                        self.check_size()
                    raise
                self._overrule(reader, starts, stops, out_pos, dest)
                return
            if done:
                if hdf5:
                    self.check_size()
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
        dataset, and the readers after it serve the rest.  A file cut short fails
        :meth:`check_size` first (the reader's short read was the file's fault)."""
        self.check_size()
        try:
            self.h5py.read_runs(starts, stops, out_pos, dest)
        except Exception:
            self.check_size()
            raise
        self.check_size()
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


def _text(exc: BaseException) -> str:
    """``Type: message`` of an h5py error (a KeyError's message without its quotes)."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return f"{type(exc).__name__}: {message}"


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
        """Dataset ``di`` of file ``fi``, opened on first use.  Any failure to open the file or
        the dataset, or to read its chunk index, is a :class:`HDF5ReadError` naming the file,
        the dataset and the cause; nothing opened on the way is left open."""
        entry = self._open.get(fi)
        if entry is None:
            if len(self._open) >= MAX_OPEN_FILES:
                _, (old, old_handles) = self._open.popitem(last=False)
                _close(old, old_handles)
            entry = (self._open_file(self.layout.files[fi].path), {})
            self._open[fi] = entry
        else:
            self._open.move_to_end(fi)
        f, handles = entry
        handle = handles.get(di)
        if handle is None:
            read, info = self.layout.datasets[di], self.layout.files[fi]
            try:
                handle = _Handle(f, read.path, info.cache_bytes[di], read.mem_dtype, info.readers[di])
            except Exception as exc:
                cause = str(exc) if isinstance(exc, HDF5ReadError) else \
                    f"opening the dataset failed: {_text(exc)}"
                raise HDF5ReadError(f"{info.path}: dataset '{read.path}': {cause}") from exc
            handles[di] = handle
        return handle

    @staticmethod
    def _open_file(path: str) -> h5py.File:
        """``path`` opened read-only, checked to be no shorter than HDF5 says its data is."""
        try:
            f = h5py.File(path, "r")
        except Exception as exc:
            raise HDF5ReadError(f"{path}: opening the file failed: {_text(exc)}") from exc
        try:
            FileSize(f.id).check()
        except Exception as exc:
            f.close()
            cause = str(exc) if isinstance(exc, HDF5ReadError) else f"opening the file failed: {_text(exc)}"
            raise HDF5ReadError(f"{path}: {cause}") from exc
        return f

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
                handle.check_size()  # a file cut short: no probing reads (HDF5 may not return)
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
            handle = self._handle(fi, di)  # an error opening it names the file and dataset itself
            try:  # every block of an in-order read comes here: one call down to the reader
                handle.read_runs(starts, stops, out_pos, outs[0])
            except Exception as exc:
                raise self._failed(exc, fi, di, int(starts.min()), int(stops.max())) from exc

    def _records(self, fi: int, di: int, start: int, stop: int, dests: List[np.ndarray]) -> None:
        """Rows [start, stop) of a string or compound dataset, copied into ``dests`` (one per column)."""
        handle = self._handle(fi, di)
        try:
            data = handle.records(start, stop)
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
                handle = self._handle(fi, di)
                try:
                    handle.read_runs(starts, stops, at, scratch)
                except Exception as exc:
                    raise self._failed(exc, fi, di, int(starts.min()), int(stops.max())) from exc
                pos += int((stops - starts).sum())
                first = last
            return [scratch[:rows]]
        pieces = []
        for fi, start, stop in slabs:
            handle = self._handle(fi, di)
            try:
                pieces.append(handle.records(start, stop))
            except Exception as exc:
                raise self._failed(exc, fi, di, start, stop) from exc
        out = []
        for col in ds.columns:
            column = self.layout.columns[col]
            parts = [_field(piece, column.field).astype(column.dtype, copy=False) for piece in pieces]
            out.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        return out
