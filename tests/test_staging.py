"""Staging (issue 14, item 1): ``pipe.staged(device, depth)`` puts batches on the device ahead
of the step, keeping every guarantee of the unstaged batch: exactly once and in order, the
staged batches then ``OutOfRangeError`` at the end of data, a worker's error with its type
and text, a clean stop, and at most ``depth`` batches waiting on the device.

No GPU here: the staged ops go to ``/cpu:0`` or, for a real copy between devices, to a
second CPU device (``device_count={"CPU": 2}``); placement is checked on the graph and with
``log_device_placement``."""
from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from queuepipe.errors import ArgumentError

from helpers import PROMPT_S, drain, describe, mode, run_python  # noqa: F401 - fixture

tf1 = tf.compat.v1

N = 250
TWO_CPUS = tf1.ConfigProto(device_count={"CPU": 2})


def _file(tmp_path, n=N):
    path = str(tmp_path / "rows.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("id", data=np.arange(n, dtype=np.int64), chunks=(16,))
        f.create_dataset("x", data=np.arange(n * 3, dtype=np.float32).reshape(n, 3), chunks=(16, 3))
    return path


def _ids(batches):
    return np.concatenate([b[1] for b in batches]).tolist()


@pytest.mark.parametrize("workers", [1, 4])
def test_exactly_once_and_in_order_over_three_epochs(tmp_path, mode, workers):
    path = _file(tmp_path)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ("x", "id"), batch_size=16, workers=workers, mode=mode,
                                   num_epochs=3, allow_smaller_final_batch=True)
        batch = pipe.staged("/cpu:1", depth=2)
        with tf1.Session(config=TWO_CPUS) as sess, queuepipe.running(sess):
            batches = drain(sess, batch)
    ids = _ids(batches)
    for x, i in batches:
        assert (x[:, 0] == 3 * i).all()  # fields of one row stay together
    if workers == 1:
        # one worker, no shuffle: step k gets batch k of the unstaged order
        assert ids == list(range(N)) * 3
        assert [len(b[1]) for b in batches][:15] == [16] * 15
    else:
        for k in range(3):  # epochs in order (DESIGN guarantee 1), each row once per epoch
            assert sorted(ids[k * N:(k + 1) * N]) == list(range(N))


def test_end_of_data_gives_the_staged_batches_then_out_of_range_every_time(tmp_path):
    path = _file(tmp_path, 100)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ("x", "id"), batch_size=32, allow_smaller_final_batch=True)
        x, i = pipe.staged("/cpu:0", depth=3)
        with tf1.Session() as sess, queuepipe.running(sess):
            got = [sess.run(i) for _ in range(4)]
            for _ in range(3):  # again and again: never a hang on the empty staging area
                with pytest.raises(tf.errors.OutOfRangeError):
                    sess.run(i)
    assert [len(b) for b in got] == [32, 32, 32, 4]
    assert np.concatenate(got).tolist() == list(range(100))


def test_full_batches_only_drop_the_short_tail_as_unstaged(tmp_path):
    path = _file(tmp_path, 100)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ("x", "id"), batch_size=32)
        x, i = pipe.staged("/cpu:0")
        assert i.shape.as_list() == [32] and x.shape.as_list() == [32, 3]
        with tf1.Session() as sess, queuepipe.running(sess):
            got = drain(sess, i)
    assert np.concatenate(got).tolist() == list(range(96))


class FailsAt:
    """Yields samples 0, 1, ... and raises at ``at`` (module level: process workers pickle it)."""

    def __init__(self, at):
        self.at = at

    def __call__(self):
        for k in range(10_000):
            if k == self.at:
                raise KeyError(f"sample {k} is broken")
            yield np.int64(k)


def test_worker_error_reaches_sess_run_with_its_type_and_text(mode):
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(FailsAt(70), tf.int64, [], batch_size=10, mode=mode)
        batch = pipe.staged("/cpu:0", depth=2)
        seen = []
        with pytest.raises(KeyError, match="sample 70 is broken"):
            with tf1.Session() as sess, queuepipe.running(sess):
                started = time.monotonic()
                with pytest.raises(KeyError, match="sample 70 is broken"):
                    while True:
                        seen.extend(sess.run(batch).tolist())
                assert time.monotonic() - started < PROMPT_S
                with pytest.raises(KeyError):  # every later run: the failure again, never data
                    sess.run(batch)
    assert seen == list(range(len(seen))) and len(seen) <= 70


