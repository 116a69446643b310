"""Stopping a pipeline under ``tf.test.TestCase`` logs no error when nothing failed (issue 16,
"Migration kit").

``tf.test.TestCase``'s sessions (``self.session()``, ``self.cached_session()``) are
``ErrorLoggingSession`` s: every ``run`` that fails with anything but ``OutOfRangeError`` is
logged as an ERROR.  A stop races with the session's own close (``tearDown`` closes the
cached session; ``with self.session()`` closes it before a coordinator is stopped), so the
runner's stop-time ops -- the last enqueue thread's close, the watcher's drain (a bounded
wait: ``DeadlineExceededError`` when the consumer takes the batch first), close and cancel,
the stager's -- may fail with "Attempted to use a closed Session." or "Run call was
cancelled"; they did so through ``sess.run``, and TestCase logged each as an ERROR.  And a
plain close of a closed queue ("CANCELLED: ... is already closed", which TF logs) must never
run: every close is ``close_if_open``.

Each scenario runs in one ``tf.test.main()`` subprocess per mode, so the C++ log lines (stderr)
are seen too; markers split the output per scenario.  The scenarios also must end: a
``Pipeline.close()`` under ``start_queue_runners`` once left the consumer waiting for good.
"""
from __future__ import annotations

import re

import pytest

from helpers import describe, mode, run_python  # noqa: F401 - fixture

SCENARIOS = r'''
import faulthandler, os, sys, logging, threading, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"   # C++ warnings too: "already closed" is one
MODE = sys.argv.pop(1)
faulthandler.dump_traceback_later(float(sys.argv.pop(1)), exit=True)  # a hang fails, with its stacks
import tensorflow as tf
import queuepipe
from sample_gens import WholeRange
tf1 = tf.compat.v1
tf1.disable_eager_execution()


def mark(text):
    sys.stderr.write(f"@@@ {text}\n")
    sys.stderr.flush()


def queuepipe_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("queuepipe") and t.name != "queuepipe-interrupt"]


def wait_for_threads():
    deadline = time.monotonic() + 20
    while queuepipe_threads() and time.monotonic() < deadline:
        time.sleep(0.05)


class Stops(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        mark("begin " + self._testMethodName)
        self.after_teardown = []

    def tearDown(self):
        super().tearDown()  # closes the cached session
        for step in self.after_teardown:
            step()
        wait_for_threads()
        mark("end " + self._testMethodName + " threads=" + ",".join(queuepipe_threads()))

    def pipe(self, n, staged=False):
        p = queuepipe.from_generator(WholeRange(n), tf.int64, (), batch_size=10, workers=2, mode=MODE, capacity=4)
        return p, (p.staged("/cpu:0") if staged else p.batch)

    @staticmethod
    def drain(sess, batch):
        while True:
            try:
                sess.run(batch)
            except tf.errors.OutOfRangeError:
                return

    # queuepipe.running(sess)
    def _running(self, staged, to_end):
        p, b = self.pipe(100 if to_end else 10_000, staged)
        with self.cached_session() as sess, queuepipe.running(sess):
            self.drain(sess, b) if to_end else sess.run(b)
    def test_running_to_the_end(self): self._running(False, True)
    def test_running_some_batches(self): self._running(False, False)
    def test_running_some_batches_staged(self): self._running(True, False)

    def test_running_in_a_session_closed_at_exit(self):
        p, b = self.pipe(10_000)
        with self.session() as sess, queuepipe.running(sess):
            sess.run(b)

    # start_queue_runners + a coordinator, stopped while the session is open
    def _coordinated(self, staged, to_end):
        p, b = self.pipe(100 if to_end else 10_000, staged)
        with self.cached_session() as sess:
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            self.drain(sess, b) if to_end else sess.run(b)
            time.sleep(0.3)  # the queue fills up
            coord.request_stop()
            coord.join(threads)
    def test_coordinator_some_batches(self): self._coordinated(False, False)
    def test_coordinator_to_the_end(self): self._coordinated(False, True)
    def test_coordinator_some_batches_staged(self): self._coordinated(True, False)
    def test_coordinator_to_the_end_staged(self): self._coordinated(True, True)

    # the session is closed first, the coordinator stopped after
    def _session_closed_first(self, staged, to_end):
        p, b = self.pipe(100 if to_end else 10_000, staged)
        coord = tf1.train.Coordinator()
        with self.session() as sess:
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            self.drain(sess, b) if to_end else sess.run(b)
            time.sleep(0.3)
        time.sleep(0.5)
        coord.request_stop()
        coord.join(threads)
    def test_session_closed_first(self): self._session_closed_first(False, False)
    def test_session_closed_first_at_the_end(self): self._session_closed_first(False, True)
    def test_session_closed_first_staged(self): self._session_closed_first(True, False)

    # nothing stops the pipeline: tearDown closes the cached session
    def _left_running(self, staged, coordinated):
        p, b = self.pipe(10_000, staged)
        sess = self.cached_session().__enter__()
        coord = tf1.train.Coordinator() if coordinated else None
        threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
        sess.run(b)
        time.sleep(0.3)
        if coord is not None:
            self.after_teardown.append(lambda: (coord.request_stop(), coord.join(threads)))
    def test_left_running_with_a_coordinator(self): self._left_running(False, True)
    def test_left_running_without_a_coordinator(self): self._left_running(False, False)
    def test_left_running_staged(self): self._left_running(True, True)

    def test_pipeline_closed_while_the_consumer_waits(self):
        p, b = self.pipe(10_000)
        with self.cached_session() as sess:
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            sess.run(b)
            p.close()
            self.drain(sess, b)  # the queued batches, then the end of data: never a hang
            coord.request_stop()
            coord.join(threads)


if __name__ == "__main__":
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("QUEUEPIPE-LOG %(levelname)s: %(message)s"))
    logging.getLogger("queuepipe").addHandler(handler)
    logging.getLogger("queuepipe").setLevel(logging.INFO)
    tf.test.main()
'''

