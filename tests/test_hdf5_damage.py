"""Damaged, truncated, exotic and untrusted HDF5 files: every failure names the file (and the
dataset), never a bare h5py error, never zeros in place of data, never another file's bytes.

All files are real HDF5 files written with h5py and damaged deterministically on disk; all
pipelines run in real sessions with thread and process workers.
"""
from __future__ import annotations

import gc
import os
import re

import h5py
import numpy as np
import pytest
import tensorflow as tf
from h5py import h5d, h5o, h5s, h5t

import queuepipe
from helpers import drain
from queuepipe.errors import HDF5FileNotFoundError, HDF5InputError, HDF5ReadError, HDF5TypeError

tf1 = tf.compat.v1
MODES = ["thread", "process"]


# -- helpers ----------------------------------------------------------------------------------------

def build_fails(exc_type, files, datasets, **kwargs):
    """from_hdf5 raises ``exc_type`` (a queuepipe error) while building; its message."""
    with tf.Graph().as_default(), pytest.raises(exc_type) as info:
        queuepipe.from_hdf5(files, datasets, **{"batch_size": 4, **kwargs})
    assert isinstance(info.value, queuepipe.QueuepipeError), type(info.value)
    return str(info.value)


def run_until_error(files, datasets, *, damage=None, after_first=None, **kwargs):
    """Build a pipeline, call ``damage()`` (before the session starts), drain it -- calling
    ``after_first()`` after the first batch -- and return (batches delivered, the error
    ``running()`` raised).  The run must end in an error, never a plain end of data."""
    kwargs = {"batch_size": 100, "allow_smaller_final_batch": True, **kwargs}
    delivered = []
    with tf.Graph().as_default():
        p = queuepipe.from_hdf5(files, datasets, **kwargs)
        if damage is not None:
            damage()
        with pytest.raises(Exception) as raised:
            with tf1.Session() as sess, queuepipe.running(sess):
                try:
                    while True:
                        delivered.append(sess.run(p.batch))
                        if after_first is not None and len(delivered) == 1:
                            after_first()
                except tf.errors.OutOfRangeError:
                    pytest.fail(f"the run ended normally after {len(delivered)} batches: no error")
                except tf.errors.OpError:
                    pass  # the error gate; running() re-raises the worker's error
    return delivered, raised.value


def run_all(files, datasets, **kwargs):
    with tf.Graph().as_default():
        p = queuepipe.from_hdf5(files, datasets, **{"batch_size": 4, "allow_smaller_final_batch": True,
                                                    **kwargs})
        with tf1.Session() as sess, queuepipe.running(sess):
            return drain(sess, p.batch)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def overwrite(path, offset, data: bytes):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def btree_nodes(path, node_type):
    """Offsets of version-1 B-tree nodes ("TREE") of a type: 0 group, 1 chunk index."""
    data = open(path, "rb").read()
    return [m.start() for m in re.finditer(b"TREE", data) if data[m.start() + 4] == node_type]


def chunked(path, n=4000):
    values = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=values, chunks=(100, 4))
    return str(path), values


def fds_left_by_failed_runs(run_once, path):
    """Open descriptors failed thread-mode runs leave behind: those of this process that
    point at ``path``, and how many more there are after two runs than after a first one
    (TensorFlow opens its own descriptors once); 0 and 0 when nothing leaks."""
    run_once()
    gc.collect()
    before = open_fds()
    run_once()
    run_once()
    gc.collect()
    grown = max(0, open_fds() - before)
    on_file = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            on_file += os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(path)
        except OSError:
            pass
    return on_file, grown


# -- A: errors opening a file or a dataset name them ------------------------------------------------

def test_damaged_link_table_is_refused_at_build_naming_file_and_dataset(tmp_path):
    path, _ = chunked(tmp_path / "links.h5")
    group_node = btree_nodes(path, 0)[0]
    overwrite(path, group_node + 34, b"\xff")  # the root group's first child address: past the end
    msg = build_fails(HDF5InputError, path, "X")
    assert path in msg and "dataset 'X'" in msg and "addr overflow" in msg, msg


