"""``queuepipe.compat.feeding.from_feeds``: a "placeholder + enqueue thread" reader as a pipeline.

The reference is the real thing: a ``PaddingFIFOQueue`` fed through placeholders and read
with ``dequeue_many``.  Real sessions, threads and processes (the process case runs a
module-level generator of the TF-free ``sample_gens``).  Also the WaveNet-style
before/after pair ``compat/wavenet_reader_*.py``, run as programs.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import describe, drain, run_python
from queuepipe.compat.feeding import from_feeds
from sample_gens import MyDataError, ThenRaise, VarLen, varlen_length

tf1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clip(i):
    """Element i: a float32 [T, 1] clip (T varies, never zero-valued) and its id."""
    return np.full((1 + (i * 7) % 5, 1), i + 0.5, np.float32), i


def padding_fifo_queue_batches(elements, batch_size):
    """What the old reader's training step got: the elements fed one by one through placeholders into
    a PaddingFIFOQueue, then ``dequeue_many(batch_size)`` until the closed queue runs short."""
    with tf.Graph().as_default():
        audio = tf1.placeholder(tf.float32, shape=None)
        ids = tf1.placeholder(tf.int64, shape=())
        queue = tf1.PaddingFIFOQueue(len(elements), [tf.float32, tf.int64], shapes=[(None, 1), ()])
        enqueue = queue.enqueue([audio, ids])
        batch = queue.dequeue_many(batch_size)
        with tf1.Session() as sess:
            for a, i in elements:
                sess.run(enqueue, feed_dict={audio: a, ids: i})
            sess.run(queue.close())
            return drain(sess, batch)


def test_batches_are_padded_per_batch_exactly_as_padding_fifo_queue_pads_them():
    elements = [clip(i) for i in range(11)]
    expected = padding_fifo_queue_batches(elements, 3)
    with tf.Graph().as_default():
        audio = tf1.placeholder(tf.float32, shape=(None, 1), name="audio")
        ids = tf1.placeholder(tf.int64, shape=(), name="ids")

        def feeds():  # the old thread's feed_dicts, keyed by the placeholders themselves
            for a, i in elements:
                yield {audio: a, ids: i}

        pipe = from_feeds(feeds, [audio, ids], batch_size=3)
        assert pipe.batch[0].shape.as_list() == [3, None, 1] and pipe.batch[1].shape.as_list() == [3]
        with tf1.Session() as sess, queuepipe.running(sess):
            got = drain(sess, pipe.batch)
    assert len(got) == len(expected) == 3, "whole batches only, as dequeue_many"
    for (a, i), (ea, ei) in zip(got, expected):
        np.testing.assert_array_equal(i, ei)
        assert a.shape == ea.shape and a.dtype == ea.dtype
        np.testing.assert_array_equal(a, ea)


def _check_varlen_batches(batches, n):
    ids = []
    for i, values in batches:
        lengths = [varlen_length(int(k)) for k in i]
        assert values.shape == (len(i), max(lengths)), "padded to the batch's longest row"
        for row, k, length in zip(values, i, lengths):
            assert (row[:length] == k + 1).all() and (row[length:] == 0).all()
        ids.extend(i.tolist())
    assert sorted(ids) == list(range(n)), "every element exactly once"


def test_two_thread_workers_deliver_every_element_once_keyed_by_name():
    n = 60
    with tf.Graph().as_default():
        ids = tf1.placeholder(tf.int64, shape=(), name="ids")
        values = tf1.placeholder(tf.int32, shape=(None,), name="values")

        def feeds():  # the worker's shard, keyed by op name and by tensor name
            for i, row in VarLen(n)():
                yield {"ids": i, "values:0": row}

        pipe = from_feeds(feeds, (ids, values), batch_size=4, workers=2, allow_smaller_final_batch=True)
        assert pipe.workers == 2 and pipe.mode == "thread"
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, pipe.batch)
    _check_varlen_batches(batches, n)


def test_process_workers_run_a_module_level_generator_of_tuples():
    n = 50
    with tf.Graph().as_default():
        ids = tf1.placeholder(tf.int64, shape=())
        values = tf1.placeholder(tf.int32, shape=None)  # unknown rank: padded per batch too
        pipe = from_feeds(VarLen(n), [ids, values], batch_size=4, workers=2, mode="process",
                          allow_smaller_final_batch=True)
        assert pipe.mode == "process"
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, pipe.batch)
    _check_varlen_batches(batches, n)


def test_the_adapter_module_stays_tensorflow_free_for_worker_processes():
    proc = run_python("import sys, queuepipe.compat.feeding\n"
                      "assert 'tensorflow' not in sys.modules, 'feeding imported TensorFlow'\nprint('ok')")
    assert proc.returncode == 0 and "ok" in proc.stdout, describe(proc)


def test_a_dict_of_placeholders_an_iterator_and_output_shapes():
    with tf.Graph().as_default():
        placeholders = {"audio": tf1.placeholder(tf.float32, shape=None), "id": tf1.placeholder(tf.int64)}
        elements = iter([clip(i) for i in range(8)])  # an iterator object: the workers share it
        pipe = from_feeds(elements, placeholders, batch_size=4, workers=2,
                          output_shapes={"audio": (None, 1), "id": ()})
        assert set(pipe.batch) == {"audio", "id"}
        assert pipe.batch["audio"].shape.as_list() == [4, None, 1] and pipe.batch["id"].shape.as_list() == [4]
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, pipe.batch)
    got = sorted(i for b in batches for i in b["id"].tolist())
    assert got == list(range(8)), "tuples in the dict's order, each element once"
    for b in batches:
        for a, i in zip(b["audio"], b["id"]):
            length = clip(int(i))[0].shape[0]
            assert (a[:length] == i + 0.5).all() and (a[length:] == 0).all()


def test_a_generator_error_reaches_sess_run_with_its_type_and_running_re_raises_it():
    with tf.Graph().as_default():
        audio = tf1.placeholder(tf.float32, shape=(None, 1))
        samples = [np.ones((3, 1), np.float32)] * 5
        pipe = from_feeds(ThenRaise(samples, MyDataError, "clip 5 is unreadable"), audio, batch_size=2)
        with tf1.Session() as sess:
            with pytest.raises(MyDataError, match="clip 5 is unreadable"), queuepipe.running(sess):
                with pytest.raises(tf.errors.OpError) as raised:
                    drain(sess, pipe.batch)
                assert not isinstance(raised.value, tf.errors.OutOfRangeError)
                assert "MyDataError" in raised.value.message and "clip 5 is unreadable" in raised.value.message


@pytest.mark.parametrize("element, match", [
    ((1.0,), r"element 0 must be a tuple of 2 values .* got a tuple of length 1"),
    ({"nope": 1}, r"element 0 feeds 'nope', which is not one of the placeholders"),
    ({"ids": 1}, r"element 0 feeds no value for placeholder\(s\) \['values:0'\]"),
])
def test_a_malformed_element_names_the_element_and_the_placeholders(element, match):
    with tf.Graph().as_default():
        ids = tf1.placeholder(tf.int64, shape=(), name="ids")
        values = tf1.placeholder(tf.float32, shape=(None,), name="values")
        pipe = from_feeds(iter([element]), [ids, values], batch_size=1)
        with tf1.Session() as sess:
            with pytest.raises(queuepipe.SpecError, match=match), queuepipe.running(sess):
                with pytest.raises(tf.errors.OpError, match=match):
                    sess.run(pipe.batch)


def test_arguments_it_cannot_take_are_refused_naming_them():
    with tf.Graph().as_default():
        ph = tf1.placeholder(tf.float32, shape=(2,))
        with pytest.raises(queuepipe.ArgumentError, match="output_types"):
            from_feeds(VarLen(4), ph, output_types=tf.float32)
        with pytest.raises(queuepipe.ArgumentError, match="resumable"):
            from_feeds(VarLen(4), ph, resumable=True)
        with pytest.raises(queuepipe.ArgumentTypeError, match=r"placeholders\[1\] is a ndarray"):
            from_feeds(VarLen(4), [ph, np.zeros(2)])
        with pytest.raises(queuepipe.ArgumentTypeError, match="generator must be"):
            from_feeds(5, ph)


# -- the WaveNet-style before/after pair, run as programs ----------------------------------------------

def _code(name):
    with open(os.path.join(REPO, "compat", name)) as f:
        return f.read().split('"""', 2)[2]  # the code, after the module docstring


def _outside_input(code):
    return re.sub(r"(?ms)^[ ]*# --- input ---\n.*?^[ ]*# --- end input ---\n", "# <input>\n", code)


def test_the_pair_differs_only_in_its_input_part():
    before, after = _code("wavenet_reader_before.py"), _code("wavenet_reader_after.py")
    assert before != after and _outside_input(before) == _outside_input(after)
    assert "from_feeds" in after and "PaddingFIFOQueue" in before and "PaddingFIFOQueue" not in after


@pytest.mark.parametrize("program", ["wavenet_reader_before.py", "wavenet_reader_after.py"])
def test_the_pair_runs_and_prints_its_result(program):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "compat", program)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, describe(proc)
    assert re.search(r"^OK: 20 batches of 4 clips \[4, T, 1\] float32, each padded to its longest clip; "
                     r"\d+ frames of audio, mean energy per frame 0\.281$", proc.stdout, re.M), describe(proc)
