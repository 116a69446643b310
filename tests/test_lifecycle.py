"""Lifecycle: queue runners, coordinators, monitored sessions, Supervisor, stopping without hangs or leaks.

The autouse ``no_leaks`` fixture (tests/conftest.py) fails any test that leaves a
queuepipe thread behind; these tests also assert that stopping is prompt.
"""
from __future__ import annotations

import threading
import time

import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, Timer, closed_markers, describe, drain, mode, rows, run_python  # noqa: F401
from sample_gens import FailingGen, InfiniteCounter, MyDataError, ShardedRange, WaitForFile

tf1 = tf.compat.v1


def alive(threads):
    return [t.name for t in threads if t.is_alive()]


def join_all(threads, timeout=PROMPT_S):
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return alive(threads)


def infinite_pipeline(mode, tmp_path, workers=2, batch_size=4, **kwargs):
    marker = str(tmp_path / "closed")
    p = queuepipe.from_generator(InfiniteCounter(marker), (tf.int64, tf.int64), ((), ()), batch_size=batch_size,
                                 workers=workers, mode=mode, **kwargs)
    return p, marker


def run_until_every_worker_seen(sess, p, workers):
    """Run batches until every worker has contributed (so every generator has started)."""
    seen = set()
    deadline = time.monotonic() + PROMPT_S
    while len(seen) < workers and time.monotonic() < deadline:
        idx, _ = sess.run(p.batch)
        seen.update(idx.tolist())
    assert seen == set(range(workers))


# ---------------------------------------------------------------------------------------
# integration with TF1's queue-runner machinery
# ---------------------------------------------------------------------------------------

def test_runner_is_a_queue_runner_in_the_graph_collection(mode):
    with tf.Graph().as_default() as g:
        p = queuepipe.from_generator(ShardedRange(10), tf.int64, (), batch_size=2, workers=3, mode=mode)
        runners = g.get_collection(tf1.GraphKeys.QUEUE_RUNNERS)
        assert p.runner in runners
        assert isinstance(p.runner, tf1.train.QueueRunner)
        assert len(p.runner.enqueue_ops) == 3
        assert p.workers == 3 and p.mode == mode
    assert not [t.name for t in threading.enumerate() if t.name.startswith("queuepipe")], \
        "building a pipeline must not start threads"


@pytest.mark.parametrize("workers", [1, 3])
def test_start_queue_runners_with_coordinator(mode, workers):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(200), tf.int64, (), batch_size=8, workers=workers, mode=mode,
                                     allow_smaller_final_batch=True)
        with tf1.Session() as sess:
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            assert any(t.name.startswith("queuepipe") for t in threads)
            got = rows(drain(sess, p.batch))
            with Timer() as t:
                coord.request_stop()
                coord.join(threads, stop_grace_period_secs=10)
            assert t.elapsed < PROMPT_S
            assert alive(threads) == []
    assert sorted(got) == list(range(200))


def test_start_queue_runners_without_coordinator(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(100), tf.int64, (), batch_size=10, workers=2, mode=mode)
        with tf1.Session() as sess:
            threads = tf1.train.start_queue_runners(sess=sess)
            got = rows(drain(sess, p.batch))
            assert join_all(threads) == [], "runner threads did not finish after the end of data"
    assert sorted(got) == list(range(100))


@pytest.mark.parametrize("workers", [1, 3])
def test_monitored_training_session_loop_ends_at_end_of_data(mode, workers):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(101), tf.int64, (), batch_size=4, workers=workers, mode=mode,
                                     allow_smaller_final_batch=True)
        got = []
        with Timer() as t:
            with tf1.train.MonitoredTrainingSession() as sess:
                while not sess.should_stop():
                    got.extend(sess.run(p.batch).tolist())
        assert t.elapsed < PROMPT_S
    assert sorted(got) == list(range(101))


def test_singular_monitored_session(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(60), tf.int64, (), batch_size=6, workers=2, mode=mode)
        got = []
        with tf1.train.SingularMonitoredSession() as sess:
            while not sess.should_stop():
                got.extend(sess.run(p.batch).tolist())
    assert sorted(got) == list(range(60))


