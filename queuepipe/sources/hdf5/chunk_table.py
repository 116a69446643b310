"""Where each chunk of a dataset is stored in its file: offset, size, filter mask.

Both readers of stored bytes (:class:`.raw_rows.RawRows`, :class:`.chunk_decode.DecodedChunks`)
read chunk bytes themselves and need this.  Chunks are numbered row band by row band:
chunk ``(rc, t)`` -- row band ``rc``, position ``t`` (C order) among the chunks side by
side in a band -- is number ``rc * band + t``.  A dataset of up to :data:`BULK_CHUNKS`
chunks is indexed in one HDF5 call when first used (far cheaper per chunk than one
lookup each); a larger one is looked up chunk by chunk as reads reach it, so opening a
huge file costs nothing up front.  :class:`StoredBytes` is the file itself, opened for
reading those bytes, and :func:`stored_as_read` says whether a dataset's stored elements
are already the values a reader wants.
"""
from __future__ import annotations

import itertools
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from h5py import h5d, h5f

from ...errors import HDF5ReadError

BULK_CHUNKS = 1 << 16
UNKNOWN, UNALLOCATED = -2, -1


class ChunkTable:
    """Per chunk number: ``offsets`` (or UNALLOCATED for a chunk never written, UNKNOWN
    before lookup), ``sizes`` and ``masks``."""

    def __init__(self, dsid, n_rows: int, chunk_shape: Sequence[int]):
        self.dsid = dsid
        self.chunk_shape = tuple(int(c) for c in chunk_shape)
        shape = tuple(int(d) for d in dsid.shape)
        self.grid = tuple(-(-d // c) for d, c in zip(shape[1:], self.chunk_shape[1:]))
        self.band = int(np.prod(self.grid, dtype=np.int64))  # chunks side by side in one row band
        # each chunk's offset within its band, in elements of the trailing dims (C order)
        self.corners: List[Tuple[int, ...]] = [tuple(k * c for k, c in zip(t, self.chunk_shape[1:]))
                                               for t in itertools.product(*(range(g) for g in self.grid))]
        n_chunks = -(-n_rows // self.chunk_shape[0]) * self.band
        self.offsets = np.full(n_chunks, UNKNOWN, dtype=np.int64)
        self.sizes = np.zeros(n_chunks, dtype=np.int64)
        self.masks = np.zeros(n_chunks, dtype=np.int64)
        self._bulk_pending = 0 < n_chunks <= BULK_CHUNKS and hasattr(dsid, "chunk_iter")

    def number(self, coord: Sequence[int]) -> int:
        """The chunk number of the chunk whose first element is at ``coord``."""
        index = 0
        for k, (x, c) in enumerate(zip(coord[1:], self.chunk_shape[1:])):
            index = index * self.grid[k] + x // c
        return (coord[0] // self.chunk_shape[0]) * self.band + index

    def coord(self, n: int) -> Tuple[int, ...]:
        rc, t = divmod(n, self.band)
        return (rc * self.chunk_shape[0],) + self.corners[t]

    def _fill_all(self) -> None:
        """Every chunk in one pass (HDF5 >= 1.14 / 1.12.3 ``H5Dchunk_iter``)."""
        offsets = np.full_like(self.offsets, UNALLOCATED)  # what the pass does not visit
        sizes, masks, number = np.zeros_like(self.sizes), np.zeros_like(self.masks), self.number

        def visit(info):
            n = number(info.chunk_offset)
            offsets[n], sizes[n], masks[n] = info.byte_offset, info.size, info.filter_mask

        try:
            self.dsid.chunk_iter(visit)
        except Exception as exc:  # a damaged index: nothing of this pass is kept
            raise index_error(exc) from exc
        self._bulk_pending = False
        self.offsets, self.sizes, self.masks = offsets, sizes, masks

    def locate(self, n: int) -> int:
        """The file offset of chunk number ``n``, or UNALLOCATED."""
        off = int(self.offsets[n])
        if off == UNKNOWN:
            if self._bulk_pending:
                self._fill_all()
                return int(self.offsets[n])
            try:
                info = self.dsid.get_chunk_info_by_coord(self.coord(n))
            except Exception as exc:
                raise index_error(exc) from exc
            off = UNALLOCATED if info.byte_offset is None else int(info.byte_offset)
            self.offsets[n], self.sizes[n], self.masks[n] = off, int(info.size or 0), int(info.filter_mask)
        return off

    def locate_many(self, chunks: np.ndarray) -> np.ndarray:
        """File offsets of chunk numbers ``chunks``, UNALLOCATED where never written."""
        unknown = chunks[self.offsets[chunks] == UNKNOWN]
        if len(unknown):
            if self._bulk_pending:
                self._fill_all()
            else:
                for c in np.unique(unknown).tolist():
                    self.locate(c)
        return self.offsets[chunks]


def index_error(exc: BaseException) -> HDF5ReadError:
    """The error for a chunk index HDF5 cannot read (the reader names file and dataset)."""
    return HDF5ReadError(f"reading its chunk index failed: {type(exc).__name__}: {exc}")


def stored_as_read(dsid, mem_dtype: Optional[np.dtype]) -> bool:
    """Whether the dataset's stored bytes are the values wanted in memory, ``mem_dtype``:
    numeric, native byte order, no conversion by HDF5 (bools are stored as an enum, so they
    are left to it), and kept in the HDF5 file itself rather than in external files."""
    return (mem_dtype is not None and dsid.dtype == mem_dtype and mem_dtype.kind != "b"
            and dsid.get_create_plist().get_external_count() == 0)


def chunk_shape(dsid) -> Optional[Tuple[int, ...]]:
    """The dataset's chunk shape, or None where it is not chunked."""
    dcpl = dsid.get_create_plist()
    return tuple(int(c) for c in dcpl.get_chunk()) if dcpl.get_layout() == h5d.CHUNKED else None


class StoredBytes:
    """A dataset's file opened for reading its stored bytes directly, outside HDF5."""

    def __init__(self, dsid):
        self.fd: Optional[int] = os.open(os.fsdecode(h5f.get_name(dsid)), os.O_RDONLY)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def short_read(self, wanted: int, offset: int) -> HDF5ReadError:
        """The error for a read that got fewer bytes than HDF5's layout says are there."""
        size = os.fstat(self.fd).st_size
        return HDF5ReadError(f"short read: wanted {wanted} bytes at offset {offset}: "
                             + shorter_than_data(size, offset + wanted))


def shorter_than_data(size: int, end: int) -> str:
    """How every read path words a file cut short: ``size`` bytes on disk, data up to ``end``."""
    return (f"file is shorter than its data: {size} bytes on disk, data ends at {end} "
            f"(truncated while reading?)")


def external_raw_files(dsid, file: str) -> List[Tuple[str, int]]:
    """(path, bytes it must hold) of each external raw data file the dataset's elements are
    stored in (``create_dataset(..., external=...)``); none for data kept in the HDF5 file.

    The dataset's bytes are laid out across the files' segments in order, so each file must
    reach the end of the part of its segment the data uses: HDF5 reads a shorter one as
    zeros.  Relative names resolve as HDF5 resolves them (:func:`external_raw_path`).
    """
    dcpl = dsid.get_create_plist()
    count = dcpl.get_external_count()
    if not count:
        return []
    total = int(np.prod(dsid.shape, dtype=np.int64)) * int(dsid.get_type().get_size())
    try:
        prefix = dsid.get_access_plist().get_efile_prefix()
    except Exception:
        prefix = b""
    needed: Dict[str, int] = {}
    start = 0
    for i in range(count):
        name, offset, size = dcpl.get_external(i)
        used = max(0, min(int(size), total - start))
        start += int(size)
        if used:
            path = external_raw_path(os.fsdecode(name), file, os.fsdecode(prefix or b""))
            needed[path] = max(needed.get(path, 0), int(offset) + used)
    return list(needed.items())


def external_raw_path(name: str, file: str, prefix: str = "") -> str:
    """The absolute path HDF5 opens for external raw data file ``name`` of a dataset in
    ``file``: an absolute name as it is; a relative one under ``$HDF5_EXTFILE_PREFIX`` or the
    dataset access prefix (``${ORIGIN}`` standing for ``file``'s folder), else under the
    current directory."""
    if os.path.isabs(name):
        return name
    prefix = os.environ.get("HDF5_EXTFILE_PREFIX") or prefix
    if prefix and prefix != ".":
        if prefix.startswith("${ORIGIN}"):
            prefix = os.path.dirname(os.path.abspath(file)) + prefix[len("${ORIGIN}"):]
        return os.path.abspath(os.path.join(prefix, name))
    return os.path.abspath(name)
