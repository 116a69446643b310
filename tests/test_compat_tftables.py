"""``queuepipe.compat.tftables``: tftables programs run with one import changed.

The programs below are written as tftables' README and how-to write them, with
``tftables`` bound to the facade.  Real HDF5 files, sessions, threads and processes; the
autouse ``no_leaks`` fixture checks that nothing is left behind.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
import queuepipe.compat.tftables as tftables
from helpers import Timer, describe, run_python

tf1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, BATCH = 64, 8


def make_file(path, n=N):
    table = np.zeros(n, dtype=[("label", "i4"), ("data", "f4", (2,))])
    table["label"] = np.arange(n) % 3
    table["data"][:, 0] = np.arange(n)
    table["data"][:, 1] = -np.arange(n)
    with h5py.File(path, "w") as f:
        f.create_dataset("table", data=table, chunks=(16,))
        f.create_dataset("ids", data=np.arange(n, dtype=np.int64), chunks=(16,))
    return str(path)


def queuepipe_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("queuepipe")]


def test_the_before_after_pair_differs_only_in_the_import_and_after_runs():
    with open(os.path.join(REPO, "compat", "tftables_before.py")) as f:
        before = f.read().split('"""', 2)[2]  # the code, after the module docstring
    with open(os.path.join(REPO, "compat", "tftables_after.py")) as f:
        after = f.read().split('"""', 2)[2]
    assert before.replace("\nimport tftables\n", "\nimport queuepipe.compat.tftables as tftables\n") == after
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with Timer() as timer:
        proc = subprocess.run([sys.executable, os.path.join(REPO, "compat", "tftables_after.py")],
                              capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO))
    assert proc.returncode == 0, describe(proc)
    assert "OK: fifo loader 192 rows in file order, load_dataset one pass of 96 rows, feed 48 rows" in proc.stdout
    assert timer.elapsed < 60