def test_supervisor_managed_session(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(50), tf.int64, (), batch_size=5, workers=2, mode=mode)
        sv = tf1.train.Supervisor(logdir=None)
        got = []
        with Timer() as t:
            with sv.managed_session() as sess:
                while not sv.should_stop():
                    got.extend(sess.run(p.batch).tolist())
        assert t.elapsed < PROMPT_S
    assert sorted(got) == list(range(50))


def test_monitored_session_does_not_mistake_a_failure_for_the_end(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(FailingGen(100, 30, MyDataError, "monitored boom"), tf.int64, (),
                                     batch_size=4, mode=mode)
        got = []
        with pytest.raises(tf.errors.OpError, match="monitored boom") as raised:
            with tf1.train.MonitoredTrainingSession() as sess:
                while not sess.should_stop():
                    got.extend(sess.run(p.batch).tolist())
        assert not isinstance(raised.value, tf.errors.OutOfRangeError)
    assert len(got) <= 30


def test_two_pipelines_in_one_graph(mode):
    with tf.Graph().as_default():
        a = queuepipe.from_generator(ShardedRange(40), tf.int64, (), batch_size=4, workers=2, mode=mode)
        b = queuepipe.from_generator(ShardedRange(30), tf.int64, (), batch_size=3, workers=1, mode=mode)
        with tf1.Session() as sess, queuepipe.running(sess):
            got_a = rows(drain(sess, a.batch))
            got_b = rows(drain(sess, b.batch))
    assert sorted(got_a) == list(range(40)) and sorted(got_b) == list(range(30))


# ---------------------------------------------------------------------------------------
# queuepipe.running
# ---------------------------------------------------------------------------------------

def test_running_yields_a_coordinator_and_stops_an_infinite_generator(mode, tmp_path):
    with tf.Graph().as_default():
        p, marker = infinite_pipeline(mode, tmp_path, workers=2)
        with tf1.Session() as sess:
            with Timer() as t:
                with queuepipe.running(sess) as coord:
                    assert isinstance(coord, tf1.train.Coordinator)
                    run_until_every_worker_seen(sess, p, 2)
                    inner = time.monotonic()
            exit_s = time.monotonic() - inner
            assert exit_s < PROMPT_S, f"running() took {exit_s:.1f}s to stop"
            assert coord.should_stop()
            assert not p.runtime.active, "workers still active after running() exited"
    assert closed_markers(marker) == ["closed.0", "closed.1"], "generators were not closed on exit"
    assert t.elapsed < 2 * PROMPT_S


def test_running_exit_with_full_queue_and_slow_generator(mode, tmp_path):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(InfiniteCounter(str(tmp_path / "closed"), delay=0.05),
                                     (tf.int64, tf.int64), ((), ()), batch_size=2, workers=2, mode=mode,
                                     capacity=2)
        with tf1.Session() as sess:
            with queuepipe.running(sess):
                sess.run(p.batch)
                inner = time.monotonic()
            assert time.monotonic() - inner < PROMPT_S


def test_running_started_and_stopped_at_once(mode, tmp_path):
    # start/stop races: stop before the workers have produced anything, or right after the first batch
    with tf.Graph().as_default():
        p, _ = infinite_pipeline(mode, tmp_path, workers=3, batch_size=2)
        for take_one in [False, True, False, True]:
            with tf1.Session() as sess:
                with Timer() as t:
                    with queuepipe.running(sess):
                        if take_one:
                            sess.run(p.batch)
                assert t.elapsed < PROMPT_S
                assert not p.runtime.active


@pytest.mark.parametrize("exc_type", [MyDataError, KeyboardInterrupt])
def test_exception_in_user_code_inside_running(mode, tmp_path, exc_type):
    with tf.Graph().as_default():
        p, marker = infinite_pipeline(mode, tmp_path, workers=2)
        with Timer() as t:
            with pytest.raises(exc_type, match="user code"):
                with tf1.Session() as sess, queuepipe.running(sess):
                    run_until_every_worker_seen(sess, p, 2)
                    raise exc_type("user code failed")
        assert t.elapsed < PROMPT_S
    assert closed_markers(marker) == ["closed.0", "closed.1"]


def test_running_with_a_caller_coordinator(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(30), tf.int64, (), batch_size=5, workers=2, mode=mode)
        coord = tf1.train.Coordinator()
        with tf1.Session() as sess:
            with queuepipe.running(sess, coord=coord) as yielded:
                assert yielded is coord
                got = rows(drain(sess, p.batch))
        assert coord.should_stop()
    assert sorted(got) == list(range(30))


def test_end_of_data_inside_running(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(20), tf.int64, (), batch_size=5, workers=2, mode=mode)
        with tf1.Session() as sess:
            with queuepipe.running(sess):  # a caught end of data: running() exits quietly
                assert sorted(rows(drain(sess, p.batch))) == list(range(20))
                with pytest.raises(tf.errors.OutOfRangeError):
                    sess.run(p.batch)
        with tf1.Session() as sess:
            got = []
            with pytest.raises(tf.errors.OutOfRangeError):  # an uncaught one reaches the caller unchanged
                with queuepipe.running(sess):
                    while True:
                        got.extend(sess.run(p.batch).tolist())
            assert sorted(got) == list(range(20))


def test_request_stop_while_queue_is_full(mode, tmp_path):
    with tf.Graph().as_default():
        p, marker = infinite_pipeline(mode, tmp_path, workers=2, batch_size=4, capacity=4)
        with tf1.Session() as sess:
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            sess.run(p.batch)  # slow consumer: take one batch, then let the queue fill up
            deadline = time.monotonic() + PROMPT_S
            while sess.run(p.size()) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            assert sess.run(p.size()) == 1, "queue (capacity one batch) did not fill"
            with Timer() as t:
                coord.request_stop()
                coord.join(threads, stop_grace_period_secs=10)
            assert t.elapsed < PROMPT_S
            assert alive(threads) == []
    assert closed_markers(marker) == ["closed.0", "closed.1"]


def test_close_session_mid_epoch_without_coordinator(mode, tmp_path):
    with tf.Graph().as_default() as g:
        p, marker = infinite_pipeline(mode, tmp_path, workers=2, capacity=8)
        sess = tf1.Session(graph=g)
        threads = tf1.train.start_queue_runners(sess=sess)
        run_until_every_worker_seen(sess, p, 2)
        with Timer() as t:
            sess.close()
            left = join_all(threads)
        assert left == [], f"threads still running {t.elapsed:.1f}s after the session closed: {left}"
    assert closed_markers(marker) == ["closed.0", "closed.1"]


def test_close_session_mid_epoch_with_coordinator(mode, tmp_path):
    with tf.Graph().as_default():
        p, marker = infinite_pipeline(mode, tmp_path, workers=2, capacity=8)
        coord = tf1.train.Coordinator()
        with tf1.Session() as sess:
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            run_until_every_worker_seen(sess, p, 2)
        # the session closed while the runners were going; stopping must still be prompt
        with Timer() as t:
            coord.request_stop()
            try:
                coord.join(threads, stop_grace_period_secs=10)
            except (RuntimeError, tf.errors.OpError):
                pass  # the enqueue threads may report the closed session; what matters is that they end
            left = join_all(threads)
        assert left == [] and t.elapsed < PROMPT_S
    assert closed_markers(marker) == ["closed.0", "closed.1"]


def test_runners_started_twice_for_one_session_do_not_duplicate(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(60), tf.int64, (), batch_size=6, workers=2, mode=mode)
        with tf1.Session() as sess:
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            again = tf1.train.start_queue_runners(sess=sess, coord=coord)  # e.g. a hook and user code
            got = rows(drain(sess, p.batch))
            coord.request_stop()
            coord.join(threads + again, stop_grace_period_secs=10)
    assert sorted(got) == list(range(60))


# ---------------------------------------------------------------------------------------
# interpreter exit with runners still going
# ---------------------------------------------------------------------------------------

EXIT_SCRIPT = r"""
import sys, time
import tensorflow as tf
import queuepipe
from sample_gens import InfiniteCounter
tf1 = tf.compat.v1
mode, variant = sys.argv[1], sys.argv[2]
delay = 0.5 if variant == "slow_generator" else 0.0
with tf.Graph().as_default():
    p = queuepipe.from_generator(InfiniteCounter(delay=delay), (tf.int64, tf.int64), ((), ()), batch_size=4,
                                 workers=2, mode=mode, num_epochs=None, capacity=8)
    sess = tf1.Session()
    coord = tf1.train.Coordinator() if variant == "coordinator" else None
    tf1.train.start_queue_runners(sess=sess, coord=coord)
    sess.run(p.batch)
    print("consumed", flush=True)
    print("exiting at", time.time(), flush=True)
# no request_stop, no close: the interpreter just exits
"""


@pytest.mark.parametrize("variant", ["plain", "coordinator", "slow_generator"])
def test_interpreter_exits_with_runners_still_going(mode, variant):
    proc = run_python(EXIT_SCRIPT, mode, variant, timeout=120)
    ended = time.time()
    assert proc.returncode == 0, describe(proc)
    assert "consumed" in proc.stdout, describe(proc)
    began = float(proc.stdout.split("exiting at", 1)[1].split()[0])
    assert ended - began < 30, f"the interpreter took {ended - began:.1f}s to exit"


CTRL_C_SCRIPT = r"""
import os, signal, sys, threading, time
import tensorflow as tf
import queuepipe
from sample_gens import InfiniteCounter
tf1 = tf.compat.v1
mode = sys.argv[1]
with tf.Graph().as_default():
    p = queuepipe.from_generator(InfiniteCounter(delay=0.01), (tf.int64, tf.int64), ((), ()), batch_size=2,
                                 workers=2, mode=mode, capacity=4)
    with tf1.Session() as sess:
        try:
            with queuepipe.running(sess):
                sess.run(p.batch)
                threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # a training loop, interrupted by Ctrl-C
                    sess.run(p.batch)
                print("not interrupted", flush=True)
        except KeyboardInterrupt:
            print("interrupted at", time.time(), flush=True)
        left = [t.name for t in threading.enumerate() if t.name.startswith("queuepipe")]
        print("left:", left, flush=True)
"""


def test_ctrl_c_in_a_training_loop(mode):
    proc = run_python(CTRL_C_SCRIPT, mode, timeout=120)
    ended = time.time()
    assert proc.returncode == 0, describe(proc)
    assert "interrupted at" in proc.stdout and "left: []" in proc.stdout, describe(proc)
    began = float(proc.stdout.split("interrupted at", 1)[1].split()[0])
    assert ended - began < 30, f"the interpreter took {ended - began:.1f}s to exit after Ctrl-C"


def test_workers_waiting_for_data_leave_tensorflows_threads_to_the_training_step(mode, tmp_path):
    """Workers wait for their next block in the queue runners' own Python threads, not inside
    the enqueue op: there they would hold TensorFlow's inter-op threads (here 2, one per
    worker) and every other op of the session -- the training step -- would wait with them."""
    gate = tmp_path / "gate"
    opened_by_timer = threading.Event()

    def open_gate():  # only if the step below is starved: then the test fails instead of hanging
        opened_by_timer.set()
        gate.touch()

    config = tf1.ConfigProto(inter_op_parallelism_threads=2)
    with tf.Graph().as_default():
        p = queuepipe.from_generator(WaitForFile(str(gate), 8), tf.int64, (), batch_size=4, workers=2,
                                     mode=mode, allow_smaller_final_batch=True)
        x = tf1.placeholder(tf.float32, [])
        step = x * 2.0
        timer = threading.Timer(PROMPT_S, open_gate)
        with tf1.Session(config=config) as sess, queuepipe.running(sess):
            deadline = time.monotonic() + PROMPT_S
            while not all((tmp_path / f"gate.waiting-{i}").exists() for i in range(2)):
                assert time.monotonic() < deadline, "the workers never started"
                time.sleep(0.01)
            time.sleep(0.2)  # let the enqueue threads reach their wait
            timer.start()
            try:
                assert sess.run(step, {x: 1.5}) == 3.0
                assert not opened_by_timer.is_set(), "the step waited for the workers' data"
            finally:
                timer.cancel()
            gate.touch()
            got = [v for b in drain(sess, p.batch) for v in b.tolist()]
    assert sorted(got) == sorted(list(range(8)) * 2)
