"""Interrupts and exits: Ctrl-C while ``sess.run`` waits for a stuck worker, a coordinator stopped
from another thread, a session closed under a coordinator never stopped, interpreter exit while
workers read HDF5, and descriptors a worker process must not pass on.

Everything is real: TF sessions, threads, worker processes, signals.  Programs that must be
interrupted or must exit run in a fresh interpreter (``run_python``) under a timeout, so a
hang fails the test instead of hanging it.
"""
from __future__ import annotations

import concurrent.futures
import gc
import os
import subprocess
import threading
import time
import weakref

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, describe, mode, run_python  # noqa: F401
from sample_gens import InfiniteCounter, WaitForFile

tf1 = tf.compat.v1


def _threads_left():
    return [t.name for t in threading.enumerate()
            if t.name.startswith("queuepipe") or "close_on_stop" in t.name]


def _value_after(stdout: str, key: str) -> str:
    for line in stdout.splitlines():
        if line.startswith(key + " "):
            return line[len(key) + 1:]
    raise AssertionError(f"no {key!r} line in the output:\n{stdout[-3000:]}")


# ---------------------------------------------------------------------------------------
# Ctrl-C while sess.run waits on an empty queue
# ---------------------------------------------------------------------------------------

STUCK_SCRIPT = r"""
import contextlib, os, signal, sys, threading, time
import tensorflow as tf
import queuepipe
from sample_gens import WaitForFile
tf1 = tf.compat.v1
mode, how, gate = sys.argv[1], sys.argv[2], sys.argv[3]
sent = []

def ctrl_c():
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)

def left():
    return [t.name for t in threading.enumerate() if t.name.startswith("queuepipe") or "close_on_stop" in t.name]

@contextlib.contextmanager
def session():
    if how == "monitored":
        with tf1.train.MonitoredTrainingSession() as sess:
            yield sess
    else:
        with tf1.Session() as sess, queuepipe.running(sess):
            yield sess

with tf.Graph().as_default():
    # every worker waits for a gate that does not open (a stuck read, a generator waiting on I/O)
    p = queuepipe.from_generator(WaitForFile(gate, 8), tf.int64, (), batch_size=4, workers=2, mode=mode)
    try:
        with session() as sess:
            deadline = time.monotonic() + 60
            while not all(os.path.exists(f"{gate}.waiting-{i}") for i in range(2)):
                assert time.monotonic() < deadline, "the workers never started"
                time.sleep(0.01)
            threading.Timer(0.5, ctrl_c).start()
            try:
                sess.run(p.batch)  # the queue is empty and stays so
                print("RESULT a batch arrived", flush=True)
            except KeyboardInterrupt:
                print("WAITED %.2f" % (time.monotonic() - sent[0]), flush=True)
                if mode == "thread":  # user code in a thread cannot be interrupted: its I/O ends
                    open(gate, "w").close()
                raise
    except KeyboardInterrupt:
        print("RESULT KeyboardInterrupt", flush=True)
    print("LEFT", left(), flush=True)
    # the same graph in a fresh session: a new run, whose workers are no longer stuck
    open(gate, "w").close()
    with tf1.Session() as sess, queuepipe.running(sess):
        print("FRESH", sorted(sess.run(p.batch).tolist()), flush=True)
print("LEFT_AT_END", left(), flush=True)
"""


@pytest.mark.parametrize("how", ["running", "monitored"])
def test_ctrl_c_interrupts_sess_run_waiting_for_a_stuck_worker(mode, how, tmp_path):
    """SIGINT while the main thread is blocked in ``sess.run`` on an empty queue: the run returns
    at once with KeyboardInterrupt, ``running()`` (or the monitored session) exits with no thread
    left, and the graph works in a fresh session.  (TF1 alone ignores Ctrl-C there until the queue
    gets an element.)"""
    proc = run_python(STUCK_SCRIPT, mode, how, str(tmp_path / "gate"), timeout=150)
    assert proc.returncode == 0, describe(proc)
    assert _value_after(proc.stdout, "RESULT") == "KeyboardInterrupt", describe(proc)
    waited = float(_value_after(proc.stdout, "WAITED"))
    assert waited < 5, f"sess.run returned {waited:.1f}s after Ctrl-C"
    assert _value_after(proc.stdout, "LEFT") == "[]", describe(proc)
    assert len(_value_after(proc.stdout, "FRESH").split(",")) == 4, describe(proc)  # one whole batch
    assert _value_after(proc.stdout, "LEFT_AT_END") == "[]", describe(proc)


