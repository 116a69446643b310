"""The record sources without TensorFlow: block dealing per epoch, reads across files, the
TFRecord index and its checks (files framed here; TensorFlow-written ones: tests/test_records.py)."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from queuepipe.sources.hdf5.selection import Selection
from queuepipe.sources.records.crc32c import crc32c, masked
from queuepipe.errors import RecordInputError, RecordReadError
from queuepipe.sources.records.fixed_length import inspect_files
from queuepipe.sources.records.source import FixedLengthFormat, RecordSource, dealt_chunks
from queuepipe.sources.records.tfrecord import index_file, read_records
from queuepipe.workers.buffers import ALIGNMENT, aligned_block


def positions(chunks):
    return [p for segments in chunks for a, b in segments for p in range(a, b)]


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize("shuffle", [False, True])
def test_each_epochs_blocks_are_dealt_to_the_workers_exactly_once(count, shuffle):
    size, block_rows = 103, 10
    per_epoch = [[] for _ in range(3)]
    for index in range(count):
        epoch = [None]
        for segments in dealt_chunks(size, block_rows, 7, shuffle, 3, False, index, count,
                                     lambda e: epoch.__setitem__(0, e)):
            assert sum(b - a for a, b in segments) <= block_rows
            per_epoch[epoch[0]].extend(positions([segments]))
    for got in per_epoch:
        assert sorted(got) == list(range(size))
    if shuffle and count == 1:
        assert per_epoch[0] != per_epoch[1], "a new block order every epoch"


def test_overlapping_epochs_run_on_in_whole_blocks():
    chunks = list(dealt_chunks(25, 10, 0, True, 2, True, 0, 1, lambda e: None))
    assert [sum(b - a for a, b in c) for c in chunks] == [10, 10, 10, 10, 10]
    assert sorted(positions(chunks)) == sorted(list(range(25)) * 2)


def write_fixed(folder, counts, record_bytes=5, header=3, footer=2):
    paths, start = [], 0
    for k, n in enumerate(counts):
        records = (np.arange(start, start + n)[:, None] + np.zeros(record_bytes, int)) % 251
        path = str(folder / f"f{k}.bin")
        with open(path, "wb") as f:
            f.write(b"h" * header + records.astype(np.uint8).tobytes() + b"f" * footer)
        paths.append(path)
        start += n
    return paths


def test_fixed_length_chunks_cross_files_and_are_read_into_the_allocators_buffers(tmp_path):
    paths = write_fixed(tmp_path, [7, 0, 12, 5])
    layout = inspect_files(paths, 5, 3, 2)
    assert layout.counts == [7, 0, 12, 5]
    fmt = FixedLengthFormat(layout)
    given = []

    def allocate(wanted):
        bufs = aligned_block(wanted)
        given.extend(bufs)
        return bufs
    source = RecordSource(fmt, Selection.all_rows(24).shard(0, 1), block_rows=10, shuffle=False, seed=0,
                          num_epochs=2, spec=fmt.spec)
    chunks = list(source.chunks("worker 0 of 1", lambda e: None, allocate))
    assert [len(c[0]) for c in chunks] == [10, 10, 4, 10, 10, 4]
    assert all(c[0] is g for c, g in zip(chunks, given)), "records are read straight into the block's buffer"
    assert all(c[0].ctypes.data % ALIGNMENT == 0 for c in chunks)
    ids = np.concatenate([c[0][:, 0] for c in chunks]).tolist()
    assert ids == list(range(24)) * 2
    assert source.pieces([(5, 15)]) == [(0, 5, 7), (2, 0, 8)], "a block across files: one stretch per file"


def test_fixed_length_sizes_that_do_not_fit_are_refused(tmp_path):
    path = write_fixed(tmp_path, [4])[0]
    with pytest.raises(RecordInputError, match=r"25 bytes is not header_bytes \+ n \* record_bytes"):
        inspect_files([path], 6, 3, 2)
    with pytest.raises(RecordInputError, match="no records"):
        inspect_files([path], 5, 25, 0)


def frame(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(crc32c(length))) + data + struct.pack("<I", masked(crc32c(data)))


def test_tfrecord_index_and_reads(tmp_path):
    records = [bytes([i]) * (i * 37 % 200) for i in range(30)]
    path = str(tmp_path / "r.tfrecord")
    with open(path, "wb") as f:
        f.write(b"".join(frame(r) for r in records))
    offsets = index_file(path)
    assert offsets.tolist() == np.concatenate([[0], np.cumsum([16 + len(r) for r in records])]).tolist()
    fd = os.open(path, os.O_RDONLY)
    try:
        buf, starts, stops = read_records(fd, path, offsets, 3, 11, check_crc=True)
        assert [buf[a:b] for a, b in zip(starts, stops)] == records[3:11]
    finally:
        os.close(fd)


def test_tfrecord_damage_is_found_with_file_and_offset(tmp_path):
    records = [b"x" * 50 for _ in range(6)]
    good = b"".join(frame(r) for r in records)
    path = str(tmp_path / "r.tfrecord")
    with open(path, "wb") as f:
        f.write(good[:-3])
    with pytest.raises(RecordInputError, match=r"truncated: the record at byte offset 330 \(record 5\)"):
        index_file(path)
    damaged = bytearray(good)
    damaged[66 * 2 + 9] ^= 1                                   # record 2's length checksum
    with open(path, "wb") as f:
        f.write(damaged)
    with pytest.raises(RecordInputError, match=r"corrupt record header at byte offset 132 \(record 2\)"):
        index_file(path)
    damaged = bytearray(good)
    damaged[66 * 4 + 20] ^= 1                                  # record 4's data
    with open(path, "wb") as f:
        f.write(damaged)
    offsets = index_file(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(RecordReadError, match=r"record 4 at byte offset 264: data checksum"):
            read_records(fd, path, offsets, 0, 6, check_crc=True)
        buf, starts, stops = read_records(fd, path, offsets, 0, 6, check_crc=False)
        assert buf[starts[4]:stops[4]] != records[4]
    finally:
        os.close(fd)
    with open(path, "wb") as f:
        f.write(good[:66 * 3])                                 # shorter than when it was indexed
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(RecordReadError, match="truncated after the pipeline was built"):
            read_records(fd, path, offsets, 2, 6, check_crc=True)
    finally:
        os.close(fd)
