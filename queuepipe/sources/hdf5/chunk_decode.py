"""Compressed chunks decoded by queuepipe instead of by HDF5: deflate (gzip) and shuffle.

Why: HDF5 decodes every chunk while holding h5py's global lock, so thread workers
cannot decompress in parallel, and its deflate filter runs stock zlib.  Here the worker
reads a chunk's stored bytes with ``os.pread`` at the offset HDF5 reports, inflates them
with ISA-L (the ``isal`` package, ~2.5x zlib's speed) when it is installed or with
``zlib`` otherwise, and undoes the shuffle filter in numpy -- all three release the GIL
and none holds h5py's lock.  On the reference machine a worker decodes the W5 file
~1.03x (zlib) to ~2.3x (ISA-L) faster than h5py reading it (BENCHMARKS.md).

Only what can be checked is taken over: numeric native-order data in chunks of any shape
(chunks that cut rows into pieces too, as h5py's automatic chunking does), with filter
pipelines made only of deflate and shuffle, or none (per-chunk filter
masks honoured).  Everything else -- and any chunk never written (fill value) -- is
read by h5py as before, and the reader compares a few rows against h5py's when it opens
a dataset.  ``QUEUEPIPE_INFLATE=zlib`` forces stock zlib (``isal`` the opposite).
"""
from __future__ import annotations

import os
import zlib
from collections import OrderedDict
from typing import Callable, List, Sequence, Tuple

import numpy as np
from .chunk_table import ChunkTable, StoredBytes

DEFLATE, SHUFFLE = 1, 2
DECODABLE_FILTERS = frozenset((DEFLATE, SHUFFLE))
CACHED_CHUNKS = 2  # decoded chunks kept for reads that stop or start inside a chunk


def inflater() -> Tuple[str, Callable[[bytes, int], bytes]]:
    """(name, ``inflate(data, size)``) for zlib-wrapped deflate data of ``size`` bytes
    decoded: ISA-L when installed, else zlib.

    The output buffer hint differs per library (measured on the W5 chunks, 1 MiB each):
    ISA-L needs one spare byte to finish without growing (and copying) its buffer, 30 %
    faster than the exact size; zlib is fastest with the exact size.
    """
    choice = os.environ.get("QUEUEPIPE_INFLATE", "auto").strip().lower() or "auto"
    if choice not in ("auto", "isal", "zlib"):
        raise ValueError(f"QUEUEPIPE_INFLATE must be 'auto', 'isal' or 'zlib', not {choice!r}")
    if choice != "zlib":
        try:
            from isal import isal_zlib
        except ImportError:
            if choice == "isal":
                raise ImportError("QUEUEPIPE_INFLATE=isal, but the isal package is not installed "
                                  "(pip install isal)") from None
        else:
            isal_decompress = isal_zlib.decompress
            return "isal", lambda data, size: isal_decompress(data, 15, size + 1)
    zlib_decompress = zlib.decompress
    return "zlib", lambda data, size: zlib_decompress(data, 15, size)


def decodable(filters: Sequence[Tuple[int, str, int]]) -> bool:
    """Whether a filter pipeline ((id, name, flags), ...) is one this module decodes (none
    at all included: stored bytes are then the data)."""
    return all(code in DECODABLE_FILTERS for code, _name, _flags in filters)


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
    """Rows of a chunked, deflate/shuffle-compressed, native-order numeric dataset.

    ``pipeline`` is the dataset's filter list in HDF5's order (as written); reading
    undoes it back to front, skipping the filters a chunk's mask says were not applied
    (HDF5 skips an optional filter, e.g. deflate, on a chunk it could not shrink).
    """

    def __init__(self, dsid, n_rows: int, row_bytes: int, pipeline: List[Tuple[int, int]]):
        super().__init__(dsid)
        dcpl = dsid.get_create_plist()
        chunk_shape = tuple(int(c) for c in dcpl.get_chunk())
        self.shape = tuple(int(d) for d in dsid.shape)
        self.chunk_shape = chunk_shape
        self.chunk_rows = chunk_shape[0]
        self.row_bytes = row_bytes
        self.dtype = dsid.dtype
        self.chunk_bytes = int(np.prod(chunk_shape, dtype=np.int64)) * self.dtype.itemsize
        self.pipeline = pipeline
        self.table = ChunkTable(dsid, n_rows, chunk_shape)
        self.whole_rows = chunk_shape[1:] == self.shape[1:]  # a chunk is whole rows, back to back
        # keep two row bands decoded (reads that stop or start inside one), at most ~256 MiB
        self._cache_chunks = max(CACHED_CHUNKS, min(2 * self.table.band, (256 << 20) // self.chunk_bytes))
        self.inflater_name, self.inflate = inflater()
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()

    def read_into(self, start: int, stop: int, dest: np.ndarray) -> bool:
        """Rows [start, stop) into ``dest``; False (nothing read) if a chunk was never written."""
        cr, band = self.chunk_rows, self.table.band
        first, last = start // cr, (stop - 1) // cr
        for n in range((first * band), (last + 1) * band):
            if self.table.locate(n) < 0:
                return False
        target = dest if dest.flags.c_contiguous else np.empty(dest.shape, dest.dtype)
        if self.whole_rows:
            self._rows_of_whole_row_chunks(start, stop, first, last, target)
        else:
            self._rows_of_split_chunks(start, stop, first, last, target)
        if target is not dest:
            dest[...] = target
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
        steps = [f for i, f in reversed(list(enumerate(self.pipeline))) if not mask >> i & 1]
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
            raise ValueError(f"chunk at {self.table.coord(c)}: {what} size is {got} bytes, "
                             f"expected {self.chunk_bytes}")


def pipeline_of(dsid) -> List[Tuple[int, int]]:
    """(filter id, shuffle element size) of each filter of a dataset, in HDF5's order."""
    dcpl = dsid.get_create_plist()
    out = []
    for i in range(dcpl.get_nfilters()):
        code, _flags, values, _name = dcpl.get_filter(i)
        code = int(code)
        itemsize = int(values[0]) if code == SHUFFLE and len(values) else dsid.dtype.itemsize
        out.append((code, itemsize))
    return out
