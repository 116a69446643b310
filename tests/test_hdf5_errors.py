"""Bad input to queuepipe.from_hdf5 fails at build time with the file, the dataset and the reason;
a read that fails mid-epoch reaches the main thread with the rows and h5py's message."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S
from queuepipe.errors import QueuepipeError
from queuepipe.sources.hdf5 import inspect as hdf5_inspect
from queuepipe.errors import (HDF5FileNotFoundError, HDF5FilterError, HDF5InputError, HDF5ReadError, HDF5SelectionError, HDF5TypeError)

tf1 = tf.compat.v1


def build_fails(exc_type, files, datasets, **kwargs):
    """from_hdf5 raises ``exc_type`` while building: no op added, no worker thread started."""
    before = set(threading.enumerate())
    g = tf.Graph()
    with g.as_default():
        with pytest.raises(exc_type) as info:
            queuepipe.from_hdf5(files, datasets, **{"batch_size": 4, **kwargs})
    assert g.get_operations() == [], "failed before building anything"
    assert set(threading.enumerate()) <= before, "no thread started"
    assert isinstance(info.value, QueuepipeError)
    return str(info.value)


def good(path, n=10, **datasets):
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=np.zeros((n, 2), np.float32))
        f.create_dataset("y", data=np.arange(n))
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
    return str(path)


# -- files ----------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.h5")
    msg = build_fails(FileNotFoundError, [good(tmp_path / "ok.h5"), path], "X")
    assert path in msg and "no such file" in msg


def test_glob_without_match(tmp_path):
    msg = build_fails(HDF5FileNotFoundError, str(tmp_path / "part_*.h5"), "X")
    assert "part_*.h5" in msg and "no file matches" in msg


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just text\n" * 20)
    msg = build_fails(HDF5InputError, str(path), "X")
    assert str(path) in msg and "not an HDF5 file" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.h5"
    path.write_bytes(b"")
    msg = build_fails(HDF5InputError, str(path), "X")
    assert str(path) in msg and "empty file (0 bytes)" in msg


def test_truncated_file(tmp_path):
    path = good(tmp_path / "t.h5", n=5000)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    msg = build_fails(HDF5InputError, path, "X")
    assert path in msg and "truncated" in msg


# -- datasets -------------------------------------------------------------------------------------

def test_missing_dataset_lists_what_there_is(tmp_path):
    path = good(tmp_path / "f.h5")
    msg = build_fails(HDF5InputError, path, {"a": "X", "b": "labels"})
    assert path in msg and "'labels' not found" in msg and "it has: X, y" in msg


def test_group_is_not_a_dataset(tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_group("grp")
    msg = build_fails(HDF5InputError, str(path), "grp")
    assert "'grp' is a group, not a dataset" in msg


def test_dangling_soft_link(tmp_path):
    path = tmp_path / "s.h5"
    good(path)
    with h5py.File(path, "a") as f:
        f["alias"] = h5py.SoftLink("/gone")
    msg = build_fails(HDF5InputError, str(path), "alias")
    assert "soft link '/alias' -> '/gone' is dangling" in msg


def test_dangling_external_link(tmp_path):
    path = tmp_path / "e.h5"
    good(path)
    with h5py.File(path, "a") as f:
        f["ext"] = h5py.ExternalLink("missing_target.h5", "/X")
    msg = build_fails(FileNotFoundError, str(path), ("X", "ext"))
    assert str(path) in msg and "external link '/ext'" in msg and "missing_target.h5" in msg


def test_scalar_dataset(tmp_path):
    path = good(tmp_path / "f.h5", scalar=np.float32(3))
    msg = build_fails(HDF5InputError, path, "scalar")
    assert "dataset 'scalar' is a scalar" in msg


def test_zero_row_dataset(tmp_path):
    path = good(tmp_path / "f.h5", empty=np.zeros((0, 3)))
    msg = build_fails(HDF5InputError, path, "empty")
    assert path in msg and "dataset 'empty' has 0 rows" in msg


def test_datasets_of_one_file_with_different_lengths(tmp_path):
    path = good(tmp_path / "f.h5", short=np.zeros(7))
    msg = build_fails(HDF5InputError, path, ("X", "short"))
    assert path in msg and "'X' has 10, 'short' has 7" in msg


def test_files_that_disagree_on_row_shape(tmp_path):
    a = good(tmp_path / "a.h5")
    b = tmp_path / "b.h5"
    with h5py.File(b, "w") as f:
        f.create_dataset("X", data=np.zeros((10, 3), np.float32))
    msg = build_fails(HDF5InputError, [a, str(b)], "X")
    assert str(b) in msg and a in msg and "(3,)" in msg and "(2,)" in msg


@pytest.mark.parametrize("rows, fragment", [
    (np.array([0, 25]), "index 25 (at position 1) is out of range: valid row ids are 0..19"),
    (np.ones(10, bool), "one entry per row (20)"),
    ([(15, 21)], "range #0 (15, 21) is out of range"),
    (slice(0, 30), "out of range"),
    (lambda path, n: [n], "rows("),
])
def test_selection_out_of_range(tmp_path, rows, fragment):
    files = [good(tmp_path / "a.h5"), good(tmp_path / "b.h5")]
    msg = build_fails(HDF5SelectionError, files, "X", rows=rows)
    assert fragment in msg and files[0] in msg


@pytest.mark.parametrize("make, fragment", [
    (lambda f: f.create_dataset("v", (5,), dtype=h5py.vlen_dtype(np.int32)), "variable-length (ragged)"),
    (lambda f: f.create_dataset("v", (5,), dtype=h5py.ref_dtype), "references"),
    (lambda f: f.create_dataset("v", data=np.zeros(5, np.longdouble)), "has no TensorFlow equivalent"),
    (lambda f: f.create_dataset("v", data=np.void(b"\x00" * 4 * 5).reshape(1).repeat(5)), "opaque data"),
    (lambda f: f.create_dataset("v", (5,), dtype=np.dtype([("a", "f4"), ("r", h5py.ref_dtype)])),
     "field r: object/region references"),
])
def test_unsupported_dtypes(tmp_path, make, fragment):
    path = tmp_path / "u.h5"
    with h5py.File(path, "w") as f:
        make(f)
    msg = build_fails(HDF5TypeError, str(path), "v")
    assert str(path) in msg and "dataset 'v'" in msg and fragment in msg


def test_compound_in_a_tuple_asks_for_a_dict(tmp_path):
    path = good(tmp_path / "c.h5", rec=np.zeros(10, [("a", "f4"), ("b", "i4")]))
    msg = build_fails(HDF5TypeError, path, ("rec", "y"))
    assert "compound dtype (2 fields)" in msg and "pass datasets as a dict" in msg


def test_missing_filter_is_named_with_the_way_to_get_it(tmp_path, monkeypatch):
    path = tmp_path / "z.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(100), chunks=(10,), compression="lzf")
    monkeypatch.setattr(hdf5_inspect, "filter_available", lambda code: code != 32000)
    msg = build_fails(HDF5FilterError, str(path), "v")
    assert str(path) in msg and "dataset 'v'" in msg and "filter 32000 ('lzf')" in msg
    assert "hdf5plugin" in msg


def test_plugin_filter_without_hdf5plugin_in_a_fresh_process(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = tmp_path / "zstd.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(100), chunks=(10,), **hdf5plugin.Zstd())
    code = ("import sys\n"
            "from queuepipe.sources.hdf5.inspect import inspect_files\n"
            "from queuepipe.errors import HDF5FilterError\n"
            "try:\n"
            f"    inspect_files([{str(path)!r}], 'v')\n"
            "except HDF5FilterError as e:\n"
            "    print(e); sys.exit(0)\n"
            "sys.exit(3)\n")
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "filter 32015 ('zstd')" in out.stdout and "pip install hdf5plugin" in out.stdout
    assert "tensorflow" not in out.stderr.lower()


@pytest.mark.parametrize("kwargs, exc, fragment", [
    (dict(shard=(3, 3)), HDF5InputError, "0 <= index < count"),
    (dict(batches_per_block=0), ValueError, "batches_per_block must be a positive int"),
    (dict(shard=(0,)), HDF5TypeError, "pair (index, count)"),
    (dict(map_fn=abs), ValueError, "map_fn needs output_types"),
    (dict(output_types=tf.float32), ValueError, "without map_fn"),
    (dict(rows=3), HDF5TypeError, "for one row use [i]"),
    (dict(map_fn=lambda x: x, output_types=tf.float32, mode="process"), TypeError,
     "map_fn must be picklable"),
])
def test_bad_arguments(tmp_path, kwargs, exc, fragment):
    path = good(tmp_path / "f.h5")
    with tf.Graph().as_default(), pytest.raises(exc) as info:
        queuepipe.from_hdf5(path, "X", batch_size=4, **kwargs)
    assert fragment in str(info.value)


# -- failures while running ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["thread", "process"])
def test_corrupt_chunk_mid_epoch_reaches_the_main_thread(tmp_path, mode):
    path = tmp_path / "corrupt.h5"
    values = np.arange(2048 * 16, dtype=np.float32).reshape(2048, 16)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", data=values, chunks=(128, 16), compression="gzip")
        info = d.id.get_chunk_info(10)                                  # rows 1280..1407
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\xff" * (info.size - 16))
    delivered = []
    with tf.Graph().as_default():
        p = queuepipe.from_hdf5(str(path), "X", batch_size=64, batches_per_block=2, mode=mode)
        with pytest.raises(HDF5ReadError) as raised:
            with tf1.Session() as sess, queuepipe.running(sess):
                try:
                    while True:
                        delivered.append(sess.run(p.batch))
                except tf.errors.OpError as exc:
                    assert not isinstance(exc, tf.errors.OutOfRangeError), "never a silent end of data"
                    in_session = str(exc)
                    failed_at = time.monotonic()
    assert time.monotonic() - failed_at < PROMPT_S, "shutdown completes promptly"
    msg = str(raised.value)
    for text in (str(path), "dataset 'X'", "rows 1280..1407", "Can't", "read data"):
        assert text in msg, text
        assert text in in_session, text
    assert len(delivered) == 1280 // 64, "every batch before the bad chunk, none after"
    np.testing.assert_array_equal(np.concatenate(delivered), values[:1280])


@pytest.mark.parametrize("compression", [None, "gzip"])  # read raw / decoded by queuepipe
def test_file_truncated_while_reading_is_an_error_not_garbage(tmp_path, compression):
    path = tmp_path / "shrinks.h5"
    values = np.arange(4000 * 64, dtype=np.float32).reshape(4000, 64)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=values, chunks=(100, 64), compression=compression, shuffle=bool(compression))
    delivered = []
    with tf.Graph().as_default():
        p = queuepipe.from_hdf5(str(path), "X", batch_size=100, batches_per_block=1, capacity=100)
        with pytest.raises(HDF5ReadError) as raised:
            with tf1.Session() as sess, queuepipe.running(sess):
                delivered.append(sess.run(p.batch))
                with open(path, "r+b") as fh:
                    fh.truncate(os.path.getsize(path) // 2)
                while True:
                    delivered.append(sess.run(p.batch))
    msg = str(raised.value)
    assert str(path) in msg and "dataset 'X'" in msg and "rows" in msg
    got = np.concatenate(delivered)
    np.testing.assert_array_equal(got, values[:len(got)])
    assert len(got) < 4000