def test_monitored_training_session_stops_at_the_end_of_data(tmp_path, mode):
    path = _file(tmp_path)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ("x", "id"), batch_size=20, workers=2, mode=mode,
                                   allow_smaller_final_batch=True)
        x, i = pipe.staged("/cpu:0")
        step = tf1.train.get_or_create_global_step()
        train = tf1.assign_add(step, 1)
        seen = []
        with tf1.train.MonitoredTrainingSession() as sess:
            while not sess.should_stop():
                ids, _ = sess.run([i, train])
                seen.extend(ids.tolist())
    assert sorted(seen) == list(range(N))


def test_at_most_depth_batches_wait_on_the_device(tmp_path):
    path = _file(tmp_path, 2000)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ("x", "id"), batch_size=10)
        x, i = pipe.staged("/cpu:1", depth=2)
        staging = pipe.staging
        with tf1.colocate_with(staging.stage_op):
            size = tf.raw_ops.StageSize(dtypes=[tf.float32, tf.int64], capacity=0, memory_limit=0,
                                        container="", shared_name=staging.stage_op.get_attr("shared_name"))
        with tf1.Session(config=TWO_CPUS) as sess, queuepipe.running(sess):
            sizes = []
            for _ in range(5):
                deadline = time.monotonic() + PROMPT_S
                while sess.run(size) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)  # the stager has had every chance to put more
                sizes.append(sess.run(size))
                sess.run(i)
    assert sizes == [2] * 5


def test_stop_while_the_stager_waits_for_room_and_the_consumer_for_data(tmp_path, mode):
    path = _file(tmp_path, 5000)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ("x", "id"), batch_size=10, mode=mode)
        x, i = pipe.staged("/cpu:0", depth=1)
        with tf1.Session() as sess:
            with queuepipe.running(sess):
                first = sess.run(i)
                time.sleep(0.2)  # the stager is now blocked for room on the device
            assert first.tolist() == list(range(10))
            # after the stop a staged batch never hangs: data left on the device, or the end
            try:
                for _ in range(3):
                    sess.run(i)
            except (tf.errors.OutOfRangeError, tf.errors.CancelledError):
                pass


def test_staged_ops_carry_the_requested_device():
    with tf.Graph().as_default() as g:
        pipe = queuepipe.from_generator(lambda: iter(range(5)), tf.int64, [], batch_size=2)
        batch = pipe.staged("/job:localhost/replica:0/task:0/device:CPU:1")
        ops = pipe.staging.ops()
        assert {op.type for op in ops} == {"Stage", "Unstage"}
        for op in ops + [batch.op]:
            assert tf.DeviceSpec.from_string(op.device).to_string().endswith("device:CPU:1"), op
        assert pipe.staged("/job:localhost/replica:0/task:0/device:CPU:1") is batch
        with pytest.raises(ArgumentError, match="already staged"):
            pipe.staged("/cpu:0")
        del g


def test_log_device_placement_shows_the_staging_on_the_device():
    code = """
import tensorflow as tf, queuepipe
tf1 = tf.compat.v1
pipe = queuepipe.from_generator(lambda: iter(range(7)), tf.int64, [], batch_size=2, allow_smaller_final_batch=True)
b = pipe.staged("/cpu:1")
config = tf1.ConfigProto(device_count={"CPU": 2}, log_device_placement=True)
with tf1.Session(config=config) as sess, queuepipe.running(sess):
    got = []
    try:
        while True:
            got.extend(sess.run(b).tolist())
    except tf.errors.OutOfRangeError:
        pass
print("GOT", got)
"""
    tf1_code = "import tensorflow as tf; tf.compat.v1.disable_eager_execution()\n" + code
    proc = run_python(tf1_code, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert "GOT [0, 1, 2, 3, 4, 5, 6]" in proc.stdout, describe(proc)
    placed = proc.stdout + proc.stderr
    for op in ("put: (Stage)", "get: (Unstage)"):
        lines = [ln for ln in placed.splitlines() if ln.startswith("queuepipe/staging/") and op in ln]
        assert lines and all("device:CPU:1" in ln for ln in lines), (op, lines, describe(proc))


def test_bad_arguments_are_refused_at_build_time():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(lambda: iter([b"a"]), tf.string, [], batch_size=1)
        with pytest.raises(ArgumentError, match="depth"):
            pipe.staged("/cpu:0", depth=0)
        with pytest.raises(ArgumentError, match="tf.string"):
            pipe.staged("/gpu:0")


def test_threads_left_after_the_session_closes_without_running():
    """The stager is only a thread while a run goes on; a never-started pipeline leaves nothing."""
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(lambda: iter(range(3)), tf.int64, [], batch_size=1)
        pipe.staged("/cpu:0")
        with tf1.Session():
            pass
    assert not [t for t in threading.enumerate() if t.name.startswith("queuepipe")]
