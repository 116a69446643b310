"""``Pipeline.dequeue()``: a fresh gated batch per call, one per tower of a multi-tower model.

Real sessions, threads and processes.  Each tower's dequeue is a consumer of the pipeline's
queue like ``pipe.batch``: batches exactly once across towers, end of data and a worker's error
in every tower, and -- for a resumable pipeline -- every tower's rows in the checkpoint.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, Timer, mode  # noqa: F401
from sample_gens import FailingGen, MyDataError, ShardedRange
from sample_gens import resumable_counting

tf1 = tf.compat.v1
TOWERS = 2


def build_towers(pipe, towers=TOWERS):
    """One ``pipe.dequeue()`` per tower, each under its own device and name scope, as
    multi-tower code builds them."""
    out = []
    for i in range(towers):
        with tf.device("/cpu:0"), tf1.name_scope(f"tower_{i}"):
            out.append(pipe.dequeue())
    return out


def run_steps(sess, towers, steps=None):
    """Run all towers together per step, until OutOfRangeError or ``steps``; the per-step batches."""
    taken = []
    try:
        while steps is None or len(taken) < steps:
            taken.append(sess.run(towers))
    except tf.errors.OutOfRangeError:
        pass
    return taken


def test_two_towers_take_distinct_batches_exactly_once_and_both_end_with_out_of_range(mode):
    n = 96
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(n), tf.int64, (), batch_size=4, workers=2, mode=mode)
        towers = build_towers(pipe)
        assert all(t.shape.as_list() == [4] for t in towers)
        assert len({t.name for t in towers} | {pipe.batch.name}) == TOWERS + 1, "a new dequeue per call"
        with tf1.Session() as sess, queuepipe.running(sess):
            steps = run_steps(sess, towers)
            for tower in towers:  # each tower alone: the end of data, never a hang
                with Timer() as t, pytest.raises(tf.errors.OutOfRangeError):
                    sess.run(tower)
                assert t.elapsed < PROMPT_S
    assert len(steps) == n // (4 * TOWERS)
    for a, b in steps:
        assert not set(a.tolist()) & set(b.tolist()), "two towers of one step got the same rows"
    got = [v for step in steps for batch in step for v in batch.tolist()]
    assert sorted(got) == list(range(n)), "every row exactly once across the towers"


def test_a_step_whose_towers_cannot_all_get_a_batch_raises_out_of_range():
    with tf.Graph().as_default():  # 5 batches: two full steps, then one tower would be short
        pipe = queuepipe.from_generator(ShardedRange(20), tf.int64, (), batch_size=4, workers=1)
        towers = build_towers(pipe)
        with tf1.Session() as sess, queuepipe.running(sess):
            steps = run_steps(sess, towers)
            for tower in towers:
                with pytest.raises(tf.errors.OutOfRangeError):
                    sess.run(tower)
    assert len(steps) == 2
    assert sorted(v for step in steps for b in step for v in b.tolist()) == list(range(16))


def test_pipe_batch_and_towers_share_the_queue_exactly_once():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(48), tf.int64, (), batch_size=4, workers=2)
        towers = build_towers(pipe)
        with tf1.Session() as sess, queuepipe.running(sess):
            steps = run_steps(sess, [pipe.batch] + towers)
    got = [v for step in steps for b in step for v in b.tolist()]
    assert len(steps) == 4 and sorted(got) == list(range(48))


def test_a_worker_error_raises_in_every_tower_with_its_type_and_text(mode):
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(FailingGen(400, 9, MyDataError, "sample 9 is bad"), tf.int64, (),
                                        batch_size=4, workers=2, mode=mode)
        towers = build_towers(pipe)
        messages = []
        with tf1.Session() as sess:
            with Timer() as t, pytest.raises(MyDataError, match="sample 9 is bad"):
                with queuepipe.running(sess):
                    with pytest.raises(tf.errors.OpError) as together:
                        run_steps(sess, towers)
                    assert not isinstance(together.value, tf.errors.OutOfRangeError), "reported as end of data"
                    messages.append(together.value.message)
                    for tower in towers:  # after a failure every tower sees only the failure
                        with pytest.raises(tf.errors.OpError) as alone:
                            sess.run(tower)
                        assert not isinstance(alone.value, tf.errors.OutOfRangeError)
                        messages.append(alone.value.message)
            assert t.elapsed < PROMPT_S
    assert len(messages) == TOWERS + 1
    for message in messages:
        assert "MyDataError" in message and "sample 9 is bad" in message


def test_tower_input_is_colocated_with_the_queue_and_outputs_follow_the_tower_device():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(8), (tf.int64, tf.string), ((), ()), batch_size=4)
        with tf.device("/device:GPU:1"):
            ids, names = pipe.dequeue(name="tower_1")
        assert ids.device == "/device:GPU:1", "the batch follows the tower's device (the step copies it)"
        dequeue = ids.op.inputs[0].op
        assert dequeue.type == "QueueDequeueV2" and dequeue.name == "queuepipe/tower_1/batch"
        queue_group = f"loc:@{pipe.queue.queue_ref.op.name}".encode()
        gate = [op for op in tf1.get_default_graph().get_operations()
                if op.name.startswith("queuepipe/tower_1/") and op.type in ("PyFunc", "PyFuncStateless")]
        assert gate, "the error gate's py_func is part of the tower's dequeue"
        for op in [dequeue] + gate:  # on the queue's host, not the tower's GPU
            assert op.device == pipe.queue.queue_ref.device and "GPU" not in op.device, (op.name, op.device)
            assert queue_group in op.colocation_groups(), op.name


def test_staged_and_dequeue_refuse_each_other():
    with tf.Graph().as_default():
        staged = queuepipe.from_generator(ShardedRange(8), tf.int64, (), batch_size=4, name="staged")
        staged.staged("/cpu:0")
        with pytest.raises(queuepipe.ArgumentError, match="'staged' is staged"):
            staged.dequeue()
        towers = queuepipe.from_generator(ShardedRange(8), tf.int64, (), batch_size=4, name="towers")
        towers.dequeue()
        with pytest.raises(queuepipe.ArgumentError, match="dequeue\\(\\) batch"):
            towers.staged("/cpu:0")
    with tf.Graph().as_default():
        with pytest.raises(queuepipe.ArgumentError, match="default graph is not the pipeline's"):
            towers.dequeue()


# -- resumable: every tower's batch is in the checkpoint ----------------------------------------------

def _generator_pipeline():
    return queuepipe.from_generator(resumable_counting, tf.int64, (), batch_size=8, workers=2, num_epochs=1,
                                    resumable=True, name="gen")


def _hdf5_pipeline(path):
    return lambda: queuepipe.from_hdf5(path, "y", batch_size=8, shuffle=True, seed=3, num_epochs=2,
                                       resumable=True, name="h5")


def _consume_towers(make, *, steps=None, more=0, restore=None, save=None):
    """Two towers over ``make()`` in a fresh graph: restore ``restore``, run ``steps`` steps (all when
    None), save to ``save``, then ``more`` steps the checkpoint does not hold (lost at a crash).
    Returns the rows of the steps before the save."""
    with tf.Graph().as_default():
        pipe = make()
        towers = build_towers(pipe)
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            if restore:
                saver.restore(sess, restore)
            with queuepipe.running(sess):
                kept = run_steps(sess, towers, steps)
                if save:
                    saver.save(sess, save)
                run_steps(sess, towers, more)
    return [v for step in kept for b in step for v in b.tolist()]


@pytest.mark.parametrize("source", ["generator", "hdf5"])
def test_a_restored_checkpoint_resumes_two_towers_exactly_once(tmp_path, source):
    if source == "generator":
        make = _generator_pipeline
        expected = sorted(w * 100_000 + i for w in range(2) for i in range(200))
    else:
        path = str(tmp_path / "d.h5")
        with h5py.File(path, "w") as f:
            f["y"] = np.arange(160, dtype=np.int64)
        make = _hdf5_pipeline(path)
        expected = sorted(list(range(160)) * 2)
    before = _consume_towers(make, steps=7, more=3, save=str(tmp_path / "ck"))
    assert len(before) == 7 * TOWERS * 8
    after = _consume_towers(make, restore=str(tmp_path / "ck"))
    assert sorted(before + after) == expected, "every row once: each tower's rows were recorded"
