"""A worker that makes no progress (issue 12, item 5): with ``stall_timeout`` it is reported as
stalled -- ``WorkerStalledError`` naming what it was doing -- and a stalled worker process is
killed; the consumer waiting in ``sess.run`` gets the error instead of waiting forever."""
from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, mode  # noqa: F401 - fixture
from hdf5_workerfns import hang_on_second_block
from sample_gens import StallsAfter

tf1 = tf.compat.v1


def _first_error(sess, batch):
    started = time.monotonic()
    with pytest.raises(tf.errors.OpError) as caught:
        for _ in range(1000):
            sess.run(batch)
    return caught.value, time.monotonic() - started


def test_a_stalled_generator_worker_is_reported_not_waited_for(mode):
    # a thread cannot be killed: it hangs 4 s, then ends on its own (the test must not leak it)
    hang = 4.0 if mode == "thread" else 60.0
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(StallsAfter(8, hang), tf.int64, (), batch_size=4, mode=mode,
                                        stall_timeout=1.0)
        with pytest.raises(queuepipe.WorkerStalledError) as raised:
            with tf1.Session() as sess, queuepipe.running(sess):
                error, waited = _first_error(sess, pipe.batch)
    assert waited < PROMPT_S
    assert "WorkerStalledError" in error.message and "made no progress" in error.message
    assert "stall_timeout=1" in str(raised.value)
    if mode == "process":
        assert "was killed" in str(raised.value)


def test_a_stalled_hdf5_worker_process_is_killed_and_named_with_its_file_and_rows(tmp_path):
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(64, dtype=np.int64), chunks=(8,))
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, "x", batch_size=8, batches_per_block=1, mode="process",
                                   map_fn=hang_on_second_block, output_types=tf.int64, output_shapes=(),
                                   stall_timeout=1.0)
        with pytest.raises(queuepipe.WorkerStalledError) as raised:
            with tf1.Session() as sess, queuepipe.running(sess):
                _first_error(sess, pipe.batch)
    text = str(raised.value)
    assert path in text and "starting at row 8" in text and "was killed" in text


def test_a_slow_worker_below_the_stall_timeout_is_not_an_error():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(StallsAfter(8, 0.5), tf.int64, (), batch_size=4, stall_timeout=5.0)
        with tf1.Session() as sess, queuepipe.running(sess):
            rows = []
            while True:
                try:
                    rows.extend(sess.run(pipe.batch).tolist())
                except tf.errors.OutOfRangeError:
                    break
    assert rows == list(range(8))


def test_stall_timeout_must_be_a_positive_number():
    with tf.Graph().as_default():
        for bad in (0, -1, "5", True):
            with pytest.raises(queuepipe.ArgumentError, match="stall_timeout"):
                queuepipe.from_generator(StallsAfter(1, 0), tf.int64, (), batch_size=1, stall_timeout=bad)
