"""First contact: what a new user sees running the examples and ``queuepipe demo``.

A normal run exits 0 and prints no TensorFlow noise on stderr (no INFO lines, no "Local
rendezvous is aborting" warnings from ops cancelled at shutdown), and the scene example
leaves nothing in TMPDIR, however it ends.  The demo's header and advice are checked as
pure functions on made-up tables: the advice must follow the numbers, in both directions.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from queuepipe.tools.demo import Measured, advice, header
from queuepipe.tools.quiet import drop_log_lines, min_log_level

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# What must not reach a new user's terminal: TF's C++ INFO records (absl "I0000 ..." or the
# older "I tensorflow/..." prefix) and the warnings TF logs for ops cancelled at shutdown.
NOISE = re.compile(r"rendezvous|^I tensorflow|^I\d{4} ", re.IGNORECASE | re.MULTILINE)


def _noise(stderr: str) -> List[str]:
    """The lines of ``stderr`` a normal run must not print."""
    return [line for line in stderr.splitlines() if NOISE.search(line)]


def _new_user_env(tmpdir: Path) -> Dict[str, str]:
    """This environment as a new user has it: no TF_CPP_* settings of ours, TMPDIR at ``tmpdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    env["TMPDIR"] = str(tmpdir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


def _run(args: List[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run a program as a new user would, with a fresh, empty TMPDIR under ``tmp_path``."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    return subprocess.run([sys.executable] + args, cwd=tmp_path, env=_new_user_env(tmpdir),
                          capture_output=True, text=True, timeout=170)


# ---------------------------------------------------------------------------------------
# the programs, run as a new user runs them
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("example", ["hdf5_partial.py", "scene_generator.py", "gpu_staging.py",
                                     "tensorboard_input.py"])
def test_example_runs_quietly_and_leaves_tmpdir_empty(example, tmp_path):
    proc = _run([str(EXAMPLES / example)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loss" in proc.stdout
    assert _noise(proc.stderr) == [], proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "tmpdir")) == []


FAILING_SCENE_RUN = textwrap.dedent("""
    import runpy, sys
    example = runpy.run_path(sys.argv[1], run_name="scene_generator_example")
    try:
        example["main"](steps=None)  # range(None): a TypeError inside the training loop
    except TypeError:
        print("raised")
""")


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_scene_example_removes_its_file_when_training_raises(tmp_path):
    proc = _run(["-c", FAILING_SCENE_RUN, str(EXAMPLES / "scene_generator.py")], tmp_path)
    assert proc.returncode == 0 and "raised" in proc.stdout, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "tmpdir")) == []


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_demo_runs_quietly_and_ends_with_advice(tmp_path):
    proc = _run(["-m", "queuepipe", "demo", "--seconds", "0.3", "--workers", "1",
                 "--data", str(tmp_path / "scenes.h5")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "relative to feed_dict" in proc.stdout and "\nadvice: " in proc.stdout, proc.stdout
    assert _noise(proc.stderr) == [], proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------
# the quiet import's filter
# ---------------------------------------------------------------------------------------

IMPORT_STDERR = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796498399.445737    6254 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1796498399.507061    6254 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    "W0000 00:00:1796498403.587960    6271 local_rendezvous.cc:412] Local rendezvous is aborting with "
    "status: CANCELLED: Enqueue operation was cancelled\n"
    "\t [[{{node enqueue_12}}]]\n"
    "E0000 00:00:1796498403.600000    6271 some_op.cc:1] a real error\n"
    "Traceback (most recent call last):\n"
    "ImportError: something the user must see\n"
)


def test_drop_log_lines_applies_the_level_to_records_and_their_continuations():
    assert drop_log_lines(IMPORT_STDERR, 0) == IMPORT_STDERR
    at_1 = drop_log_lines(IMPORT_STDERR, 1)
    assert "absl::InitializeLog" not in at_1 and "oneDNN" not in at_1 and "To enable" not in at_1
    assert "Local rendezvous" in at_1 and "[[{{node enqueue_12}}]]" in at_1
    at_2 = drop_log_lines(IMPORT_STDERR, 2)
    assert at_2 == ("E0000 00:00:1796498403.600000    6271 some_op.cc:1] a real error\n"
                    "Traceback (most recent call last):\n"
                    "ImportError: something the user must see\n")
    assert drop_log_lines(IMPORT_STDERR, 3).startswith("Traceback")


def test_min_log_level_reads_the_users_setting():
    assert min_log_level({}) == 0
    assert min_log_level({"TF_CPP_MIN_LOG_LEVEL": "2"}) == 2
    assert min_log_level({"TF_CPP_MIN_LOG_LEVEL": "loud"}) == 0


# ---------------------------------------------------------------------------------------
# the demo's header and advice
# ---------------------------------------------------------------------------------------


def _table(feed, thread1, thread2, process1, process2):
    return [Measured("feed_dict", 1, feed), Measured("thread", 1, thread1), Measured("thread", 2, thread2),
            Measured("process", 1, process1), Measured("process", 2, process2)]


def test_demo_advice_says_threads_help_when_the_table_does():
    lines = advice(_table(feed=100.0, thread1=110.0, thread2=135.0, process1=105.0, process2=120.0))
    assert lines[0].startswith("use workers=2, mode='thread'") and "1.35x" in lines[0]
    thread_line = next(line for line in lines if line.startswith("queuepipe 2 threads"))
    assert "1.23x one thread" in thread_line and "help" in thread_line and "contend" not in thread_line
    process_line = next(line for line in lines if line.startswith("queuepipe 2 processes"))
    assert "1.14x one process" in process_line and "help" in process_line


def test_demo_advice_says_threads_contend_when_the_table_does():
    lines = advice(_table(feed=100.0, thread1=105.0, thread2=60.0, process1=110.0, process2=190.0))
    assert lines[0].startswith("use workers=2, mode='process'") and "1.90x" in lines[0]
    thread_line = next(line for line in lines if line.startswith("queuepipe 2 threads"))
    assert "0.57x one thread" in thread_line and "slow it down" in thread_line and "contend" in thread_line
    process_line = next(line for line in lines if line.startswith("queuepipe 2 processes"))
    assert "help" in process_line


def test_demo_advice_recommends_nothing_when_nothing_beats_feed_dict():
    lines = advice(_table(feed=100.0, thread1=102.0, thread2=99.0, process1=97.0, process2=101.0))
    assert not lines[0].startswith("use ") and "1.02x feed_dict, about the same" in lines[0]
    assert all("help with" not in line and "slow it down" not in line for line in lines)


def test_demo_header_says_what_is_measured():
    text = "\n".join(header("/tmp/scenes.h5", 4096, 64, 4.0, 200, 8))
    for part in ("steps/s relative to feed_dict", "batch 64 samples", "4096 scenes", "8 CPU cores",
                 "trains 4 s after warm-up"):
        assert part in text, text


# ---------------------------------------------------------------------------------------
# a user's own program, at TF's default log level
# ---------------------------------------------------------------------------------------

EARLY_EXIT = textwrap.dedent("""
    import sys
    import numpy as np

    def endless():
        k = 0
        while True:
            yield np.full(256, k, np.float32)
            k += 1

    if __name__ == "__main__":
        import tensorflow as tf
        import queuepipe
        tf1 = tf.compat.v1
        mode, staged = sys.argv[1], sys.argv[2] == "staged"
        tf1.disable_eager_execution()
        pipe = queuepipe.from_generator(endless, tf.float32, [256], batch_size=8, workers=2, mode=mode,
                                        capacity=32)
        batch = pipe.staged("/cpu:0") if staged else pipe.batch
        with tf1.Session() as sess:
            with queuepipe.running(sess):
                for _ in range(20):
                    sess.run(batch)
                import time
                time.sleep(0.5)  # the queue fills up: every worker waits to enqueue
        print("left early")
""")


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("mode,staged", [("thread", "plain"), ("process", "plain"), ("thread", "staged")])
def test_leaving_running_early_logs_no_cancelled_op(tmp_path, mode, staged):
    """Leaving ``running()`` while the workers wait on a full queue stops them without
    cancelling an op: TF logs every cancelled run as a "Local rendezvous is aborting" warning,
    which a user's program (at TF's default log level) would print once per worker."""
    script = tmp_path / "early_exit.py"
    script.write_text(EARLY_EXIT)
    env = dict(_new_user_env(tmp_path), TF_CPP_MIN_LOG_LEVEL="1")  # warnings shown, INFO not
    proc = subprocess.run([sys.executable, str(script), mode, staged], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0 and "left early" in proc.stdout, proc.stderr[-3000:]
    assert [ln for ln in proc.stderr.splitlines() if "rendezvous" in ln.lower()] == [], proc.stderr[-3000:]
