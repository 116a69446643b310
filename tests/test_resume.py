"""Resumable input (``resumable=True``): a restored checkpoint resumes the input exactly where its steps stopped.

Real sessions, real HDF5 files, real Savers and MonitoredTrainingSessions; the must-show test
SIGKILLs a training job three times and restarts it from its checkpoints.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from queuepipe.sources.hdf5.planning import epoch_order as block_order

from helpers import TESTS_DIR
from sample_gens import resumable_counting as _counting

tf1 = tf.compat.v1


def _h5(path, n, first=0):
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(first * 4, (first + n) * 4, dtype=np.float32).reshape(n, 4)
        f["y"] = np.arange(first, first + n, dtype=np.int64)
    return str(path)


def _consume(make, *, steps=None, restore=None, save=None, field="y", staged=False):
    """Build ``make()`` in a fresh graph, restore ``restore`` (a checkpoint prefix), take
    ``steps`` batches (all when None), save to ``save``; the row ids taken, in order."""
    with tf.Graph().as_default():
        pipe = make()
        batch = pipe.staged("/cpu:0") if staged else pipe.batch
        out = batch[field] if isinstance(batch, dict) else batch
        saver = tf1.train.Saver()
        taken = []
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            if restore:
                saver.restore(sess, restore)
            with queuepipe.running(sess):
                try:
                    while steps is None or len(taken) < steps:
                        taken.append(sess.run(out))
                except tf.errors.OutOfRangeError:
                    pass
                if save:
                    saver.save(sess, save)
    return np.concatenate(taken) if taken else np.zeros(0, np.int64)


def _hdf5_maker(files, **kw):
    options = dict(batch_size=16, batches_per_block=2, seed=5, num_epochs=3, allow_smaller_final_batch=True,
                   resumable=True)
    options.update(kw)
    return lambda: queuepipe.from_hdf5(files, {"x": "/x", "y": "/y"}, **options)


# -- HDF5: exactly once, and the interrupted run's order ---------------------------------------------

@pytest.mark.parametrize("steps", [1, 31, 32, 40, 63, 90])
def test_one_worker_resumes_in_the_exact_order_the_interrupted_run_would_have_used(tmp_path, steps):
    """500 rows, batch 16: epoch boundaries fall inside batches 31 and 62 (steps 32 and 63 take
    them); shuffled, so the order is the seed's, recomputed by the restarted worker."""
    make = _hdf5_maker(_h5(tmp_path / "d.h5", 500), shuffle=True)
    whole = _consume(make)
    before = _consume(make, steps=steps, save=str(tmp_path / "ck"))
    after = _consume(make, restore=str(tmp_path / "ck"))
    assert len(before) == min(steps * 16, 1500)
    np.testing.assert_array_equal(np.concatenate([before, after]), whole)


