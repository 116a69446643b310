"""``Pipeline.numpy_batches()``: batches as numpy for code outside a TF1 graph.

The tests run in TF2's default eager mode, as a migrated program would: pipelines are built
inside ``with tf.Graph().as_default():`` and iterated outside it.  Real HDF5 files, threads
and processes; the autouse ``no_leaks`` fixture checks that nothing is left behind.
"""
from __future__ import annotations

import gc
import threading
import time
from contextlib import closing

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, closed_markers, mode  # noqa: F401
from sample_gens import FailingGen, InfiniteCounter, MyDataError, ShardedRange

tf1 = tf.compat.v1


def make_file(path, n=203):
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=np.arange(n * 3, dtype=np.float32).reshape(n, 3), chunks=(16, 3))
        f.create_dataset("y", data=np.arange(n, dtype=np.int64) * 10)
    return str(path)


def pipeline_threads(pipe):
    return [t.name for t in threading.enumerate() if t.name.startswith(f"queuepipe-{pipe.name}-")]


def wait_until_gone(pipe):
    deadline = time.monotonic() + PROMPT_S
    while pipeline_threads(pipe) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pipeline_threads(pipe)


def test_hdf5_rows_exactly_once_as_numpy_from_eager_code(tmp_path, mode):
    path = make_file(tmp_path / "d.h5")
    assert tf.executing_eagerly()
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, {"X": "/X", "y": "/y"}, with_row_ids=True, batch_size=8, workers=2,
                                   mode=mode, shuffle=True, seed=3, allow_smaller_final_batch=True)
    batches = list(pipe.numpy_batches())
    assert all(isinstance(b["X"], np.ndarray) and b["X"].dtype == np.float32 for b in batches)
    ids = np.concatenate([b["row_id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(203)), "every row exactly once"
    X, y = np.concatenate([b["X"] for b in batches]), np.concatenate([b["y"] for b in batches])
    np.testing.assert_array_equal(X[:, 0], ids * 3)
    np.testing.assert_array_equal(y, ids * 10)
    assert not pipeline_threads(pipe), "the end of data stopped the workers"


def test_a_second_iteration_runs_the_pipeline_again():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(21), tf.int64, (), batch_size=4, workers=2,
                                        allow_smaller_final_batch=True)
    first = np.concatenate(list(pipe.numpy_batches()))
    second = np.concatenate(list(pipe.numpy_batches()))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(21))


def test_nothing_starts_before_the_first_batch_is_asked_for():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=4)
    it = pipe.numpy_batches()
    time.sleep(0.2)
    assert pipe.runtime.runs_started == 0 and not pipeline_threads(pipe)
    it.close()
    assert pipe.runtime.runs_started == 0


@pytest.mark.parametrize("how", ["break", "close", "garbage"])
def test_closing_early_stops_the_workers_and_closes_their_generators(tmp_path, mode, how):
    marker = str(tmp_path / "closed")
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(InfiniteCounter(marker), (tf.int64, tf.int64), ((), ()), batch_size=4,
                                        workers=2, mode=mode)
    if how == "break":
        for n, (worker, i) in enumerate(pipe.numpy_batches()):
            if n == 3:
                break
    else:
        it = pipe.numpy_batches()
        for _ in range(3):
            next(it)
        assert pipeline_threads(pipe), "the workers run while the iterator is open"
        if how == "close":
            it.close()
        else:
            del it
            gc.collect()
    assert not wait_until_gone(pipe), "closing the iterator stops the pipeline's threads"
    deadline = time.monotonic() + PROMPT_S
    while len(closed_markers(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(closed_markers(marker)) == 2, "every worker's generator was closed"


def test_worker_error_is_raised_with_its_original_type(mode):
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(FailingGen(400, 9, MyDataError, "sample 9 is bad"), tf.int64, (),
                                        batch_size=4, workers=2, mode=mode)
    seen = []
    with pytest.raises(MyDataError, match="sample 9 is bad"):
        for batch in pipe.numpy_batches():
            seen.append(batch)
    assert not wait_until_gone(pipe)


def test_in_a_given_session_which_stays_open_and_other_pipelines_stay_idle():
    g = tf.Graph()
    with g.as_default():
        pipe = queuepipe.from_generator(ShardedRange(12), tf.int64, (), batch_size=4)
        other = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=4)
    with closing(tf1.Session(graph=g)) as sess:
        assert np.concatenate(list(pipe.numpy_batches(sess))).tolist() == list(range(12))
        assert sess.run(pipe.size()) == 0, "the session is still open"
        assert other.runtime.runs_started == 0, "only this pipeline was started"


def test_refuses_a_session_of_another_graph_and_two_iterators_at_once():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=4)
    with closing(tf1.Session(graph=tf.Graph())) as wrong:
        with pytest.raises(queuepipe.ArgumentError, match="not in the session's graph"):
            pipe.numpy_batches(wrong)
    first = pipe.numpy_batches()
    next(first)
    with pytest.raises(queuepipe.ArgumentError, match="already being iterated"):
        next(pipe.numpy_batches())
    next(first)  # the refused one did not disturb the first
    first.close()
    assert not wait_until_gone(pipe)


def test_a_staged_pipeline_yields_its_staged_batches():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(16), tf.int64, (), batch_size=4)
        pipe.staged("/cpu:0")
    assert np.concatenate(list(pipe.numpy_batches())).tolist() == list(range(16))


def test_a_resumable_pipeline_iterates_from_the_beginning_in_its_own_session(tmp_path):
    path = str(tmp_path / "r.h5")
    with h5py.File(path, "w") as f:
        f["y"] = np.arange(40)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, "/y", batch_size=8, resumable=True)
    got = np.concatenate(list(pipe.numpy_batches()))
    assert got.tolist() == list(range(40))
