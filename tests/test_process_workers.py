"""Process workers: isolation from TF, seeding, faults, and no orphans or shared memory left."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

import queuepipe
import workers_gen

tf1 = tf.compat.v1
pytestmark = pytest.mark.timeout(120)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _drain(sess, batch):
    out = []
    try:
        while True:
            out.append(sess.run(batch))
    except tf.errors.OutOfRangeError:
        return out


def test_children_never_import_tensorflow_and_deliver_exactly_once():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(functools.partial(workers_gen.identity_stream, 1000), tf.int64, (4,),
                                        batch_size=16, workers=2, mode="process",
                                        allow_smaller_final_batch=True)
        with tf1.Session() as sess, queuepipe.running(sess):
            rows = np.concatenate(_drain(sess, pipe.batch))
    assert sorted(rows[:, 1].tolist()) == list(range(1000))
    assert set(rows[:, 0].tolist()).isdisjoint({os.getpid()}), "samples must come from child processes"
    assert len(set(rows[:, 0].tolist())) == 2
    assert rows[:, 2].max() == 0, "a worker process imported tensorflow"
    assert ((rows[:, 1] % 2) == rows[:, 3]).all(), "worker_info().index must shard as documented"


def test_each_child_seeds_random_and_numpy_distinctly_and_reproducibly():
    def run():
        with tf.Graph().as_default():
            pipe = queuepipe.from_generator(workers_gen.seeds_stream, tf.int64, (4,), batch_size=1,
                                            workers=3, mode="process", seed=1234)
            with tf1.Session() as sess, queuepipe.running(sess):
                return sorted(map(tuple, np.concatenate(_drain(sess, pipe.batch)).tolist()))
    first, second = run(), run()
    assert [r[0] for r in first] == [0, 1, 2]
    for column in (1, 2, 3):
        assert len({r[column] for r in first}) == 3, f"column {column} must differ per worker"
    assert first == second, "a fixed pipeline seed must give the same per-worker streams"


def test_unpicklable_generator_is_refused_at_build_time_with_advice():
    def local_generator():  # a closure: cannot be pickled
        yield 1
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match=r"picklable.*top-level function.*functools\.partial"):
            queuepipe.from_generator(local_generator, tf.int64, (), batch_size=1, mode="process")
        with pytest.raises(ValueError, match="callable"):
            queuepipe.from_generator(iter([1, 2]), tf.int64, (), batch_size=1, mode="process")


def test_child_exception_reaches_main_thread_with_type_message_and_traceback():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(functools.partial(workers_gen.raise_at, 5), tf.int64, (2,),
                                        batch_size=2, workers=1, mode="process")
        with tf1.Session() as sess:
            with pytest.raises(ValueError, match="bad item 5 from process worker") as info:
                with queuepipe.running(sess):
                    with pytest.raises(tf.errors.OpError) as op_error:
                        while True:
                            sess.run(pipe.batch)
                    message = op_error.value.message
                    assert "ValueError: bad item 5 from process worker" in message
                    assert "raise_at" in message, "the child's traceback must be in the message"
    assert "raise_at" in str(info.value.__cause__), "the remote traceback travels as __cause__"


def test_child_killed_mid_epoch_is_reported_with_worker_and_signal():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(functools.partial(workers_gen.suicide_at, 200, 1), tf.int64, (2,),
                                        batch_size=8, workers=2, mode="process")
        started = time.monotonic()
        with tf1.Session() as sess:
            with pytest.raises(queuepipe.WorkerDiedError, match=r"worker 1 of 2.*SIGKILL"):
                with queuepipe.running(sess):
                    with pytest.raises(tf.errors.OpError, match="SIGKILL"):
                        while True:
                            sess.run(pipe.batch)
        assert time.monotonic() - started < 30


PARENT_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import tensorflow as tf, queuepipe, workers_gen
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    pipe = queuepipe.from_generator(workers_gen.slow_forever, tf.int64, (2,), batch_size=4, workers=2,
                                    mode="process")
    with tf1.Session() as sess, queuepipe.running(sess):
        pids = set()
        while len(pids) < 2:
            pids.update(sess.run(pipe.batch)[:, 0].tolist())
        print("PIDS", *sorted(pids), flush=True)
        while True:
            sess.run(pipe.batch)
""")


def _start_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT.format(tests=os.path.dirname(__file__)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    line = ""
    deadline = time.monotonic() + 90
    while not line.startswith("PIDS") and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"parent script failed: {proc.stderr.read()[-3000:]}")
    pids = [int(p) for p in line.split()[1:]]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    return proc, pids


def _wait_gone(pids, seconds=15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _shm_names():
    return set(os.listdir("/dev/shm"))


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_parent_killed_or_interrupted_leaves_no_child_and_no_shared_memory(tmp_path, how):
    shm_before = _shm_names()
    proc, pids = _start_parent(tmp_path)
    os.kill(proc.pid, getattr(signal, how))
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert _wait_gone(pids) == [], f"worker processes outlived their parent ({how})"
    assert _shm_names() - shm_before == set()


def test_batches_lent_from_shared_memory_keep_their_values_while_the_child_writes_on(tmp_path):
    """Blocks reach TF as views of the child's slots (no copy): a slot must not be rewritten
    while a batch made from it waits in the queue or is still held as a tensor/array."""
    import h5py
    path = str(tmp_path / "lent.h5")
    n, width = 4096, 64
    with h5py.File(path, "w") as f:
        f["X"] = (np.arange(n, dtype=np.float32)[:, None] + np.zeros((1, width), np.float32))
        f["y"] = np.arange(n, dtype=np.int64)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=32, workers=2, mode="process",
                                   batches_per_block=4, capacity=32 * 24, num_epochs=2)
        x, y = pipe.batch
        held = []
        with tf1.Session() as sess, queuepipe.running(sess):
            deadline = time.monotonic() + 30
            while sess.run(pipe.size()) < 24 and time.monotonic() < deadline:
                time.sleep(0.02)  # the queue fills up: its batches hold slots, the children wait
            try:
                while True:
                    xs, ys = sess.run([x, y])
                    held.append((xs, ys))
                    assert (xs == ys[:, None].astype(np.float32)).all()
            except tf.errors.OutOfRangeError:
                pass
    ids = np.concatenate([ys for _, ys in held])
    assert np.bincount(ids, minlength=n).tolist() == [2] * n
    for xs, ys in held:  # still intact after the run: fetched arrays own their data
        assert (xs == ys[:, None].astype(np.float32)).all()
