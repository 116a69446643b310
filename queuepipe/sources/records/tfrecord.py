"""TFRecord files: where each record is (an index built once, in the parent) and reading them.

A TFRecord file is a sequence of records, each::

    uint64 length            (little-endian)
    uint32 masked_crc32c(length)
    byte   data[length]
    uint32 masked_crc32c(data)

:func:`index_file` walks the headers once at build time -- reading 12 bytes per record
from a window of the file and jumping over the data, so a file of large records is not
read whole -- and checks every length's checksum (one vectorised pass): a truncated or
damaged file is refused before any worker starts, naming the file and the byte offset.
The index is one int64 array per file (each record's start offset, then the file's
end), pickled to process workers with the source: 8 bytes per record.

Workers read a stretch of consecutive records with one ``pread`` and, unless
``check_crc=False``, check the data checksums of all of them at once
(:func:`~.crc32c.crc32c_many`); the length fields are compared with the index too, so a
file rewritten since the pipeline was built is reported instead of misread.

Compressed files (``TFRecordOptions(compression_type="GZIP"/"ZLIB")``) are refused with
a clear error: decompress them first (``gzip -d``, or rewrite them uncompressed).
"""
from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np

from .crc32c import crc32c_8, crc32c_many, masked
from ...errors import RecordInputError, RecordReadError

HEADER = 12  # length + its checksum
FOOTER = 4   # data checksum
WINDOW = 1 << 20  # bytes read at a time while indexing


def _compression_hint(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return (" -- the file starts like a GZIP stream: compressed TFRecord files are not supported; "
                "decompress it first (gzip -d) or write it without compression")
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return (" -- the file may be ZLIB-compressed (TFRecordOptions(compression_type='ZLIB')): compressed "
                "TFRecord files are not supported; rewrite it without compression")
    return ""


def index_file(path: str) -> np.ndarray:
    """Start offsets of every record of the TFRecord file ``path``, then its size (int64, n + 1).

    Refuses (``RecordInputError``, naming the file and byte offset) a file that ends inside
    a record, and a length field whose checksum does not match (a damaged or non-TFRecord
    file)."""
    try:
        size = os.path.getsize(path)
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise RecordInputError(f"{path}: cannot open: {exc.strerror or exc}") from None
    offsets: List[int] = []
    lengths: List[bytes] = []
    crcs: List[bytes] = []
    try:
        pos = 0
        while pos < size:
            window = os.pread(fd, min(WINDOW, size - pos), pos)
            base, at, limit = pos, 0, len(window)
            while at + HEADER <= limit:
                length = int.from_bytes(window[at:at + 8], "little")
                offsets.append(base + at)
                lengths.append(window[at:at + 8])
                crcs.append(window[at + 8:at + 12])
                step = HEADER + length + FOOTER
                pos = base + at + step
                if pos > size:
                    _check_lengths(path, offsets[-1:], lengths[-1:], crcs[-1:], len(offsets) - 1)  # bad, or cut?
                    raise RecordInputError(
                        f"{path}: truncated: the record at byte offset {offsets[-1]} (record {len(offsets) - 1}) declares "
                        f"{length} data bytes "
                        f"(record ends at byte {pos}), but the file ends at byte {size}")
                at += step
            if at < limit:  # the next header is not whole in this window
                pos = base + at
                if size - pos < HEADER:
                    raise RecordInputError(f"{path}: truncated: {size - pos} byte(s) at byte offset {pos} are too "
                                           f"few for a record header (12 bytes)" +
                                           (_compression_hint(window[:2]) if pos == 0 else ""))
    finally:
        os.close(fd)
    _check_lengths(path, offsets, lengths, crcs)
    return np.array(offsets + [size], dtype=np.int64)


def _check_lengths(path: str, offsets: List[int], lengths: List[bytes], crcs: List[bytes], first: int = 0) -> None:
    """Refuse the first record whose length field's checksum does not match (``first``: the
    index in the file of ``offsets[0]``'s record)."""
    if not offsets:
        return
    words = np.frombuffer(b"".join(lengths), dtype=np.uint8).reshape(-1, 8)
    stored = np.frombuffer(b"".join(crcs), dtype="<u4")
    bad = np.flatnonzero(masked(crc32c_8(words)) != stored)
    if len(bad):
        i = int(bad[0])
        hint = ""
        if offsets[i] == 0:
            with open(path, "rb") as f:
                hint = _compression_hint(f.read(2))
        raise RecordInputError(f"{path}: corrupt record header at byte offset {offsets[i]} (record {first + i}): the "
                               f"checksum of its length field does not match -- the file is damaged or not a "
                               f"TFRecord file{hint or ''}")


def read_records(fd: int, path: str, offsets: np.ndarray, first: int, stop: int, check_crc: bool
                 ) -> Tuple[bytes, np.ndarray, np.ndarray]:
    """Records ``[first, stop)`` of one file (``offsets`` from :func:`index_file`) in one read:
    (the bytes read, each record's data start in them, data stop).  Raises
    :class:`RecordReadError` naming file, record and byte offset when the file changed since
    it was indexed or (``check_crc``) a data checksum does not match."""
    at = offsets[first:stop + 1]
    base = int(at[0])
    nbytes = int(at[-1]) - base
    buf = os.pread(fd, nbytes, base)
    while len(buf) < nbytes:  # pread may return less; empty means the file got shorter
        more = os.pread(fd, nbytes - len(buf), base + len(buf))
        if not more:
            raise RecordReadError(f"{path}: file ended at byte {base + len(buf)} while reading records "
                                  f"{first}..{stop - 1} (bytes {base}..{base + nbytes}): it was truncated "
                                  f"after the pipeline was built")
        buf += more
    data = np.frombuffer(buf, dtype=np.uint8)
    heads = at[:-1] - base
    starts = heads + HEADER
    stops = at[1:] - base - FOOTER
    lengths = stops - starts
    stored_lengths = data[heads[:, None] + np.arange(8)].view("<u8").reshape(-1)
    changed = np.flatnonzero(stored_lengths != lengths.astype(np.uint64))
    if len(changed):
        i = int(changed[0])
        raise RecordReadError(f"{path}: record {first + i} at byte offset {int(at[i])} no longer has the length "
                              f"the index found ({int(lengths[i])}): the file changed after the pipeline was built")
    if check_crc:
        stored = data[stops[:, None] + np.arange(4)].view("<u4").reshape(-1)
        bad = np.flatnonzero(masked(crc32c_many(data, starts, lengths)) != stored)
        if len(bad):
            i = int(bad[0])
            raise RecordReadError(f"{path}: record {first + i} at byte offset {int(at[i])}: data checksum "
                                  f"(masked crc32c) does not match -- the file is corrupt (pass check_crc=False "
                                  f"to read it unchecked)")
    return buf, starts, stops
