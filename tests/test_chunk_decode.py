"""Chunks decoded by queuepipe (deflate, shuffle) instead of HDF5: the bytes must equal h5py's.

Real files written by h5py; every read is compared with h5py reading the same rows.
Both inflaters (ISA-L and stock zlib) are exercised.
"""
from __future__ import annotations

import os
import zlib

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queuepipe.sources.hdf5 import chunk_decode
from queuepipe.sources.hdf5.chunk_decode import DecodedChunks
from queuepipe.sources.hdf5.h5py_rows import H5pyRows
from queuepipe.sources.hdf5.inspect import inspect_files
from queuepipe.sources.hdf5.raw_rows import RawRows
from queuepipe.sources.hdf5.reader import WorkerFiles

pytest.importorskip("isal")
INFLATERS = ["isal", "zlib"]


@pytest.fixture(params=INFLATERS)
def inflater(request, monkeypatch):
    monkeypatch.setenv("QUEUEPIPE_INFLATE", request.param)
    return request.param


def _handle(path, name):
    """(WorkerFiles, handle) for one dataset of one file."""
    files = WorkerFiles(inspect_files([str(path)], [name]))
    return files, files._handle(0, 0)


def _decoder(handle):
    """The handle's decoder, or None if it has none (not applicable, or dropped)."""
    return next((r for r in handle.readers if isinstance(r, DecodedChunks)), None)


def _read(handle, start, stop, out):
    """Rows [start, stop) into ``out``, as a worker reads one run."""
    handle.read_runs(np.array([start]), np.array([stop]), np.array([0]), out)


def _values(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 100).round(1).astype(dtype)   # compressible, not trivial
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int32", "float32", "float64", "uint64"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_decoded_rows_equal_h5py(tmp_path, inflater, dtype, shuffle):
    values = _values(dtype, (1000, 3, 5))
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=values, chunks=(64, 3, 5), compression="gzip", shuffle=shuffle)
    files, h = _handle(path, "X")
    try:
        assert _decoder(h) is not None and _decoder(h).inflater_name == inflater
        # whole chunks, pieces inside one chunk, across boundaries, and the short edge chunk
        for start, stop in [(0, 64), (0, 1000), (5, 9), (60, 70), (63, 200), (960, 1000), (999, 1000)]:
            out = np.empty((stop - start, 3, 5), dtype)
            _read(h, start, stop, out)
            np.testing.assert_array_equal(out, values[start:stop], err_msg=f"rows {start}..{stop}")
        assert _decoder(h) is not None, "no read fell back to h5py"
    finally:
        files.close()


def test_which_datasets_are_decoded_here(tmp_path):
    data = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    path = tmp_path / "mix.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gzip", data=data, chunks=(100, 4), compression="gzip")
        f.create_dataset("shuffle_only", data=data, chunks=(100, 4), shuffle=True)
        f.create_dataset("lzf", data=data, chunks=(100, 4), compression="lzf")
        f.create_dataset("checksummed", data=data, chunks=(100, 4), compression="gzip", fletcher32=True)
        f.create_dataset("big_endian", data=data.astype(">f4"), chunks=(100, 4), compression="gzip")
        f.create_dataset("column_chunks", data=data, chunks=(100, 2), compression="gzip")
        f.create_dataset("plain_column_chunks", data=data, chunks=(64, 3))
        f.create_dataset("plain", data=data, chunks=(100, 4))
    names = ["gzip", "shuffle_only", "lzf", "checksummed", "big_endian", "column_chunks",
             "plain_column_chunks", "plain"]
    layout = inspect_files([str(path)], names)
    D, H, R = DecodedChunks, H5pyRows, RawRows
    assert [readers[0] for readers in layout.files[0].readers] == [D, D, H, H, H, D, D, R]
    files = WorkerFiles(layout)
    try:
        for i, name in enumerate(names):
            out = np.empty((150, 4), np.float32)
            _read(files._handle(0, i), 420, 570, out)
            np.testing.assert_array_equal(out, data[420:570], err_msg=name)
    finally:
        files.close()


def test_a_chunk_stored_without_deflate_is_read_as_stored(tmp_path, inflater):
    """A chunk whose filter mask says deflate was skipped (HDF5 may skip an optional filter)."""
    values = np.arange(400, dtype=np.int32).reshape(100, 4)
    path = tmp_path / "mask.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", data=values, chunks=(25, 4), compression="gzip", shuffle=True)
        # chunk 1 rewritten: shuffled (filter 0 applied) but not deflated (filter 1 skipped)
        plain = values[25:50].view(np.uint8).reshape(-1, 4).T.copy().tobytes()
        d.id.write_direct_chunk((25, 0), plain, filter_mask=0b10)
        # chunk 2 rewritten: neither filter applied
        d.id.write_direct_chunk((50, 0), values[50:75].tobytes(), filter_mask=0b11)
        assert d.id.get_chunk_info(1).filter_mask == 0b10
    files, h = _handle(path, "X")
    try:
        out = np.empty_like(values)
        _read(h, 0, 100, out)
        np.testing.assert_array_equal(out, values)
        assert _decoder(h) is not None
    finally:
        files.close()