LOOP_SCRIPT = r"""
import os, signal, sys, threading, time
import tensorflow as tf
import queuepipe
from sample_gens import InfiniteCounter
tf1 = tf.compat.v1
mode = sys.argv[1]
with tf.Graph().as_default():
    p = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=2, workers=2,
                                 mode=mode, capacity=64)
    with tf1.Session() as sess, queuepipe.running(sess):
        sess.run(p.batch)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        interrupted = False
        deadline = time.monotonic() + 30
        while not interrupted and time.monotonic() < deadline:
            try:
                sess.run(p.batch)
            except KeyboardInterrupt:  # a notebook's interrupted cell: the session goes on
                interrupted = True
        print("INTERRUPTED", interrupted, flush=True)
        for _ in range(100):
            sess.run(p.batch)
        print("AFTER ok", flush=True)
"""


def test_ctrl_c_between_fast_steps_leaves_the_pipeline_running(mode):
    """A main thread that takes the KeyboardInterrupt itself (it was running Python, not blocked)
    keeps its pipeline: a caught Ctrl-C does not end the data."""
    proc = run_python(LOOP_SCRIPT, mode, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert _value_after(proc.stdout, "INTERRUPTED") == "True", describe(proc)
    assert _value_after(proc.stdout, "AFTER") == "ok", describe(proc)


FOREIGN_WAKEUP_SCRIPT = r"""
import os, signal, socket, sys, threading, time
import tensorflow as tf
import queuepipe
from sample_gens import InfiniteCounter
tf1 = tf.compat.v1
mode = sys.argv[1]
# like asyncio's add_signal_handler: a wakeup fd of our own, and a Python handler for SIGUSR1
theirs, ours_end = socket.socketpair()
theirs.setblocking(False)
ours_end.setblocking(False)
signal.set_wakeup_fd(theirs.fileno())
signal.signal(signal.SIGUSR1, lambda *a: None)
with tf.Graph().as_default():
    p = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=2, workers=1,
                                 mode=mode)
    with tf1.Session() as sess:
        with queuepipe.running(sess):
            sess.run(p.batch)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.2)
            print("THEIRS_GOT", list(ours_end.recv(16)), flush=True)
        print("STILL_THEIRS", signal.set_wakeup_fd(theirs.fileno()) == theirs.fileno(), flush=True)
    # with the defaults, what queuepipe installs while a run goes on is gone after it
    signal.set_wakeup_fd(-1)
    with tf1.Session() as sess:
        with queuepipe.running(sess):
            sess.run(p.batch)
        print("RESTORED", signal.getsignal(signal.SIGINT) is signal.default_int_handler,
              signal.set_wakeup_fd(-1) == -1, flush=True)
    # with a handler of the user's own for SIGINT, queuepipe installs nothing
    def users_handler(*args):
        pass
    signal.signal(signal.SIGINT, users_handler)
    with tf1.Session() as sess:
        with queuepipe.running(sess):
            sess.run(p.batch)
            print("NONE_INSTALLED", signal.getsignal(signal.SIGINT) is users_handler,
                  signal.set_wakeup_fd(-1) == -1, flush=True)
"""


def test_a_wakeup_fd_already_installed_or_a_users_sigint_handler_are_left_alone(mode):
    """queuepipe's Ctrl-C listener never replaces a wakeup fd someone else set (asyncio) or a
    SIGINT handler of the user's own, and leaves none of its own behind once its runs end."""
    proc = run_python(FOREIGN_WAKEUP_SCRIPT, mode, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert _value_after(proc.stdout, "THEIRS_GOT") == "[10]", describe(proc)  # SIGUSR1's number
    assert _value_after(proc.stdout, "STILL_THEIRS") == "True", describe(proc)
    assert _value_after(proc.stdout, "RESTORED") == "True True", describe(proc)
    assert _value_after(proc.stdout, "NONE_INSTALLED") == "True True", describe(proc)


# ---------------------------------------------------------------------------------------
# coord.request_stop() from another thread
# ---------------------------------------------------------------------------------------

def test_request_stop_from_another_thread_ends_a_waiting_sess_run(mode, tmp_path):
    """The watcher's cancel op closes the queue: a ``sess.run`` waiting on it fails at once
    (``OutOfRangeError``), it does not wait for the stuck workers."""
    gate = str(tmp_path / "gate")
    with tf.Graph().as_default():
        p = queuepipe.from_generator(WaitForFile(gate, 8), tf.int64, (), batch_size=4, workers=2, mode=mode)
        with tf1.Session() as sess:
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            try:
                deadline = time.monotonic() + PROMPT_S
                while not all(os.path.exists(f"{gate}.waiting-{i}") for i in range(2)):
                    assert time.monotonic() < deadline, "the workers never started"
                    time.sleep(0.01)
                stopper = threading.Timer(0.3, coord.request_stop)
                stopper.start()
                started = time.monotonic()
                with pytest.raises(tf.errors.OutOfRangeError):
                    sess.run(p.batch)
                waited = time.monotonic() - started
                assert waited < 5, f"sess.run returned {waited:.1f}s after request_stop()"
            finally:
                open(gate, "w").close()  # the stuck workers' I/O ends
                coord.request_stop()
                coord.join(threads, stop_grace_period_secs=PROMPT_S)


# ---------------------------------------------------------------------------------------
# a session closed while its coordinator is never stopped
# ---------------------------------------------------------------------------------------

def test_closed_session_with_a_coordinator_never_stopped_leaves_no_thread_and_no_reference(mode, tmp_path):
    """TF's own queue runner left a ``...-close_on_stop`` thread waiting for the coordinator
    forever, holding the session and its graph; queuepipe's watcher notices the closed
    session and its threads end.  Nothing keeps the closed session alive -- not even the
    graph, which the user still holds (its queue runner once kept the last session) -- and
    nothing keeps the graph alive once the user drops it."""
    coord = tf1.train.Coordinator()

    def start_and_close():
        g = tf.Graph()
        with g.as_default():
            p = queuepipe.from_generator(InfiniteCounter(str(tmp_path / "closed")), (tf.int64, tf.int64),
                                         ((), ()), batch_size=4, workers=2, mode=mode, capacity=8)
            sess = tf1.Session(graph=g)
            tf1.train.start_queue_runners(sess=sess, coord=coord)
            sess.run(p.batch)
            sess.close()
        return g, weakref.ref(sess)

    graph, sess_ref = start_and_close()
    deadline = time.monotonic() + PROMPT_S
    while _threads_left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads_left() == [], "threads left after the session closed"
    assert not coord.should_stop(), "the test needs a coordinator nobody stopped"
    gc.collect()
    assert sess_ref() is None, f"the closed session is still referenced: {_referrers(sess_ref())}"
    graph_ref = weakref.ref(graph)
    del graph
    gc.collect()
    assert graph_ref() is None, f"the graph is still referenced: {_referrers(graph_ref())}"
    assert sorted(os.listdir(tmp_path)) == ["closed.0", "closed.1"], "the generators were not closed"


def _referrers(obj) -> str:
    return "; ".join(f"{type(r).__name__}: {str(r)[:150]}" for r in gc.get_referrers(obj)[:8])


# ---------------------------------------------------------------------------------------
# interpreter exit while thread workers read HDF5 through h5py
# ---------------------------------------------------------------------------------------

EXIT_SCRIPT = r"""
import sys
import tensorflow as tf
import queuepipe
tf1 = tf.compat.v1
path, workers = sys.argv[1], int(sys.argv[2])
with tf.Graph().as_default():
    p = queuepipe.from_hdf5(path, "wide", batch_size=4, workers=workers, num_epochs=None, shuffle=True, seed=1,
                            mode="thread")
    with tf1.Session() as sess:
        tf1.train.start_queue_runners(sess, daemon=True)
        for _ in range(100):  # a consumer faster than the workers: they are reading when it fails
            sess.run(p.batch)
        raise RuntimeError("user code failed")
"""

EXIT_RUNS = 16


@pytest.fixture(scope="module")
def wide_file(tmp_path_factory):
    """A gzip-compressed big-endian dataset of wide rows: h5py reads it (HDF5 inflates it and
    converts the byte order), each read holding h5py's global lock, with the GIL released, for
    tens of milliseconds."""
    path = str(tmp_path_factory.mktemp("exit") / "wide.h5")
    values = (np.arange(1024 * 16384) % 1000).astype(">f4").reshape(1024, 16384)
    with h5py.File(path, "w") as f:
        f.create_dataset("wide", data=values, chunks=(16, 16384), compression="gzip", compression_opts=1)
    return path


@pytest.mark.timeout(1200)
def test_interpreter_always_exits_after_an_exception_while_workers_read_hdf5(wide_file):
    """An exception inside ``with Session()`` while daemon queue-runner threads read HDF5 through
    h5py: the program must exit with the exception's exit code, every time.  (Finalization froze
    a daemon thread in the middle of a read, holding h5py's global lock, and then waited for that
    lock to deallocate h5py objects: without the atexit hook nearly every run here hung.)"""
    def one(i):
        try:
            return run_python(EXIT_SCRIPT, wide_file, str(2 + i % 3), timeout=60)
        except subprocess.TimeoutExpired as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(EXIT_RUNS)))
    hung = [r for r in results if isinstance(r, subprocess.TimeoutExpired)]
    assert not hung, f"{len(hung)} of {len(results)} exits hung"
    for proc in results:
        assert proc.returncode == 1 and "RuntimeError: user code failed" in proc.stderr, describe(proc)


