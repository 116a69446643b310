"""queuepipe.from_hdf5 end to end: real files, real sessions -- what arrives, in which order, as what."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import tensorflow as tf
from h5py import h5z

import queuepipe
from helpers import drain
from hdf5_workerfns import cumulative_sum, keep_even, sample_norm, scale_and_label

tf1 = tf.compat.v1


def run(files, datasets, **kwargs):
    """Build ``from_hdf5`` in a fresh graph, run it to the end; (pipeline, batches)."""
    with tf.Graph().as_default():
        p = queuepipe.from_hdf5(files, datasets, **kwargs)
        with tf1.Session() as sess, queuepipe.running(sess):
            return p, drain(sess, p.batch)


def cat(batches):
    """Concatenate batches of any structure along rows."""
    first = batches[0]
    if isinstance(first, dict):
        return {k: np.concatenate([b[k] for b in batches]) for k in first}
    if isinstance(first, tuple):
        return tuple(np.concatenate([b[i] for b in batches]) for i in range(len(first)))
    return np.concatenate(batches)


def x_of(ids):
    ids = np.asarray(ids, dtype=np.float32)
    return np.stack([ids, ids + 0.5, -ids], axis=1)


def write(path, n, start=0, chunks=(64, 3), **kw):
    """X[i] = (g, g + .5, -g) and y[i] = g for global id g = start + i."""
    ids = np.arange(start, start + n)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=x_of(ids), chunks=(min(n, chunks[0]),) + chunks[1:], **kw)
        f.create_dataset("y", data=ids.astype(np.int64))
    return str(path)


@pytest.fixture
def two_files(tmp_path):
    return [write(tmp_path / "a.h5", 300), write(tmp_path / "b.h5", 200, start=300)]


# -- structure and order ----------------------------------------------------------------------------

def test_all_rows_of_one_dataset_in_order_with_static_shapes(tmp_path):
    path = write(tmp_path / "f.h5", 1000)
    p, batches = run(path, "X", batch_size=64)
    assert p.batch.shape.as_list() == [64, 3] and p.batch.dtype == tf.float32
    assert len(batches) == 1000 // 64                                  # the short tail is dropped
    np.testing.assert_array_equal(cat(batches), x_of(np.arange(1000 // 64 * 64)))


@pytest.mark.parametrize("datasets, with_ids, check", [
    (("X", "y"), False, lambda b: isinstance(b, tuple) and len(b) == 2),
    (("X", "y"), True, lambda b: isinstance(b, tuple) and len(b) == 3 and b[2].dtype == np.int64),
    ({"feat": "X", "label": "y"}, True, lambda b: list(b) == ["feat", "label", "row_id"]),
    ("y", True, lambda b: isinstance(b, tuple) and len(b) == 2),
])
def test_batch_structure_follows_datasets(tmp_path, datasets, with_ids, check):
    path = write(tmp_path / "f.h5", 100)
    _, batches = run(path, datasets, batch_size=10, with_row_ids=with_ids)
    assert check(batches[0])
    whole = cat(batches)
    leaves = list(whole.values()) if isinstance(whole, dict) else list(whole)
    if with_ids:
        np.testing.assert_array_equal(leaves[-1], np.arange(100))
        np.testing.assert_array_equal(leaves[-2], np.arange(100))     # y == global id
    else:
        np.testing.assert_array_equal(leaves[0], x_of(np.arange(100)))


def test_files_list_and_glob_form_one_dataset_in_order(tmp_path):
    parts = [(70, 0), (5, 70), (130, 75)]
    paths = [write(tmp_path / f"part_{i}.h5", n, start=s) for i, (n, s) in enumerate(parts)]
    for files in (paths, str(tmp_path / "part_*.h5")):
        _, batches = run(files, ("X", "y"), batch_size=16, with_row_ids=True, allow_smaller_final_batch=True)
        x, y, ids = cat(batches)
        np.testing.assert_array_equal(ids, np.arange(205))
        np.testing.assert_array_equal(y, ids)
        np.testing.assert_array_equal(x, x_of(ids))
        assert len(batches[-1][0]) == 205 % 16


def _mask():
    m = np.zeros(500, bool)
    m[[3, 4, 5, 299, 300, 301, 499]] = True
    return m


@pytest.mark.parametrize("rows, expected", [
    (slice(250, 420), np.arange(250, 420)),
    (slice(None, None, 7), np.arange(0, 500, 7)),
    (slice(None, None, -1), np.arange(499, -1, -1)),
    (np.random.default_rng(3).permutation(500)[:333], np.random.default_rng(3).permutation(500)[:333]),
    (_mask(), np.flatnonzero(_mask())),
    ([(450, 480), (10, 20), (290, 310)], np.r_[450:480, 10:20, 290:310]),
    (lambda path, n: np.arange(n - 1, n - 11, -1), np.r_[299:289:-1, 499:489:-1]),
], ids=["slice", "step", "reverse", "unsorted-index", "mask", "ranges", "per-file-callable"])
def test_one_worker_delivers_the_selection_in_its_order(two_files, rows, expected):
    _, batches = run(two_files, ("X", "y"), rows=rows, batch_size=8, with_row_ids=True,
                     allow_smaller_final_batch=True, batches_per_block=2)
    x, y, ids = cat(batches)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(x, x_of(expected))


def test_workers_and_epochs_deliver_every_row_once_per_epoch(two_files):
    rows = np.random.default_rng(1).choice(500, 211, replace=False)
    _, batches = run(two_files, ("X", "y"), rows=rows, batch_size=10, workers=3, num_epochs=3,
                     with_row_ids=True, allow_smaller_final_batch=True, batches_per_block=1)
    x, y, ids = cat(batches)
    np.testing.assert_array_equal(np.sort(ids), np.sort(np.tile(rows, 3)))
    np.testing.assert_array_equal(x, x_of(ids))
    assert all(len(b[0]) == 10 for b in batches[:-1])                 # only the very last is short


def test_seeded_shuffle_is_reproducible_and_mixes_across_blocks(two_files):
    def order(seed):
        _, batches = run(two_files, "y", batch_size=10, shuffle=True, seed=seed, num_epochs=2,
                         batches_per_block=2, min_after_dequeue=60)
        return np.concatenate(batches)
    a, b, c = order(5), order(5), order(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.sort(a), np.sort(np.tile(np.arange(500), 2)))
    first = a[:100]
    assert not np.array_equal(first, np.sort(first)), "rows are mixed"
    assert len(np.unique(first // 20)) >= 5, "the first 100 rows come from many 20-row blocks"


def test_shards_partition_the_selection(two_files):
    rows = np.arange(0, 500, 3)
    got = []
    for i in range(3):
        _, batches = run(two_files, "y", rows=rows, shard=(i, 3), batch_size=5,
                         allow_smaller_final_batch=True)
        got.append(np.concatenate(batches))
    assert sum(len(g) for g in got) == len(rows)
    np.testing.assert_array_equal(np.concatenate(got), rows)          # disjoint, contiguous, in order


def test_endless_epochs_keep_going(tmp_path):
    path = write(tmp_path / "f.h5", 50)
    with tf.Graph().as_default():
        p = queuepipe.from_hdf5(path, "y", batch_size=20, num_epochs=None, workers=2)
        with tf1.Session() as sess, queuepipe.running(sess):
            seen = np.concatenate([sess.run(p.batch) for _ in range(25)])  # 10 epochs' worth
    counts = np.bincount(seen, minlength=50)
    assert counts.sum() == 500 and counts.min() >= 8 and counts.max() <= 12


# -- dtypes and shapes ----------------------------------------------------------------------------

NUMERIC = ["bool", "int8", "uint8", "int16", "uint16", ">i4", "<u4", ">i8", "uint64", "float16", ">f4",
           "<f8", "complex64", ">c16"]


@pytest.mark.parametrize("dtype", NUMERIC)
def test_numeric_dtypes_arrive_native_and_exact(tmp_path, dtype):
    dt = np.dtype(dtype)
    values = (np.arange(40 * 2).reshape(40, 2) % (2 if dt.kind == "b" else 100)).astype(dt)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values)
    p, batches = run(str(path), "v", batch_size=8)
    assert p.batch.dtype == tf.as_dtype(dt.newbyteorder("="))
    got = cat(batches)
    assert got.dtype == dt.newbyteorder("=")
    np.testing.assert_array_equal(got, values)


def test_multidimensional_rows_and_array_dtypes(tmp_path):
    path = tmp_path / "m.h5"
    cube = np.arange(30 * 4 * 5, dtype=np.float32).reshape(30, 4, 5)
    arr = np.arange(30 * 3, dtype=np.int16).reshape(30, 3)
    with h5py.File(path, "w") as f:
        f.create_dataset("cube", data=cube, chunks=(7, 4, 5))
        d = f.create_dataset("arr", (30,), dtype=np.dtype((">i2", (3,))))
        d[...] = arr
    p, batches = run(str(path), {"c": "cube", "a": "arr"}, batch_size=6, rows=[9, 1, 2, 3, 28, 27])
    assert p.batch["c"].shape.as_list() == [6, 4, 5] and p.batch["a"].shape.as_list() == [6, 3]
    np.testing.assert_array_equal(batches[0]["c"], cube[[9, 1, 2, 3, 28, 27]])
    np.testing.assert_array_equal(batches[0]["a"], arr[[9, 1, 2, 3, 28, 27]])


def test_fixed_and_variable_length_strings(tmp_path):
    path = tmp_path / "s.h5"
    words = [f"w{i}-é" * (i % 4) for i in range(50)]
    with h5py.File(path, "w") as f:
        f.create_dataset("fixed", data=np.array([w.encode() for w in words], dtype="S24"))
        f.create_dataset("vlen", data=words, dtype=h5py.string_dtype())
        f.create_dataset("grid", data=np.array([[b"a", b"bb"]] * 50), chunks=(8, 2), compression="gzip")
    p, batches = run(str(path), ("fixed", "vlen", "grid"), batch_size=10, rows=np.r_[40:50, 0:10])
    assert all(t.dtype == tf.string for t in p.batch)
    fixed, vlen, grid = cat(batches)
    expected = [words[i].encode() for i in np.r_[40:50, 0:10]]
    assert list(fixed) == expected and list(vlen) == expected
    assert grid.shape == (20, 2) and grid[0].tolist() == [b"a", b"bb"]


def test_compound_fields_become_named_tensors(tmp_path):
    path = tmp_path / "c.h5"
    ct = np.dtype([("a", ">f4"), ("b", [("c", "<i2"), ("d", "S3")]), ("e", "<f8", (2,))])
    rec = np.zeros(20, ct)
    rec["a"] = np.arange(20)
    rec["b"]["c"] = np.arange(20) * 2
    rec["b"]["d"] = [b"r%d" % (i % 10) for i in range(20)]
    rec["e"] = np.arange(40).reshape(20, 2)
    with h5py.File(path, "w") as f:
        f.create_dataset("rec", data=rec)
        f.create_dataset("y", data=np.arange(20))
    p, batches = run(str(path), {"r": "rec", "y": "y"}, batch_size=5, rows=[3, 1, 2, 0, 19])
    assert list(p.batch) == ["r.a", "r.b.c", "r.b.d", "r.e", "y"]
    b = batches[0]
    np.testing.assert_array_equal(b["r.a"], [3, 1, 2, 0, 19])
    np.testing.assert_array_equal(b["r.b.c"], [6, 2, 4, 0, 38])
    assert list(b["r.b.d"]) == [b"r3", b"r1", b"r2", b"r0", b"r9"]
    assert b["r.e"].shape == (5, 2) and b["r.e"][1].tolist() == [2.0, 3.0]
    p, batches = run(str(path), "rec", batch_size=4, with_row_ids=True)
    assert list(p.batch) == ["a", "b.c", "b.d", "e", "row_id"]
    np.testing.assert_array_equal(cat(batches)["b.c"], cat(batches)["row_id"] * 2)


def test_soft_and_external_links_are_followed(tmp_path):
    write(tmp_path / "target.h5", 40)
    main = tmp_path / "main.h5"
    with h5py.File(main, "w") as f:
        f["ext"] = h5py.ExternalLink("target.h5", "/X")
        f.create_group("g")["soft"] = h5py.SoftLink("/ext")
        f.create_dataset("y", data=np.arange(40))
    _, batches = run(str(main), ("g/soft", "y"), batch_size=8, rows=slice(8, 24))
    x, y = cat(batches)
    np.testing.assert_array_equal(x, x_of(np.arange(8, 24)))


FILTERS = {
    "gzip+shuffle": dict(compression="gzip", compression_opts=4, shuffle=True),
    "lzf": dict(compression="lzf"),
    "fletcher32": dict(fletcher32=True),
    "scaleoffset": dict(scaleoffset=0),
    "szip": dict(compression="szip"),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_builtin_filters(tmp_path, name):
    if name == "szip" and not h5z.filter_avail(h5z.FILTER_SZIP):
        pytest.skip("this HDF5 build has no szip encoder")
    path = tmp_path / "z.h5"
    values = np.arange(600 * 3, dtype=np.int32).reshape(600, 3)
    try:
        with h5py.File(path, "w") as f:
            f.create_dataset("v", data=values, chunks=(50, 3), **FILTERS[name])
    except ValueError as exc:  # e.g. szip decode-only builds
        pytest.skip(f"cannot write {name}: {exc}")
    rows = np.sort(np.random.default_rng(0).choice(600, 100, replace=False))
    _, batches = run(str(path), "v", batch_size=25, rows=rows, workers=2, shuffle=True, seed=1)
    np.testing.assert_array_equal(np.sort(cat(batches)[:, 0]), rows * 3)


def test_hdf5plugin_filters_when_imported(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = tmp_path / "p.h5"
    values = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    with h5py.File(path, "w") as f:
        f.create_dataset("zstd", data=values, chunks=(32, 4), **hdf5plugin.Zstd())
        f.create_dataset("blosc", data=values, chunks=(32, 4), **hdf5plugin.Blosc(cname="lz4"))
    _, batches = run(str(path), ("zstd", "blosc"), batch_size=20, rows=slice(10, 290))
    a, b = cat(batches)
    np.testing.assert_array_equal(a, values[10:290])
    np.testing.assert_array_equal(b, values[10:290])


# -- map_fn --------------------------------------------------------------------------------------

def test_map_fn_on_blocks_defines_the_batch(two_files):
    p, batches = run(two_files, ("X", "y"), batch_size=25, map_fn=scale_and_label,
                     output_types={"x": tf.float64, "label": tf.int64},
                     output_shapes={"x": (3,), "label": ()})
    assert p.batch["x"].shape.as_list() == [25, 3] and p.batch["x"].dtype == tf.float64
    got = cat(batches)
    np.testing.assert_array_equal(got["x"], 2 * x_of(np.arange(500)))
    np.testing.assert_array_equal(got["label"], np.arange(500) % 3)


def test_map_fn_may_drop_rows(two_files):
    _, batches = run(two_files, ("X", "y"), batch_size=16, map_fn=keep_even,
                     output_types=(tf.float32, tf.int64), output_shapes=((3,), ()), workers=2,
                     allow_smaller_final_batch=True)
    x, y = cat(batches)
    np.testing.assert_array_equal(np.sort(y), np.arange(0, 500, 2))
    np.testing.assert_array_equal(x, x_of(y))


def test_map_fn_per_sample_sees_row_ids(two_files):
    _, batches = run(two_files, {"X": "X"}, rows=[7, 400, 3], batch_size=3, with_row_ids=True,
                     map_fn=sample_norm, map_per_sample=True, output_types=(tf.float32, tf.int64))
    sums, ids = batches[0]
    np.testing.assert_array_equal(ids, [7, 400, 3])
    np.testing.assert_allclose(sums, x_of([7, 400, 3]).sum(axis=1))


# -- worker processes ----------------------------------------------------------------------------

def test_process_workers_read_and_map(two_files):
    p, batches = run(two_files, "X", batch_size=20, workers=2, mode="process", rows=slice(0, 480),
                     map_fn=cumulative_sum, output_types=tf.float32, output_shapes=(3,))
    assert p.mode == "process"
    got = cat(batches)
    assert got.shape == (480, 3)
    np.testing.assert_allclose(got[np.argsort(got[:, 0])], np.cumsum(x_of(np.arange(480)), axis=1))


def test_process_workers_load_hdf5plugin_themselves(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(400, dtype=np.int64), chunks=(50,), **hdf5plugin.LZ4())
    _, batches = run(str(path), "v", batch_size=50, workers=2, mode="process", with_row_ids=True)
    v, ids = cat(batches)
    np.testing.assert_array_equal(v, ids)
    np.testing.assert_array_equal(np.sort(v), np.arange(400))


def test_files_are_closed_after_the_run(tmp_path):
    path = write(tmp_path / "f.h5", 100)
    run(path, "X", batch_size=10, workers=2)
    with h5py.File(path, "a") as f:          # HDF5 refuses to reopen for writing a file still open
        f["y"][0] = 5
    assert os.path.exists(path)


# -- the raw-rows path (uncompressed native rows read with preadv) --------------------------------

def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_raw_rows_are_used_only_where_bytes_are_plain_and_checked(tmp_path):
    from queuepipe.sources.hdf5.chunk_decode import DecodedChunks
    from queuepipe.sources.hdf5.h5py_rows import H5pyRows
    from queuepipe.sources.hdf5.inspect import inspect_files
    from queuepipe.sources.hdf5.raw_rows import RawRows
    from queuepipe.sources.hdf5.reader import WorkerFiles

    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("plain", data=np.arange(100, dtype=np.float32).reshape(50, 2), chunks=(8, 2))
        f.create_dataset("contig", data=np.arange(50, dtype=np.int64))
        f.create_dataset("big", data=np.arange(50, dtype=">i4"))
        f.create_dataset("gz", data=np.arange(50), chunks=(8,), compression="gzip")
        f.create_dataset("colchunks", data=np.zeros((50, 4)), chunks=(8, 2))
    names = ["plain", "contig", "big", "gz", "colchunks"]
    layout = inspect_files([str(path)], names)
    R, H, D = RawRows, H5pyRows, DecodedChunks
    assert [readers[0] for readers in layout.files[0].readers] == [R, R, H, D, D]
    files = WorkerFiles(layout)
    before = _open_fds()
    try:
        handles = [files._handle(0, i) for i in range(len(names))]
        during = _open_fds()
        assert [isinstance(h.readers[0], RawRows) for h in handles] == [True, True, False, False, False]
        out = np.empty((7, 2), np.float32)
        handles[0].read_runs(np.array([13]), np.array([20]), np.array([0]), out)
        np.testing.assert_array_equal(out, np.arange(26, 40, dtype=np.float32).reshape(7, 2))
    finally:
        files.close()
    assert during >= before + 3 and _open_fds() == before, "the file and raw descriptors are closed"


def test_unallocated_chunks_and_userblocks_read_right(tmp_path):
    sparse = tmp_path / "sparse.h5"
    with h5py.File(sparse, "w") as f:
        d = f.create_dataset("v", (64,), dtype=np.float32, chunks=(8,), fillvalue=-1)
        d[16:24] = np.arange(8)                              # only chunk 2 exists on disk
    ub = tmp_path / "userblock.h5"
    with h5py.File(ub, "w", userblock_size=512) as f:
        f.create_dataset("v", data=np.arange(64, dtype=np.float32), chunks=(8,))
    _, batches = run(str(sparse), "v", batch_size=8, rows=slice(8, 32))
    np.testing.assert_array_equal(cat(batches), np.r_[[-1] * 8, np.arange(8), [-1] * 8])
    _, batches = run(str(ub), "v", batch_size=8, rows=[50, 3, 4, 5, 60, 61, 62, 7])
    np.testing.assert_array_equal(cat(batches), [50, 3, 4, 5, 60, 61, 62, 7])


def test_chunks_stored_one_after_another_are_read_in_one_call(tmp_path, monkeypatch):
    from queuepipe.sources.hdf5.inspect import inspect_files
    from queuepipe.sources.hdf5.raw_rows import RawRows, _coalesced
    from queuepipe.sources.hdf5.reader import WorkerFiles

    data = np.arange(256, dtype=np.float32).reshape(64, 4)
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("in_order", data=data, chunks=(8, 4))   # chunks allocated 0, 1, 2, ...
        rev = f.create_dataset("reversed", (64, 4), np.float32, chunks=(8, 4))
        for c in reversed(range(8)):                             # chunk 7 first: offsets run backwards
            rev[c * 8:(c + 1) * 8] = data[c * 8:(c + 1) * 8]
    calls = []
    real_preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: calls.append(off) or real_preadv(fd, bufs, off))
    files = WorkerFiles(inspect_files([str(path)], ["in_order", "reversed"]))
    try:
        for di, expected_calls in ((0, 1), (1, 8)):
            raw = files._handle(0, di).readers[0]
            assert isinstance(raw, RawRows)
            out = np.empty((58, 4), np.float32)
            calls.clear()
            assert raw.read_runs(np.array([3]), np.array([61]), np.array([0]), out)
            np.testing.assert_array_equal(out, data[3:61])
            assert len(calls) == expected_calls
    finally:
        files.close()
    # merged only where a stretch continues the previous one in the file *and* in the buffer
    offsets, at, sizes = _coalesced(np.array([0, 10, 30, 35]), np.array([0, 10, 20, 40]), np.array([10, 10, 5, 5]))
    assert offsets.tolist() == [0, 30, 35] and at.tolist() == [0, 20, 40] and sizes.tolist() == [20, 5, 5]
