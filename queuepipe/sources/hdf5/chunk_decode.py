"""Compressed chunks decoded by queuepipe instead of by HDF5: deflate (gzip) and shuffle.

Why: HDF5 decodes every chunk while holding h5py's global lock, so thread workers
cannot decompress in parallel, and its deflate filter runs stock zlib.  Here the worker
reads a chunk's stored bytes with ``os.pread`` at the offset HDF5 reports, inflates them
with ISA-L (the ``isal`` package, a much faster inflate than zlib's) when it is installed
or with ``zlib`` otherwise, and undoes the shuffle filter in numpy -- all three release
the GIL and none holds h5py's lock.  What that gains over h5py, with either inflater, is
measured in BENCHMARKS.md (W5 and "Where the time goes").

Only what can be checked is taken over: numeric native-order data in chunks of any shape
(chunks that cut rows into pieces too, as h5py's automatic chunking does), with filter
chains made only of deflate and shuffle, or none (per-chunk filter masks honoured).
Everything else -- and any chunk never written (fill value) -- is read by h5py, and a
worker compares a few rows against h5py's when it opens a dataset (:class:`.reader._Handle`).
``QUEUEPIPE_INFLATE=zlib`` forces stock zlib (``isal`` the opposite).
"""
from __future__ import annotations

import os
import zlib
from collections import OrderedDict
from typing import Callable, Iterable, List, Optional, Tuple

import numpy as np

from ...errors import ArgumentError, HDF5ReadError, MissingDependencyError
from .chunk_table import ChunkTable, StoredBytes, chunk_shape, stored_as_read

DEFLATE, SHUFFLE = 1, 2
DECODABLE_FILTERS = frozenset((DEFLATE, SHUFFLE))
CACHED_CHUNKS = 2  # decoded chunks kept for reads that stop or start inside a chunk


def inflater() -> Tuple[str, Callable[[bytes, int], bytes]]:
    """(name, ``inflate(data, size)``) for zlib-wrapped deflate data of ``size`` bytes
    decoded: ISA-L when installed, else zlib.

    The output buffer hint differs per library: ISA-L needs one spare byte to finish
    without growing (and so copying) its buffer; zlib is fastest with the exact size.
    """
    choice = os.environ.get("QUEUEPIPE_INFLATE", "auto").strip().lower() or "auto"
    if choice not in ("auto", "isal", "zlib"):
        raise ArgumentError(f"QUEUEPIPE_INFLATE must be 'auto', 'isal' or 'zlib', not {choice!r}")
    if choice != "zlib":
        try:
            from isal import isal_zlib
        except ImportError:
            if choice == "isal":
                raise MissingDependencyError("QUEUEPIPE_INFLATE=isal, but the isal package is not installed "
                                  "(pip install isal)") from None
        else:
            isal_decompress = isal_zlib.decompress
            return "isal", lambda data, size: isal_decompress(data, 15, size + 1)
    zlib_decompress = zlib.decompress
    return "zlib", lambda data, size: zlib_decompress(data, 15, size)


def decodable(codes: Iterable[int]) -> bool:
    """Whether a filter chain (HDF5 filter ids, in order) is one this module decodes (none
    at all included: stored bytes are then the data)."""
    return all(code in DECODABLE_FILTERS for code in codes)


def unshuffle(src, itemsize: int, out: np.ndarray) -> None:
    """Undo HDF5's shuffle filter: byte k of every element was stored in the k-th plane."""
    data = np.frombuffer(src, dtype=np.uint8)
    n = len(out) // itemsize
    body = n * itemsize
    if itemsize <= 1 or n == 0:
        out[:] = data
        return
    for k in range(itemsize):  # one strided copy per byte plane (numpy releases the GIL)
        out[k:body:itemsize] = data[k * n:(k + 1) * n]
    if body < len(out):  # HDF5 leaves a tail that is not a whole element as it is
        out[body:] = data[body:]