# ---------------------------------------------------------------------------------------
# descriptors a worker process keeps to itself
# ---------------------------------------------------------------------------------------

FD_GEN = '''
import os


def inheritable_fds():
    """Yields how many descriptors other than 0, 1, 2 this process would pass to a child."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                count += os.get_inheritable(fd)
            except OSError:  # the listing's own descriptor, closed by now
                pass
    yield count
'''


def _inheritable_fds():
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2 and os.get_inheritable(int(name)):
                out.add(int(name))
        except OSError:
            pass
    return out


def test_worker_processes_pass_no_descriptor_to_processes_they_start(tmp_path, monkeypatch):
    """A subprocess the user's code starts in a worker (``close_fds=False``, ``os.system``) must not
    get the worker's control socket or slot memory: no descriptor of a worker process, and none
    queuepipe opens in the parent, is inheritable."""
    (tmp_path / "fdgen.py").write_text(FD_GEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fdgen

    before = _inheritable_fds()
    with tf.Graph().as_default():
        p = queuepipe.from_generator(fdgen.inheritable_fds, tf.int64, (), batch_size=1, workers=2,
                                     mode="process")
        with tf1.Session() as sess, queuepipe.running(sess):
            counts = sess.run(p.batch).tolist() + sess.run(p.batch).tolist()
            during = _inheritable_fds()
    assert counts == [0, 0], f"inheritable descriptors in the worker processes: {counts}"
    assert during <= before, f"queuepipe opened inheritable descriptors in the parent: {during - before}"