@pytest.mark.parametrize("mode", MODES)
def test_damaged_chunk_index_fails_naming_file_and_dataset_and_leaks_nothing(tmp_path, mode):
    path, _ = chunked(tmp_path / "index.h5")
    overwrite(path, btree_nodes(path, 1)[0], b"XXXX")  # the chunk index: not read when building

    def run_once():
        delivered, exc = run_until_error(path, "X", mode=mode)
        assert isinstance(exc, HDF5ReadError), repr(exc)
        msg = str(exc)
        for text in (path, "dataset 'X'", "chunk index", "wrong B-tree signature"):
            assert text in msg, (text, msg)
        assert delivered == []

    if mode == "process":
        run_once()
    else:
        assert fds_left_by_failed_runs(run_once, path) == (0, 0), "a failed open closes what it opened"


@pytest.mark.parametrize("mode", MODES)
def test_dataset_damaged_after_build_fails_naming_file_and_dataset(tmp_path, mode):
    path, _ = chunked(tmp_path / "header.h5")
    with h5py.File(path, "r") as f:
        header = h5o.get_info(f["X"].id).addr

    def run_once():
        overwrite(path, header, b"\x01")  # a sound header while building ...
        delivered, exc = run_until_error(path, "X", mode=mode, damage=lambda: overwrite(path, header, b"\x07"))
        assert isinstance(exc, HDF5ReadError), repr(exc)
        msg = str(exc)
        for text in (path, "dataset 'X'", "opening the dataset failed", "version"):
            assert text in msg, (text, msg)
        assert delivered == []

    if mode == "process":
        run_once()
    else:
        assert fds_left_by_failed_runs(run_once, path) == (0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_file_damaged_after_build_fails_naming_the_file(tmp_path, mode):
    path, _ = chunked(tmp_path / "super.h5")

    def run_once():
        overwrite(path, 0, b"\x89HDF\r\n\x1a\n")
        delivered, exc = run_until_error(path, "X", mode=mode, damage=lambda: overwrite(path, 0, b"NOTHDF5!"))
        assert isinstance(exc, HDF5ReadError), repr(exc)
        msg = str(exc)
        assert path in msg and "opening the file failed" in msg and "signature" in msg, msg
        assert delivered == []

    if mode == "process":
        run_once()
    else:
        assert fds_left_by_failed_runs(run_once, path) == (0, 0)


# -- B: a file truncated under a running pipeline: an error, never zeros ----------------------------

N_ROWS = 20_000


def _truncation_data(kind):
    """(values, create_dataset keywords) of a dataset every row of which is nonzero/nonempty."""
    n = N_ROWS
    if kind == "big-endian":
        return (np.arange(n * 8).reshape(n, 8) + 1).astype(">f4"), {}
    if kind == "compound":
        v = np.zeros(n, [("a", "<f4"), ("b", ">i8")])
        v["a"], v["b"] = np.arange(n) + 1, np.arange(n) + 1
        return v, {}
    if kind == "vlen-string":
        return np.array([f"row {i} " * 3 for i in range(n)], dtype=object), {"dtype": h5py.string_dtype()}
    if kind == "fixed-string":
        return np.array([f"r{i:07d}".encode() * 3 for i in range(n)], dtype="S24"), {}
    if kind == "gzip":
        return np.random.default_rng(0).random((n, 8)) + 1, {"chunks": (100, 8), "compression": "gzip"}
    if kind == "lzf":
        return np.random.default_rng(0).random((n, 8)) + 1, {"chunks": (100, 8), "compression": "lzf"}
    raise AssertionError(kind)


def _as_rows(batches, values):
    """Delivered batches -> an array comparable with ``values`` (rows in order)."""
    if values.dtype.names:
        return {name: np.concatenate([b[name] for b in batches]) for name in values.dtype.names}
    got = np.concatenate(batches)
    return got.astype(object) if values.dtype == object else got


def _check_prefix(batches, values):
    """The delivered rows are exactly the file's first rows: no zeros, no empty strings."""
    n = sum(len(b if not isinstance(b, dict) else next(iter(b.values()))) for b in batches)
    assert n < len(values)
    if not n:
        return
    got = _as_rows(batches, values)
    if values.dtype.names:
        for name in values.dtype.names:
            np.testing.assert_array_equal(got[name], values[name][:n])
    elif values.dtype == object:
        assert [g.decode() for g in got] == list(values[:n])
    else:
        np.testing.assert_array_equal(got, values[:n])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["big-endian", "compound", "vlen-string", "fixed-string", "gzip", "lzf"])