def test_readme_fifo_loader_ordered_is_file_order_and_datasets_stay_aligned(tmp_path):
    path = make_file(tmp_path / "d.h5")
    with tf.Graph().as_default():
        reader = tftables.open_file(filename=path, batch_size=BATCH)
        table_batch = reader.get_batch("/table", cyclic=True, ordered=True)
        col_label, col_data = table_batch["label"], table_batch["data"]
        truth_batch = tf1.one_hot(col_label, 3, 1, 0)
        ids_batch = reader.get_batch("/ids", ordered=True)
        loader = reader.get_fifoloader(queue_size=4, inputs=[truth_batch, col_data * 2.0, ids_batch], threads=2)
        truth_cpu, data_cpu, ids_cpu = loader.dequeue()
        assert truth_cpu.shape.as_list() == [BATCH, 3] and data_cpu.shape.as_list() == [BATCH, 2]
        seen = []
        with tf1.Session() as sess:
            loader.start(sess)
            for _ in range(2 * N // BATCH + 3):  # cyclic: past the end, back to the start
                truth, data, ids = sess.run([truth_cpu, data_cpu, ids_cpu])
                np.testing.assert_array_equal(data[:, 0], 2.0 * ids)  # the transform, on the same rows
                np.testing.assert_array_equal(truth.argmax(axis=1), ids % 3)
                seen.extend(ids.tolist())
            loader.stop(sess)
        reader.close()
    assert seen == (list(range(N)) * 3)[:len(seen)], "ordered: file order, wrapping around"
    assert not queuepipe_threads()


@pytest.mark.parametrize("how", [dict(threads=2), dict(processes=2)], ids=["threads", "processes"])
def test_load_dataset_unordered_one_pass_every_row_once(tmp_path, how):
    path = make_file(tmp_path / "d.h5")

    def input_transform(tbl_batch):
        labels = tbl_batch["label"]
        data = tbl_batch["data"]
        truth = tf.cast(tf1.one_hot(labels, 3, 1, 0), tf.float32)
        return truth, data

    with tf.Graph().as_default():
        loader = tftables.load_dataset(filename=path, dataset_path="/table", input_transform=input_transform,
                                       batch_size=BATCH, cyclic=False, ordered=False, **how)
        truth_batch, data_batch = loader.dequeue()
        assert loader.pipeline.mode == ("process" if "processes" in how else "thread")
        assert loader.pipeline.workers == 2
        rows = []
        with tf1.Session() as sess:
            with loader.begin(sess):  # the end of the pass ends the loop quietly
                while True:
                    truth, data = sess.run([truth_batch, data_batch])
                    np.testing.assert_array_equal(truth.argmax(axis=1), data[:, 0].astype(int) % 3)
                    rows.extend(data[:, 0].astype(int).tolist())
    assert sorted(rows) == list(range(N)), "one pass: every row exactly once"
    assert rows != list(range(N)), "ordered=False shuffles"


def test_feed_dicts_and_close_stops_a_running_feed(tmp_path):
    path = make_file(tmp_path / "d.h5")
    with tf.Graph().as_default():
        reader = tftables.open_file(filename=path, batch_size=BATCH)
        ids_pl = reader.get_batch("/ids")
        doubled = ids_pl * 2
        out = []
        with tf1.Session() as sess:
            feed = reader.feed()
            for i, feed_dict in enumerate(feed):
                out.extend(sess.run(doubled, feed_dict=feed_dict).tolist())
                if i >= 2:
                    break
            assert queuepipe_threads(), "the feed's pipeline runs while the generator is open"
            reader.close()
            assert not queuepipe_threads(), "close() stopped it"
    assert out == [2 * i for i in range(3 * BATCH)]


def test_missing_dataset_is_refused_with_queuepipes_error(tmp_path):
    path = make_file(tmp_path / "d.h5")
    with tf.Graph().as_default():
        reader = tftables.open_file(path, 8)
        with pytest.raises(queuepipe.HDF5InputError, match="no_such"):
            reader.get_batch("/no_such")
        with pytest.raises(queuepipe.HDF5InputError, match="no_such"):
            tftables.load_dataset(path, "/no_such", batch_size=8)
        with pytest.raises(queuepipe.HDF5FileNotFoundError):
            tftables.open_file(str(tmp_path / "missing.h5"), 8).get_batch("/ids")
        reader.get_batch("/ids", cyclic=True)
        with pytest.raises(queuepipe.ArgumentError, match="cyclic"):
            reader.get_batch("/table", cyclic=False)
        with pytest.raises(TypeError, match="multitables"):
            tftables.open_file(path, 8, cache_size=3)
    with pytest.raises(queuepipe.GraphModeError):
        tftables.open_file(path, 8).get_batch("/ids")  # eager here: a TF1 program disables it first


@pytest.mark.parametrize("style", ["begin", "start_stop"])
def test_corrupt_chunk_raises_hdf5_read_error_and_stops(tmp_path, style):
    path = tmp_path / "corrupt.h5"
    values = np.arange(2048 * 16, dtype=np.float32).reshape(2048, 16)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", data=values, chunks=(128, 16), compression="gzip")
        info = d.id.get_chunk_info(10)  # rows 1280..1407
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\xff" * (info.size - 16))
    with tf.Graph().as_default():
        reader = tftables.open_file(str(path), 64, batches_per_block=2)  # a queuepipe option: small reads
        loader = reader.get_fifoloader(4, [reader.get_batch("/X", cyclic=False)])
        batch = loader.dequeue()
        seen = 0
        with tf1.Session() as sess:
            with pytest.raises(queuepipe.HDF5ReadError, match="rows 1280..1407"):
                if style == "begin":
                    with loader.begin(sess):
                        while True:
                            seen += len(sess.run(batch))
                else:
                    loader.start(sess)
                    try:
                        while True:
                            seen += len(sess.run(batch))
                    except tf.errors.OpError as exc:
                        assert not isinstance(exc, tf.errors.OutOfRangeError), "never a silent end of data"
                    loader.stop(sess)  # raises the worker's error, with its original type
    assert seen == 1280, "every batch before the bad chunk"
    assert not queuepipe_threads()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_program_that_never_stops_its_loader_still_exits(tmp_path, mode):
    path = make_file(tmp_path / "d.h5")
    code = f"""
import tensorflow.compat.v1 as tf
import queuepipe.compat.tftables as tftables
tf.disable_eager_execution()
loader = tftables.load_dataset({path!r}, "/ids", batch_size=4, queue_size=2,
                               {'processes' if mode == 'process' else 'threads'}=2)
batch = loader.dequeue()
sess = tf.Session()
loader.start(sess)
print("got", len(sess.run(batch)), flush=True)
# no loader.stop(sess), no sess.close(): the interpreter must still exit
"""
    with Timer() as timer:
        proc = run_python(code, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert "got 4" in proc.stdout
    assert timer.elapsed < 60