ERROR_LINE = re.compile(r"^(E\d{4} |ERROR:|QUEUEPIPE-LOG (ERROR|CRITICAL))")


def per_scenario(stderr: str) -> dict:
    """The stderr lines of each scenario, between its begin and end markers (and its end marker)."""
    found, name = {}, None
    for line in stderr.splitlines():
        if line.startswith("@@@ begin "):
            name = line.split()[2]
            found[name] = []
        elif name is not None:
            found[name].append(line)
            if line.startswith("@@@ end "):
                name = None
    return found


@pytest.mark.timeout(300)
def test_stopping_under_tf_test_testcase_logs_no_error(mode):
    proc = run_python(SCENARIOS, mode, "180", timeout=240)
    assert proc.returncode == 0, describe(proc)
    scenarios = per_scenario(proc.stderr)
    assert len(scenarios) == 15, describe(proc)
    for name, lines in scenarios.items():
        assert lines and lines[-1].startswith("@@@ end"), f"{name} did not end:\n" + "\n".join(lines[-30:])
        assert lines[-1].endswith("threads="), f"{name} left queuepipe threads: {lines[-1]}"
        errors = [line for line in lines if ERROR_LINE.match(line)]
        assert not errors, f"{name} logged errors although nothing failed:\n" + "\n".join(lines)
        closed = [line for line in lines if "already closed" in line]
        assert not closed, f"{name} closed a closed queue:\n" + "\n".join(lines)
    everything = proc.stderr + proc.stdout
    assert not [line for line in everything.splitlines() if ERROR_LINE.match(line)], describe(proc)
    assert "already closed" not in everything, describe(proc)


@pytest.mark.parametrize("text", ["E1205 23:40:01.0 1 test_util.py:2256] Attempted to use a closed Session.",
                                  "ERROR:tensorflow:Graph execution error:",
                                  "QUEUEPIPE-LOG ERROR: queuepipe: worker 0 of 1 failed"])
def test_the_error_pattern_catches_what_testcase_and_queuepipe_log(text):
    assert ERROR_LINE.match(text)