@pytest.mark.parametrize("width", [2, 5])  # chunks of whole rows / chunks that cut rows
def test_chunks_never_written_read_as_the_fill_value(tmp_path, inflater, width):
    path = tmp_path / "fill.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", shape=(300, width), dtype="f4", chunks=(50, 2), compression="gzip",
                             fillvalue=-7.0)
        d[100:150] = 1.0
    files, h = _handle(path, "X")
    try:
        assert _decoder(h) is not None
        out = np.empty((300, width), np.float32)
        _read(h, 0, 300, out)
        expect = np.full((300, width), -7.0, np.float32)
        expect[100:150] = 1.0
        np.testing.assert_array_equal(out, expect)
        _read(h, 110, 140, out[:30])          # a band whose chunks are all written
        np.testing.assert_array_equal(out[:30], expect[110:140])
    finally:
        files.close()


def test_a_chunk_that_does_not_inflate_reports_hdf5s_error(tmp_path):
    values = np.arange(2000, dtype=np.float32).reshape(500, 4)
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", data=values, chunks=(100, 4), compression="gzip")
        info = d.id.get_chunk_info(2)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 4)
        fh.write(b"\xff" * (info.size - 8))
    files, h = _handle(path, "X")
    try:
        out = np.empty((100, 4), np.float32)
        _read(h, 100, 200, out)
        np.testing.assert_array_equal(out, values[100:200])
        with pytest.raises(Exception) as raised:
            _read(h, 200, 300, out)
        assert "read data" in str(raised.value), "h5py's own message, not zlib's"
    finally:
        files.close()


def test_a_decoder_error_that_h5py_overrules_drops_the_decoder(tmp_path, monkeypatch):
    """A chunk our decoder rejects but HDF5 reads: h5py's rows are delivered, and h5py reads the rest."""
    values = np.arange(2000, dtype=np.float32).reshape(500, 4)
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=values, chunks=(100, 4), compression="gzip")
    files, h = _handle(path, "X")
    try:
        decoder = _decoder(h)
        real = decoder._decode

        def picky(c, out):
            if c == 2:
                raise ValueError("not a chunk this decoder understands")
            real(c, out)

        monkeypatch.setattr(decoder, "_decode", picky)
        out = np.empty((150, 4), np.float32)
        _read(h, 0, 150, out)
        assert _decoder(h) is decoder, "chunks it decodes keep it"
        _read(h, 150, 300, out)
        np.testing.assert_array_equal(out, values[150:300])
        assert _decoder(h) is None and decoder.fd is None, "dropped, and its file closed"
        _read(h, 300, 450, out)
        np.testing.assert_array_equal(out, values[300:450])
    finally:
        files.close()


@pytest.mark.parametrize("compression", [None, "gzip"])  # read raw / decoded by queuepipe
def test_only_the_runs_a_reader_cannot_serve_go_to_h5py(tmp_path, monkeypatch, compression):
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", shape=(400, 3), dtype="i4", chunks=(50, 3), fillvalue=-1, compression=compression)
        d[0:100] = 1
        d[300:400] = 3                       # rows 100..299 never written
    files, h = _handle(path, "X")
    h5py_runs = []
    real = H5pyRows.read_stretch

    def counted(self, start, stop, dest):
        h5py_runs.append((start, stop))
        real(self, start, stop, dest)

    monkeypatch.setattr(H5pyRows, "read_stretch", counted)
    try:
        assert not isinstance(h.readers[0], H5pyRows)
        out = np.empty((30, 3), np.int32)
        h.read_runs(np.array([10, 120, 350]), np.array([20, 130, 360]), np.array([0, 10, 20]), out)
        np.testing.assert_array_equal(out, np.repeat([1, -1, 3], 10)[:, None].repeat(3, axis=1))
        assert h5py_runs == [(120, 130)]
    finally:
        files.close()


def test_unshuffle_inverts_hdf5s_byte_planes_with_a_tail():
    values = np.arange(10, dtype=np.uint32) * 0x01020304
    body = values.view(np.uint8).reshape(-1, 4).T.tobytes() + b"xyz"   # 3 tail bytes stay as they are
    out = np.empty(43, np.uint8)
    chunk_decode.unshuffle(body, 4, out)
    assert out[:40].view(np.uint32).tolist() == values.tolist()
    assert out[40:].tobytes() == b"xyz"