def _worker_of(row, epoch, n_blocks, block_rows, workers, seed, shuffle):
    """Which worker delivers selection position ``row`` in ``epoch`` (blocks dealt in turn)."""
    order = block_order(n_blocks, seed, epoch, shuffle)
    return int(np.flatnonzero(order == row // block_rows)[0]) % workers


@pytest.mark.parametrize("mode,workers,shuffle", [("thread", 3, True), ("thread", 2, False), ("process", 2, True)])
def test_several_workers_resume_every_row_once_per_epoch_each_worker_in_its_own_order(tmp_path, mode, workers,
                                                                                      shuffle):
    """512 rows in blocks of 32: every worker's share is whole batches, so no rows are merged
    across workers and each worker's order can be compared exactly.  (Rows that are merged --
    an epoch's leftovers, fewer than a batch per worker -- go with whichever worker asks
    first, in any run: the other tests check those only for exactly-once.)"""
    n = 512
    make = _hdf5_maker(_h5(tmp_path / "d.h5", n), workers=workers, mode=mode, shuffle=shuffle)
    whole = _consume(make)
    before = _consume(make, steps=45, save=str(tmp_path / "ck"))
    after = _consume(make, restore=str(tmp_path / "ck"))
    got = np.concatenate([before, after])
    assert len(got) == 3 * n
    n_blocks, block_rows = n // 32, 32
    for epoch in range(3):  # epochs in order: the k-th stretch of n rows is epoch k's rows, once each
        stretches = [seq[epoch * n:(epoch + 1) * n].tolist() for seq in (got, whole)]
        assert sorted(stretches[0]) == list(range(n))
        for w in range(workers):
            def mine(part):
                return [r for r in part if _worker_of(r, epoch, n_blocks, block_rows, workers, 5, shuffle) == w]
            assert mine(stretches[0]) == mine(stretches[1]), (epoch, w)


def test_sharded_selection_over_several_files_resumes_once_per_epoch(tmp_path):
    files = [_h5(tmp_path / "a.h5", 300), _h5(tmp_path / "b.h5", 250, first=300)]
    rows = np.flatnonzero(np.arange(550) % 3 != 1)              # a partial selection
    make = _hdf5_maker(files, rows=rows, shard=(1, 2), workers=2, shuffle=True, num_epochs=2)
    whole = _consume(make)
    before = _consume(make, steps=17, save=str(tmp_path / "ck"))
    after = _consume(make, restore=str(tmp_path / "ck"))
    got = np.concatenate([before, after])
    expected = np.sort(rows[len(rows) // 2:])
    assert len(got) == len(whole) == 2 * len(expected)
    for epoch in range(2):
        np.testing.assert_array_equal(np.sort(got[epoch * len(expected):(epoch + 1) * len(expected)]), expected)


def test_a_staged_pipeline_resumes_from_the_batches_its_steps_used(tmp_path):
    make = _hdf5_maker(_h5(tmp_path / "d.h5", 300), shuffle=True, num_epochs=2)
    whole = _consume(make, staged=True)
    before = _consume(make, steps=12, save=str(tmp_path / "ck"), staged=True)
    after = _consume(make, restore=str(tmp_path / "ck"), staged=True)
    np.testing.assert_array_equal(np.concatenate([before, after]), whole)


def test_a_restart_with_other_workers_still_delivers_each_remaining_row_once(tmp_path):
    path = _h5(tmp_path / "d.h5", 400)
    before = _consume(_hdf5_maker(path, workers=3, shuffle=True, num_epochs=1), steps=9, save=str(tmp_path / "ck"))
    after = _consume(_hdf5_maker(path, workers=1, shuffle=True, num_epochs=1), restore=str(tmp_path / "ck"))
    np.testing.assert_array_equal(np.sort(np.concatenate([before, after])), np.arange(400))


def test_the_checkpoint_holds_the_consumers_position_not_the_producers(tmp_path):
    """Workers read far ahead (the queue fills); only the dequeued rows are recorded."""
    make = _hdf5_maker(_h5(tmp_path / "d.h5", 2000), num_epochs=1, capacity=64 * 16)
    with tf.Graph().as_default():
        pipe = make()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            with queuepipe.running(sess):
                taken = [sess.run(pipe.batch["y"]) for _ in range(3)]
                deadline = time.monotonic() + 30
                while sess.run(pipe.size()) < 20 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert sess.run(pipe.size()) >= 20  # the producer is well ahead
                used, _ = sess.run(pipe.position.read_op)
    assert used[-2:].tolist() == [48, 0]  # 3 batches of epoch 0 (parity 0), none of epoch 1
    assert np.concatenate(taken).tolist() == list(range(48))


def test_position_variables_are_global_and_named_after_the_pipeline():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(_counting, tf.int64, (), batch_size=4, resumable=True, name="train")
        names = sorted(v.op.name for v in pipe.position_variables)
        assert names == ["train/position/config", "train/position/used"]
        assert set(pipe.position_variables) <= set(tf1.global_variables())
        assert not set(pipe.position_variables) & set(tf1.trainable_variables())
        assert pipe.resumable


# -- generators ------------------------------------------------------------------------------------------

def _generator_maker(**kw):
    options = dict(batch_size=16, batches_per_block=2, resumable=True, allow_smaller_final_batch=True)
    options.update(kw)
    return lambda: queuepipe.from_generator(_counting, tf.int64, (), **options)


def test_a_generator_resumes_at_its_start_argument_in_the_same_order(tmp_path):
    make = _generator_maker(num_epochs=3)
    whole = _consume(make, field=None)
    for steps in (5, 12, 13, 30):  # 200 rows an epoch: boundaries inside batches 13 and 26
        before = _consume(make, steps=steps, save=str(tmp_path / f"ck{steps}"), field=None)
        after = _consume(make, restore=str(tmp_path / f"ck{steps}"), field=None)
        np.testing.assert_array_equal(np.concatenate([before, after]), whole)


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_several_generator_workers_each_resume_their_own_stream(tmp_path, mode):
    make = _generator_maker(workers=3, mode=mode, num_epochs=1)
    before = _consume(make, steps=11, save=str(tmp_path / "ck"), field=None)
    after = _consume(make, restore=str(tmp_path / "ck"), field=None)
    got = np.concatenate([before, after])
    assert sorted(got.tolist()) == sorted(w * 100_000 + i for w in range(3) for i in range(200))


def test_generator_resumable_is_refused_where_a_position_cannot_be_kept():
    with tf.Graph().as_default():
        with pytest.raises(queuepipe.ArgumentError, match="start"):
            queuepipe.from_generator(lambda: iter(range(5)), tf.int64, (), batch_size=2, resumable=True)
        with pytest.raises(queuepipe.ArgumentError, match="shuffle=False"):
            queuepipe.from_generator(_counting, tf.int64, (), batch_size=2, shuffle=True, resumable=True)
        with pytest.raises(queuepipe.ArgumentError, match="iterator"):
            queuepipe.from_generator(iter(range(5)), tf.int64, (), batch_size=2, resumable=True)
        with pytest.raises(queuepipe.ArgumentError, match="num_epochs=3"):
            queuepipe.from_generator(_counting, tf.int64, (), batch_size=2, workers=2, num_epochs=3, resumable=True)


# -- refusals and clear errors -------------------------------------------------------------------------

def test_hdf5_resumable_refuses_overlapping_epochs(tmp_path):
    path = _h5(tmp_path / "d.h5", 50)
    with tf.Graph().as_default(), pytest.raises(queuepipe.ArgumentError, match="overlap_epochs"):
        queuepipe.from_hdf5(path, "/y", batch_size=4, resumable=True, overlap_epochs=True)


def test_a_checkpoint_of_another_selection_is_refused_naming_the_pipeline(tmp_path):
    path = _h5(tmp_path / "d.h5", 200)
    _consume(_hdf5_maker(path, name="train"), steps=2, save=str(tmp_path / "ck"))
    with pytest.raises(queuepipe.ResumeError, match="'train'.*different input"):
        _consume(_hdf5_maker(path, name="train", rows=slice(0, 100)), restore=str(tmp_path / "ck"))


def test_uninitialised_position_variables_are_a_clear_error_at_start(tmp_path):
    path = _h5(tmp_path / "d.h5", 50)
    with tf.Graph().as_default():
        queuepipe.from_hdf5(path, "/y", batch_size=4, resumable=True, name="train")
        with tf1.Session() as sess:
            with pytest.raises(queuepipe.ResumeError, match="global_variables_initializer"):
                with queuepipe.running(sess):
                    pass


def _drop_odd(block):
    keep = block["y"] % 2 == 0
    return {"x": block["x"][keep], "y": block["y"][keep]}


def test_a_map_fn_that_drops_rows_is_refused_when_resumable(tmp_path):
    path = _h5(tmp_path / "d.h5", 64)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, {"x": "/x", "y": "/y"}, batch_size=4, resumable=True, map_fn=_drop_odd,
                                   output_types={"x": tf.float32, "y": tf.int64},
                                   output_shapes={"x": (4,), "y": ()})
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            with pytest.raises(queuepipe.ArgumentError, match="map_fn must keep every row"):
                with queuepipe.running(sess):
                    sess.run(pipe.batch)


# -- the must-show: a real job, SIGKILLed three times ------------------------------------------------------

def _log_steps(path):
    """(step, row ids) of every complete line of a job's log, and whether it finished."""
    steps, done = [], False
    if not os.path.exists(path):
        return steps, done
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # killed mid-write
            if line == "done\n":
                done = True
                continue
            values = [int(v) for v in line.split()]
            steps.append((values[0], values[1:]))
    return steps, done


@pytest.mark.timeout(420)
@pytest.mark.parametrize("shuffle,mode", [(0, "thread"), (1, "thread"), (0, "process"), (1, "process")])
def test_a_killed_training_job_restarts_from_its_checkpoint_with_every_row_once_per_epoch(tmp_path, shuffle,
                                                                                          mode):
    n, save_every = 620, 5  # batch 16 (resume_train.py): 77 full batches and a short one
    data = _h5(tmp_path / "d.h5", n)
    checkpoints = str(tmp_path / "checkpoints")
    rng = random.Random(shuffle * 10 + len(mode))
    runs = []
    for attempt in range(4):  # killed three times, then runs to the end
        log = str(tmp_path / f"log{attempt}")
        proc = subprocess.Popen([sys.executable, os.path.join(TESTS_DIR, "resume_train.py"), data, checkpoints, log,
                                 str(shuffle), mode, "2", str(save_every), "0.03"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            if attempt < 3:
                first = None
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and proc.poll() is None:
                    steps, _ = _log_steps(log)
                    if steps and first is None:
                        first = steps[0][0]
                        target = first + save_every + rng.randrange(1, save_every)  # between checkpoints
                    if first is not None and steps[-1][0] >= target:
                        proc.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.01)
            out, _ = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        steps, done = _log_steps(log)
        assert steps, out.decode(errors="replace")[-3000:]
        if attempt < 3:
            assert proc.returncode == -signal.SIGKILL and not done, out.decode(errors="replace")[-3000:]
        else:
            assert proc.returncode == 0 and done, out.decode(errors="replace")[-3000:]
        runs.append(steps)

    # each restart's first step follows the checkpoint it restored: keep the killed run's steps up to it
    kept, lost = [], 0
    for steps, following in zip(runs, runs[1:] + [None]):
        restored = following[0][0] - 1 if following is not None else None
        if following is not None:
            assert restored >= steps[0][0] - 1, "a restart went back before the run it follows"
            assert steps[-1][0] >= restored
            lost += steps[-1][0] - restored  # steps after the checkpoint: their rows come again
        kept += [ids for step, ids in steps if restored is None or step <= restored]
    assert lost > 0, "no kill fell between checkpoints: nothing was delivered twice, nothing tested"
    delivered = np.concatenate([np.asarray(ids, np.int64) for ids in kept])
    assert len(delivered) == 2 * n
    for epoch in range(2):  # every row once per epoch, epochs in order
        np.testing.assert_array_equal(np.sort(delivered[epoch * n:(epoch + 1) * n]), np.arange(n))