class DecodedChunks(StoredBytes):
    """A :class:`.reader.RowReader` for chunked, deflate/shuffle-compressed, native-order
    numeric datasets (and unfiltered ones whose chunks cut rows into pieces).

    ``chain`` is the dataset's filter chain in HDF5's order (as written); reading undoes
    it back to front, skipping the filters a chunk's mask says were not applied (HDF5
    skips an optional filter, e.g. deflate, on a chunk it could not shrink).  A chunk
    never written (fill value) is a request it cannot serve.
    """

    # a chunk this decoder rejects may still be valid HDF5: h5py reads it and has the last word
    errors_are_final = False

    def __init__(self, dsid, mem_dtype: Optional[np.dtype]):
        """``mem_dtype``: unused, the dataset's own dtype (see :meth:`can_read`)."""
        super().__init__(dsid)
        try:
            self._setup(dsid)
        except BaseException:
            self.close()  # the descriptor StoredBytes opened
            raise

    def _setup(self, dsid) -> None:
        chunks = chunk_shape(dsid)
        self.shape = tuple(int(d) for d in dsid.shape)
        self.chunk_shape = chunks
        self.chunk_rows = chunks[0]
        self.dtype = dsid.dtype
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self.chunk_bytes = int(np.prod(chunks, dtype=np.int64)) * self.dtype.itemsize
        self.chain = filter_chain(dsid)
        self.table = ChunkTable(dsid, self.shape[0], chunks)
        self.whole_rows = chunks[1:] == self.shape[1:]  # a chunk is whole rows, back to back
        # keep two row bands decoded (reads that stop or start inside one), at most ~256 MiB
        self._cache_chunks = max(CACHED_CHUNKS, min(2 * self.table.band, (256 << 20) // self.chunk_bytes))
        self.inflater_name, self.inflate = inflater()
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()

    @classmethod
    def can_read(cls, dsid, mem_dtype: Optional[np.dtype]) -> bool:
        """Whether the dataset is chunked, stored as read, filtered only with deflate and
        shuffle, and has something to decode: filters, or chunks that cut rows (unfiltered
        whole-row chunks are plain rows, which :class:`.raw_rows.RawRows` reads)."""
        chunks = chunk_shape(dsid)
        if chunks is None or not stored_as_read(dsid, mem_dtype):
            return False
        codes = [code for code, _itemsize in filter_chain(dsid)]
        whole_rows = chunks[1:] == tuple(int(d) for d in dsid.shape[1:])
        return decodable(codes) and (bool(codes) or not whole_rows)

    @classmethod
    def describe(cls) -> str:
        return f"queuepipe's deflate/shuffle decoder ({inflater()[0]})"

    def read_runs(self, starts: np.ndarray, stops: np.ndarray, out_pos: np.ndarray, dest: np.ndarray) -> bool:
        """Rows ``[starts[i], stops[i])`` into rows ``out_pos[i]...`` of C-contiguous ``dest``;
        False, having read nothing, if any of their chunks was never written."""
        runs = list(zip(starts.tolist(), stops.tolist(), out_pos.tolist()))
        cr, band, locate = self.chunk_rows, self.table.band, self.table.locate
        for start, stop, _pos in runs:
            for n in range((start // cr) * band, ((stop - 1) // cr + 1) * band):
                if locate(n) < 0:
                    return False
        for start, stop, pos in runs:
            first, last, target = start // cr, (stop - 1) // cr, dest[pos:pos + stop - start]
            if self.whole_rows:
                self._rows_of_whole_row_chunks(start, stop, first, last, target)
            else:
                self._rows_of_split_chunks(start, stop, first, last, target)
        return True

    def _rows_of_whole_row_chunks(self, start: int, stop: int, first: int, last: int,
                                  target: np.ndarray) -> None:
        cr, rb = self.chunk_rows, self.row_bytes
        flat = target.reshape(-1).view(np.uint8)
        for c in range(first, last + 1):
            lo, hi = max(start, c * cr), min(stop, (c + 1) * cr)
            out = flat[(lo - start) * rb:(hi - start) * rb]
            if hi - lo == cr:
                self._decode(c, out)       # a whole chunk: decoded straight into place
            else:
                out[:] = self._decoded(c)[(lo - c * cr) * rb:(hi - c * cr) * rb]

    def _rows_of_split_chunks(self, start: int, stop: int, first: int, last: int,
                              target: np.ndarray) -> None:
        """Chunks that cut rows into pieces: each is decoded whole, then its piece copied."""
        cr, band, cs = self.chunk_rows, self.table.band, self.chunk_shape
        for rc in range(first, last + 1):
            lo, hi = max(start, rc * cr), min(stop, (rc + 1) * cr)
            for t, corner in enumerate(self.table.corners):
                chunk = self._decoded(rc * band + t).view(self.dtype).reshape(cs)
                ends = [min(x + c, d) for x, c, d in zip(corner, cs[1:], self.shape[1:])]
                into = (slice(lo - start, hi - start),) + tuple(slice(x, e) for x, e in zip(corner, ends))
                part = (slice(lo - rc * cr, hi - rc * cr),) + tuple(slice(0, e - x) for x, e in zip(corner, ends))
                target[into] = chunk[part]

    def _decoded(self, c: int) -> np.ndarray:
        chunk = self._cache.get(c)
        if chunk is None:
            chunk = np.empty(self.chunk_bytes, dtype=np.uint8)
            self._decode(c, chunk)
            self._cache[c] = chunk
            while len(self._cache) > self._cache_chunks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(c)
        return chunk

    def _decode(self, c: int, out: np.ndarray) -> None:
        t = self.table
        offset, size, mask = int(t.offsets[c]), int(t.sizes[c]), int(t.masks[c])
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise self.short_read(size, offset)
        steps = [f for i, f in reversed(list(enumerate(self.chain))) if not mask >> i & 1]
        for n, (code, itemsize) in enumerate(steps):
            last = n == len(steps) - 1
            if code == DEFLATE:
                data = self.inflate(data, self.chunk_bytes)
            else:
                self._check_size(c, len(data), "shuffled")
                target = out if last else np.empty(self.chunk_bytes, dtype=np.uint8)
                unshuffle(data, itemsize, target)
                data = target
        if data is not out:
            self._check_size(c, len(data), "stored" if not steps else "inflated")
            out[:] = np.frombuffer(data, dtype=np.uint8)

    def _check_size(self, c: int, got: int, what: str) -> None:
        if got != self.chunk_bytes:
            raise HDF5ReadError(f"chunk at {self.table.coord(c)}: {what} size is {got} bytes, "
                                f"expected {self.chunk_bytes}")


def filter_chain(dsid) -> List[Tuple[int, int]]:
    """The dataset's HDF5 filter chain, in HDF5's order: (filter id, element size) of each
    filter (the size is what shuffle needs; the dtype's for other filters)."""
    dcpl = dsid.get_create_plist()
    out = []
    for i in range(dcpl.get_nfilters()):
        code, _flags, values, _name = dcpl.get_filter(i)
        code = int(code)
        itemsize = int(values[0]) if code == SHUFFLE and len(values) else dsid.dtype.itemsize
        out.append((code, itemsize))
    return out
