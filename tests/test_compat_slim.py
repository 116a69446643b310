"""``queuepipe.compat.slim.prefetch_queue``: slim's multi-tower prefetch queue over a queuepipe batch.

Programs written as slim programs are: tensors computed from the batch (one-hot labels) go
into ``prefetch_queue``, each tower calls ``batch_queue.dequeue()``, ``start_queue_runners``
and a Coordinator drive it.  What a plain TF1 queue behind queuepipe got wrong -- a worker's
error turned into ``OutOfRangeError`` under a Coordinator, a hang without one -- must not
happen.  Also the before/after pair ``compat/slim_prefetch_*.py``, run as programs.
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
from helpers import PROMPT_S, Timer, describe, drain, mode  # noqa: F401
from queuepipe.compat import slim
from queuepipe.compat.slim.prefetch_queue import PrefetchQueue, prefetch_queue
from sample_gens import FailingGen, InfiniteCounter, MyDataError, ShardedRange, TupleSamples

tf1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOWERS = 2


def slim_towers(pipe, **kwargs):
    """What slim programs build: labels one-hot encoded before the prefetch queue, one dequeue
    per tower."""
    ids = pipe.batch
    labels = tf.one_hot(ids % 3, 3)
    batch_queue = slim.prefetch_queue.prefetch_queue([ids, labels], capacity=2 * TOWERS, **kwargs)
    towers = []
    for i in range(TOWERS):
        with tf.device("/cpu:0"), tf1.name_scope(f"tower_{i}"):
            towers.append(batch_queue.dequeue())
    return batch_queue, towers


def test_two_towers_exactly_once_and_a_coordinator_stops_at_the_end_of_data(mode):
    n = 96
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(n), tf.int64, (), batch_size=4, workers=2, mode=mode)
        batch_queue, towers = slim_towers(pipe)
        assert isinstance(batch_queue, PrefetchQueue) and batch_queue.pipeline is pipe
        steps, out_of_range = [], False
        coord = tf1.train.Coordinator()
        with tf1.Session() as sess, Timer() as t:
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            try:
                while not coord.should_stop():
                    steps.append(sess.run(towers))
            except tf.errors.OutOfRangeError:
                out_of_range = True
                coord.request_stop()
            assert coord.should_stop()
            coord.join(threads)  # raises nothing: the end of data is no error
        assert t.elapsed < PROMPT_S
    assert out_of_range, "the end of data reaches the towers as OutOfRangeError"
    got = []
    for (ids_a, labels_a), (ids_b, labels_b) in steps:
        assert not set(ids_a.tolist()) & set(ids_b.tolist()), "two towers of one step got the same batch"
        for ids, labels in ((ids_a, labels_a), (ids_b, labels_b)):
            np.testing.assert_array_equal(labels.argmax(axis=1), ids % 3)  # computed on the tower's own batch
            got.extend(ids.tolist())
    assert len(steps) == n // (4 * TOWERS) and sorted(got) == list(range(n)), "exactly once across towers"


def test_coordinator_stop_on_exception_treats_the_end_of_data_as_a_normal_stop():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(40), tf.int64, (), batch_size=4, workers=2)
        _, towers = slim_towers(pipe)
        coord = tf1.train.Coordinator()
        steps = 0
        with tf1.Session() as sess:
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            with coord.stop_on_exception():
                while not coord.should_stop():
                    sess.run(towers)
                    steps += 1
            assert coord.should_stop()
            coord.join(threads)
    assert steps == 40 // (4 * TOWERS)


@pytest.mark.parametrize("with_coordinator", [True, False], ids=["coordinator", "no_coordinator"])
def test_a_worker_error_keeps_its_type_in_every_tower_never_out_of_range_never_a_hang(mode, with_coordinator):
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(FailingGen(400, 9, MyDataError, "sample 9 is bad"), tf.int64, (),
                                        batch_size=4, workers=2, mode=mode)
        _, towers = slim_towers(pipe)
        coord = tf1.train.Coordinator() if with_coordinator else None
        errors = []
        with tf1.Session() as sess, Timer() as t:
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            try:
                while coord is None or not coord.should_stop():
                    sess.run(towers)
            except tf.errors.OpError as e:
                errors.append(e)
            for tower in towers:  # and every tower again, alone
                with pytest.raises(tf.errors.OpError) as alone:
                    sess.run(tower)
                errors.append(alone.value)
            if coord is not None:
                coord.request_stop()
                coord.join(threads)
        assert t.elapsed < PROMPT_S, "the error surfaced late"
    assert len(errors) == 1 + TOWERS, "the loop ended without an error"
    for e in errors:
        assert not isinstance(e, tf.errors.OutOfRangeError), "a worker's error reported as the end of data"
        assert "MyDataError" in e.message and "sample 9 is bad" in e.message
    assert isinstance(pipe.failure.to_raise(), MyDataError)


def test_running_re_raises_the_workers_exception_through_the_towers():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(FailingGen(400, 5, MyDataError, "bad five"), tf.int64, (), batch_size=4)
        _, towers = slim_towers(pipe)
        with tf1.Session() as sess:
            with pytest.raises(MyDataError, match="bad five"), queuepipe.running(sess):
                while True:
                    sess.run(towers)


def test_dict_single_and_attributes_behave_as_slims_queue():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(TupleSamples(64), (tf.int32, tf.float32, tf.string), ((), (3,), ()),
                                        batch_size=4, name="train")
        ids, _, names = pipe.batch
        tf1.set_random_seed(1)
        noisy = tf.cast(ids, tf.float32) + tf1.random_uniform([4])
        by_name = prefetch_queue({"ids": ids, "noisy": noisy, "names": names}, name="batch_queue")
        assert by_name.names == ["ids", "names", "noisy"] and by_name.dtypes == [tf.int32, tf.string, tf.float32]
        assert by_name.shapes[0].as_list() == [4] and by_name.name == pipe.queue.name
        assert by_name.size() is pipe.size()
        first, second = by_name.dequeue(), by_name.dequeue()
        assert set(first) == {"ids", "noisy", "names"}
        one = prefetch_queue([ids]).dequeue()
        assert isinstance(one, tf.Tensor) and one.shape.as_list() == [4], "one component, one tensor (as TF queues)"
        with tf1.Session() as sess, queuepipe.running(sess):
            a, b, c, size = sess.run([first, second, one, by_name.size()])
        got = a["ids"].tolist() + b["ids"].tolist() + c.tolist()
        assert len(set(got)) == 12, "three dequeues, three distinct batches"
        assert a["names"].dtype == object and 0 <= size <= pipe.capacity_batches
        noise_a, noise_b = a["noisy"] - a["ids"], b["noisy"] - b["ids"]
        assert ((noise_a >= 0) & (noise_a < 1)).all() and not np.allclose(noise_a, noise_b), \
            "a seeded random op copied per tower draws its own numbers"
        with pytest.raises(queuepipe.ArgumentError, match="already a batch"):
            by_name.dequeue_many(2)
        with pytest.raises(queuepipe.ArgumentError, match="workers fill"):
            by_name.enqueue([ids])


def test_close_with_cancel_delivers_the_waiting_batches_then_out_of_range_and_never_hangs():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=4,
                                        workers=2, capacity=16)
        batch_queue = prefetch_queue(list(pipe.batch))
        tower = batch_queue.dequeue()
        close, closed = batch_queue.close(cancel_pending_enqueues=True), batch_queue.is_closed()
        with pytest.raises(queuepipe.ArgumentError, match="pending enqueues"):
            batch_queue.close()
        with tf1.Session() as sess, queuepipe.running(sess), Timer() as t:
            sess.run(tower)
            assert not sess.run(closed)
            sess.run(close)
            rest = drain(sess, tower)
            assert sess.run(closed)
        assert t.elapsed < PROMPT_S
    assert 0 <= len(rest) <= pipe.capacity_batches, "the batches in the queue, then OutOfRangeError"


def test_tensors_not_from_a_queuepipe_batch_are_refused_naming_them():
    with tf.Graph().as_default():
        plain = tf1.FIFOQueue(4, [tf.int64], shapes=[[4]])
        with pytest.raises(queuepipe.ArgumentError, match=r"tensors\[0\] is read from TF queue .*hide worker errors"):
            prefetch_queue([plain.dequeue()])
        with pytest.raises(queuepipe.ArgumentError, match=r"tensors\[0\] .* not computed from a queuepipe batch"):
            prefetch_queue([tf.constant([1, 2])])
        pipe = queuepipe.from_generator(ShardedRange(8), tf.int64, (), batch_size=4, name="p")
        with pytest.raises(queuepipe.ArgumentError, match="TF queue"):  # mixed with a plain queue
            prefetch_queue({"a": pipe.batch, "b": plain.dequeue()})
        with pytest.raises(queuepipe.ArgumentError, match="different batches"):
            prefetch_queue([pipe.batch, pipe.dequeue()])
        with pytest.raises(queuepipe.ArgumentError, match="shared_name"):
            prefetch_queue([pipe.batch], shared_name="q")
        with pytest.raises(queuepipe.ArgumentError, match="capacity"):
            prefetch_queue([pipe.batch], capacity=0)
        with pytest.raises(queuepipe.ArgumentTypeError, match=r"tensors\[0\] is a ndarray"):
            prefetch_queue([np.zeros(3)])
        other = queuepipe.from_generator(ShardedRange(8), tf.int64, (), batch_size=4, name="other")
        with pytest.raises(queuepipe.ArgumentError, match="several pipelines"):
            prefetch_queue([pipe.batch, other.batch])
        staged = queuepipe.from_generator(ShardedRange(8), tf.int64, (), batch_size=4, name="s")
        with pytest.raises(queuepipe.ArgumentError, match="staged"):
            prefetch_queue([staged.staged("/cpu:0")])


# -- the before/after pair, run as programs ---------------------------------------------------------

def _code(name):
    with open(os.path.join(REPO, "compat", name)) as f:
        text = f.read()
    return text.split('"""', 2)[2]  # the code, after the module docstring


def _outside_input(code):
    return re.sub(r"(?ms)^[ ]*# --- input ---\n.*?^[ ]*# --- end input ---\n", "# <input>\n", code)


def test_the_pair_differs_only_in_its_input_part():
    before, after = _code("slim_prefetch_before.py"), _code("slim_prefetch_after.py")
    assert before != after and _outside_input(before) == _outside_input(after)
    assert "queuepipe" not in _outside_input(after)


@pytest.mark.parametrize("program", ["slim_prefetch_before.py", "slim_prefetch_after.py"])
def test_the_pair_runs_and_prints_its_result(program):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "compat", program)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, describe(proc)
    assert re.search(r"^OK: 2 towers, 24 steps, each of 512 samples seen once per epoch for 3 epochs, "
                     r"last-epoch accuracy above 0\.9$", proc.stdout, re.M), describe(proc)
