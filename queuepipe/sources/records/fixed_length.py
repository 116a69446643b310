"""Fixed-length record files (TF1's ``FixedLengthRecordReader``): layout checks and reads.

A file is ``header_bytes``, then records of exactly ``record_bytes`` each, then
``footer_bytes`` (CIFAR-10's binary batches: no header or footer, 3073-byte records).
Record ``i`` starts at ``header_bytes + i * record_bytes``, so a stretch of consecutive
records is one ``preadv`` straight into the block's buffer -- in a worker process, the
shared-memory slot the parent hands to TensorFlow: the bytes are written once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import numpy as np

from ...errors import RecordInputError, RecordReadError


@dataclass(frozen=True)
class FixedLengthLayout:
    """Where the records of each file are (small; pickled to process workers)."""

    paths: List[str]
    counts: List[int]
    record_bytes: int
    header_bytes: int = 0
    footer_bytes: int = 0

    def offset(self, record: int) -> int:
        """Byte offset of a file's record ``record``."""
        return self.header_bytes + record * self.record_bytes


def inspect_files(paths: List[str], record_bytes: int, header_bytes: int, footer_bytes: int) -> FixedLengthLayout:
    """The layout of ``paths``; refuses a file whose body is no whole number of records, naming
    the file, its size and the layout expected."""
    counts = []
    for path in paths:
        size = os.path.getsize(path)
        body = size - header_bytes - footer_bytes
        if body < 0 or body % record_bytes:
            left = "" if body < 0 else f", {body // record_bytes} records and {body % record_bytes} bytes left over"
            raise RecordInputError(
                f"{path}: {size} bytes is not header_bytes + n * record_bytes + footer_bytes "
                f"({header_bytes} + n * {record_bytes} + {footer_bytes}) for any whole n: the body between header "
                f"and footer is {body} bytes{left} -- check record_bytes, header_bytes and footer_bytes")
        counts.append(body // record_bytes)
    if sum(counts) == 0:
        raise RecordInputError(f"no records: the {len(paths)} file(s) ({paths[0]}{', ...' if len(paths) > 1 else ''}) "
                               f"hold only headers and footers")
    return FixedLengthLayout(list(paths), counts, record_bytes, header_bytes, footer_bytes)


def read_into(fd: int, path: str, layout: FixedLengthLayout, first: int, stop: int, out: np.ndarray) -> None:
    """Records ``[first, stop)`` of one file into ``out`` (uint8 ``[stop - first, record_bytes]``,
    C-contiguous), with ``preadv``; a file that got shorter raises :class:`RecordReadError`."""
    view = memoryview(out.reshape(-1))
    start = layout.offset(first)
    done, total = 0, len(view)
    while done < total:
        got = os.preadv(fd, [view[done:]], start + done)
        if got <= 0:
            raise RecordReadError(f"{path}: file ended at byte {start + done} while reading records {first}..{stop - 1} "
                                  f"(bytes {start}..{start + total}): it was truncated after the pipeline was built")
        done += got