def test_inflater_choice(monkeypatch):
    data = np.arange(1000, dtype=np.int64).tobytes()
    packed = zlib.compress(data, 4)
    for choice in ("zlib", "isal"):
        monkeypatch.setenv("QUEUEPIPE_INFLATE", choice)
        name, inflate = chunk_decode.inflater()
        assert name == choice and inflate(packed, len(data)) == data
    monkeypatch.setenv("QUEUEPIPE_INFLATE", "fast")
    with pytest.raises(ValueError, match="QUEUEPIPE_INFLATE"):
        chunk_decode.inflater()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_rows=st.integers(1, 300), chunk_rows=st.integers(1, 64), row=st.sampled_from([(1,), (6,), (5, 3)]),
       cut=st.lists(st.integers(1, 6), min_size=2, max_size=2), beyond=st.booleans(),
       dtype=st.sampled_from(["int16", "float32", "int64"]), compression=st.sampled_from([None, "gzip"]),
       shuffle=st.booleans(), level=st.integers(0, 9),
       reads=st.lists(st.tuples(st.integers(0, 299), st.integers(1, 120)), min_size=1, max_size=6))
def test_property_any_rows_of_any_chunking_equal_h5py(tmp_path_factory, n_rows, chunk_rows, row, cut, beyond,
                                                       dtype, compression, shuffle, level, reads):
    """Any chunk shape: whole rows, rows cut into pieces, chunks wider than the data (resizable)."""
    values = _values(dtype, (n_rows,) + row, seed=n_rows)
    trailing = tuple(min(c, d) for c, d in zip(cut, row))
    if beyond:
        trailing = tuple(d + c for c, d in zip(cut, row))  # chunks reach past the data's edge
    path = tmp_path_factory.mktemp("p") / "p.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=values, chunks=(min(chunk_rows, n_rows),) + trailing,
                         maxshape=(None,) + (None,) * len(row) if beyond else None,
                         compression=compression, compression_opts=level if compression else None,
                         shuffle=shuffle)
    files, h = _handle(path, "X")
    try:
        assert isinstance(h.readers[0], (DecodedChunks, RawRows))
        for start, length in reads:
            start = start % n_rows
            stop = min(n_rows, start + length)
            out = np.empty((stop - start,) + row, dtype)
            _read(h, start, stop, out)
            np.testing.assert_array_equal(out, values[start:stop])
    finally:
        files.close()
    os.remove(path)


@pytest.mark.parametrize("bulk", [True, False])
def test_chunk_table_bulk_and_lazy_lookups_agree(tmp_path, monkeypatch, bulk):
    from queuepipe.sources.hdf5 import chunk_table
    monkeypatch.setattr(chunk_table, "BULK_CHUNKS", 1 << 16 if bulk else 0)
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", shape=(1000, 3), dtype="i4", chunks=(64, 3), compression="gzip")
        d[0:64] = 1
        d[640:700] = 2          # chunks 10 and 10 (640..703); 1..9 and 11.. never written
        expect = {c: d.id.get_chunk_info_by_coord((c * 64, 0)) for c in range(16)}
    with h5py.File(path, "r") as f:
        table = chunk_table.ChunkTable(f["X"].id, 1000, (64, 3))
        assert table._bulk_pending == bulk
        got = table.locate_many(np.array([10, 0, 3, 15]))
        assert got.tolist() == [expect[c].byte_offset if expect[c].byte_offset is not None else -1
                                for c in (10, 0, 3, 15)]
        for c in range(16):
            off = table.locate(c)
            if expect[c].byte_offset is None:
                assert off == chunk_table.UNALLOCATED
            else:
                assert (off, table.sizes[c], table.masks[c]) == (expect[c].byte_offset, expect[c].size,
                                                                  expect[c].filter_mask)


def test_a_bad_inflater_setting_is_refused_when_the_pipeline_is_built(tmp_path, monkeypatch):
    import tensorflow as tf
    import queuepipe
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=np.arange(100, dtype=np.float32), chunks=(10,), compression="gzip")
    monkeypatch.setenv("QUEUEPIPE_INFLATE", "fastest")
    with tf.Graph().as_default(), pytest.raises(ValueError, match="QUEUEPIPE_INFLATE"):
        queuepipe.from_hdf5(str(path), "X", batch_size=10)


@pytest.mark.parametrize("bulk", [True, False])
def test_chunk_table_numbers_chunks_that_cut_rows(tmp_path, monkeypatch, bulk):
    from queuepipe.sources.hdf5 import chunk_table
    monkeypatch.setattr(chunk_table, "BULK_CHUNKS", 1 << 16 if bulk else 0)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", shape=(100, 10, 4), dtype="u2", chunks=(30, 4, 3), compression="gzip")
        d[0:30, 4:8, :] = 7          # only chunks (0, 1, 0) and (0, 1, 1) are written
    with h5py.File(path, "r") as f:
        dsid = f["X"].id
        table = chunk_table.ChunkTable(dsid, 100, (30, 4, 3))
        assert table.grid == (3, 2) and table.band == 6 and len(table.offsets) == 4 * 6
        for n in range(24):
            coord = table.coord(n)
            assert table.number(coord) == n
            info = dsid.get_chunk_info_by_coord(coord)
            assert table.locate(n) == (chunk_table.UNALLOCATED if info.byte_offset is None else info.byte_offset)
        assert [n for n in range(24) if table.locate(n) >= 0] == [2, 3]
