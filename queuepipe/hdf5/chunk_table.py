"""Where each chunk of rows of a dataset is stored in its file: offset, size, filter mask.

Both fast read paths (:class:`.reader.RawRows`, :class:`.chunk_decode.DecodedChunks`)
read chunk bytes themselves and need this.  A dataset of up to :data:`BULK_CHUNKS`
chunks is indexed in one HDF5 call when first used (~2 us a chunk, against ~10 us for
a lookup per chunk); a larger one is looked up chunk by chunk as reads reach it, so
opening a huge file costs nothing up front.
"""
from __future__ import annotations

import numpy as np

BULK_CHUNKS = 1 << 16
UNKNOWN, UNALLOCATED = -2, -1


class ChunkTable:
    """Per chunk index ``c`` (rows ``c * chunk_rows ...``): ``offsets[c]`` (or UNALLOCATED
    for a chunk never written, or UNKNOWN before lookup), ``sizes[c]``, ``masks[c]``.
    Only for chunks that span whole rows (one chunk per index)."""

    def __init__(self, dsid, n_rows: int, chunk_rows: int):
        self.dsid = dsid
        self.chunk_rows = chunk_rows
        self.zeros = (0,) * (len(dsid.shape) - 1)
        n_chunks = -(-n_rows // chunk_rows)
        self.offsets = np.full(n_chunks, UNKNOWN, dtype=np.int64)
        self.sizes = np.zeros(n_chunks, dtype=np.int64)
        self.masks = np.zeros(n_chunks, dtype=np.int64)
        self._bulk_pending = 0 < n_chunks <= BULK_CHUNKS and hasattr(dsid, "chunk_iter")

    def _fill_all(self) -> None:
        """Every chunk in one pass (HDF5 >= 1.14 / 1.12.3 ``H5Dchunk_iter``)."""
        self._bulk_pending = False
        self.offsets[self.offsets == UNKNOWN] = UNALLOCATED  # what the pass does not visit
        cr, offsets, sizes, masks = self.chunk_rows, self.offsets, self.sizes, self.masks

        def visit(info):
            c = info.chunk_offset[0] // cr
            offsets[c], sizes[c], masks[c] = info.byte_offset, info.size, info.filter_mask

        self.dsid.chunk_iter(visit)

    def locate(self, c: int) -> int:
        """The file offset of chunk ``c``, or UNALLOCATED."""
        off = int(self.offsets[c])
        if off == UNKNOWN:
            if self._bulk_pending:
                self._fill_all()
                return int(self.offsets[c])
            info = self.dsid.get_chunk_info_by_coord((c * self.chunk_rows,) + self.zeros)
            off = UNALLOCATED if info.byte_offset is None else int(info.byte_offset)
            self.offsets[c], self.sizes[c], self.masks[c] = off, int(info.size or 0), int(info.filter_mask)
        return off

    def locate_many(self, chunks: np.ndarray) -> np.ndarray:
        """File offsets of ``chunks`` (an index array), UNALLOCATED where never written."""
        unknown = chunks[self.offsets[chunks] == UNKNOWN]
        if len(unknown):
            if self._bulk_pending:
                self._fill_all()
            else:
                for c in np.unique(unknown).tolist():
                    self.locate(c)
        return self.offsets[chunks]