def test_file_truncated_while_running_is_an_error_never_zeros(tmp_path, kind, mode):
    path = str(tmp_path / f"{kind}.h5")
    values, kw = _truncation_data(kind)
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, **kw)
    size = os.path.getsize(path)
    delivered, exc = run_until_error(path, "v", mode=mode, batches_per_block=1, capacity=100,
                                     after_first=lambda: os.truncate(path, size // 2))
    assert isinstance(exc, HDF5ReadError), repr(exc)
    msg = str(exc)
    assert path in msg and "dataset 'v'" in msg and "shorter than its data" in msg, msg
    assert f"{size // 2} bytes on disk" in msg, msg
    _check_prefix(delivered, values)


@pytest.mark.parametrize("mode", MODES)
def test_file_truncated_before_the_session_starts_names_the_file(tmp_path, mode):
    path = str(tmp_path / "cut.h5")
    values, kw = _truncation_data("compound")
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, **kw)
    delivered, exc = run_until_error(path, "v", mode=mode,
                                     damage=lambda: os.truncate(path, os.path.getsize(path) // 2))
    assert isinstance(exc, HDF5ReadError), repr(exc)
    assert path in str(exc) and "truncated" in str(exc), str(exc)
    assert delivered == []


def test_external_raw_data_file_truncated_while_running_is_an_error(tmp_path):
    path, raw = str(tmp_path / "efl.h5"), str(tmp_path / "efl.raw")
    values = (np.arange(N_ROWS * 8).reshape(N_ROWS, 8) + 1).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, external=[(raw, 0, h5py.h5f.UNLIMITED)])
    delivered, exc = run_until_error(path, "v", batches_per_block=1, capacity=100,
                                     after_first=lambda: os.truncate(raw, os.path.getsize(raw) // 2))
    assert isinstance(exc, HDF5ReadError), repr(exc)
    msg = str(exc)
    assert path in msg and "dataset 'v'" in msg and raw in msg and "shorter than its data" in msg, msg
    _check_prefix(delivered, values)


def test_external_raw_data_file_already_short_is_refused_at_build(tmp_path):
    path, raw = str(tmp_path / "efl.h5"), str(tmp_path / "efl.raw")
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.ones((100, 4), np.float32), external=[(raw, 0, h5py.h5f.UNLIMITED)])
    os.truncate(raw, 800)
    msg = build_fails(HDF5InputError, path, "v")
    assert path in msg and "dataset 'v'" in msg and raw in msg and "shorter than its data" in msg, msg
    os.remove(raw)
    msg = build_fails(HDF5FileNotFoundError, path, "v")
    assert path in msg and raw in msg and "does not exist" in msg, msg


# -- C: HDF5 types h5py cannot convert: a type error naming file, dataset and field -----------------

def _compound_with(member):
    ct = h5t.create(h5t.COMPOUND, 4 + member.get_size())
    ct.insert(b"a", 0, h5t.NATIVE_INT32)
    ct.insert(b"when", 4, member)
    return ct


@pytest.mark.parametrize("make_type, field, fragment", [
    (lambda: h5t.UNIX_D32LE, None, "H5T_TIME"),
    (lambda: _compound_with(h5t.UNIX_D64LE), "when", "H5T_TIME"),
    (lambda: h5t.IEEE_F128LE, None, "128-bit float"),
    (lambda: _compound_with(h5t.IEEE_F128BE), "when", "128-bit float"),
    (lambda: h5t.array_create(h5t.UNIX_D32BE, (2,)), None, "H5T_TIME"),
    (lambda: _compound_with(_compound_with(h5t.UNIX_D64BE)), "when.when", "H5T_TIME"),
])
def test_types_h5py_cannot_convert_are_type_errors_naming_file_dataset_and_field(tmp_path, make_type,
                                                                                  field, fragment):
    path = str(tmp_path / "types.h5")
    with h5py.File(path, "w") as f:
        h5d.create(f.id, b"v", make_type(), h5s.create_simple((5,)))
    msg = build_fails(HDF5TypeError, path, "v")
    assert path in msg and "dataset 'v'" in msg and fragment in msg, msg
    if field is not None:
        assert f"field {field}" in msg, msg


# -- D: data from other files only inside the file's folder, unless allow_external ------------------

def _outside_and_inside(tmp_path, how):
    """A file in ``tmp_path/data`` with dataset "v" whose values live in another file, in a
    folder beside it ("outside") or in its own subfolder ("inside"); and the values."""
    values = np.arange(40, dtype=np.float32).reshape(10, 4) + 1
    (tmp_path / "data").mkdir(exist_ok=True)
    made = {}
    for where, folder in (("outside", tmp_path / "elsewhere"), ("inside", tmp_path / "data" / "sub")):
        folder.mkdir(parents=True, exist_ok=True)
        path = str(tmp_path / "data" / f"{how}_{where}.h5")
        if how == "external-storage":
            target = str(folder / f"{where}.raw")
            values.tofile(target)
            with h5py.File(path, "w") as f:
                f.create_dataset("v", (10, 4), np.float32, external=[(target, 0, values.nbytes)])
        else:
            target = str(folder / f"{where}_source.h5")
            with h5py.File(target, "w") as f:
                f.create_dataset("src", data=values)
            with h5py.File(path, "w") as f:
                if how == "virtual":
                    layout = h5py.VirtualLayout((10, 4), np.float32)
                    layout[:] = h5py.VirtualSource(target, "src", (10, 4))
                    f.create_virtual_dataset("v", layout)
                else:
                    f["v"] = h5py.ExternalLink(target, "/src")
        made[where] = (path, target)
    return made, values


@pytest.mark.parametrize("how", ["external-storage", "virtual", "external-link"])
def test_data_outside_the_files_folder_is_refused_unless_allowed(tmp_path, how):
    made, values = _outside_and_inside(tmp_path, how)
    path, target = made["outside"]
    msg = build_fails(HDF5InputError, path, "v")
    assert path in msg and "dataset 'v'" in msg and target in msg and "allow_external=True" in msg, msg

    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["v"][:], values)  # what h5py reads: the other file's bytes
    batches = run_all(path, "v", allow_external=True)
    np.testing.assert_array_equal(np.concatenate(batches), values)

    inside, _ = made["inside"]
    np.testing.assert_array_equal(np.concatenate(run_all(inside, "v")), values)


def test_relative_and_symlinked_targets_are_judged_where_they_resolve(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    values = np.arange(10, dtype=np.float64) + 1
    with h5py.File(tmp_path / "elsewhere" / "s.h5", "w") as f:
        f.create_dataset("src", data=values)
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "looks_inside")
    path = str(tmp_path / "data" / "main.h5")
    with h5py.File(path, "w") as f:
        for name, source in (("up", "../elsewhere/s.h5"), ("symlinked", "looks_inside/s.h5")):
            layout = h5py.VirtualLayout((10,), np.float64)
            layout[:] = h5py.VirtualSource(source, "src", (10,))
            f.create_virtual_dataset(name, layout)
        f.create_dataset("own", data=values)
        layout = h5py.VirtualLayout((10,), np.float64)
        layout[:] = h5py.VirtualSource(".", "own", (10,))
        f.create_virtual_dataset("self", layout)  # a source in the file itself
    for name in ("up", "symlinked"):
        msg = build_fails(HDF5InputError, path, name)
        assert f"dataset '{name}'" in msg and "s.h5" in msg and "virtual dataset source" in msg, msg
    np.testing.assert_array_equal(np.concatenate(run_all(path, "self")), values)
    np.testing.assert_array_equal(np.concatenate(run_all(path, "symlinked", allow_external=True)), values)
