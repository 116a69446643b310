"""Shared helpers for the queuepipe test suite.

``MODES`` is the one place that lists the worker modes the mode-parametrised tests
run under (threads and processes share every exactly-once, end-of-data, error and shutdown test).  The generators those tests
use live in ``sample_gens`` -- module-level classes that pickle to a child process
and import no TensorFlow (worker processes stay TF-free).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, List

import numpy as np
import pytest
import tensorflow as tf

import queuepipe

tf1 = tf.compat.v1

MODES = ["thread", "process"]
if os.environ.get("QUEUEPIPE_TEST_MODES"):  # e.g. QUEUEPIPE_TEST_MODES=thread,process for a local try
    MODES = os.environ["QUEUEPIPE_TEST_MODES"].split(",")

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Generous bound for "promptly" (stop, error surfacing): never a tight wall-clock limit.
PROMPT_S = 20.0


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """The worker mode under test (import this fixture into a test module)."""
    return request.param


# ---------------------------------------------------------------------------------------
# running a pipeline
# ---------------------------------------------------------------------------------------

def drain(sess, batch, limit: int = 100_000) -> List[Any]:
    """Every batch ``sess.run(batch)`` returns until OutOfRangeError (at most ``limit``)."""
    out = []
    for _ in range(limit):
        try:
            out.append(sess.run(batch))
        except tf.errors.OutOfRangeError:
            return out
    raise AssertionError(f"no OutOfRangeError after {limit} batches")


def run_all(generator, output_types, output_shapes=None, **kwargs) -> List[Any]:
    """Build a pipeline in a fresh graph, run it to the end under ``queuepipe.running``."""
    with tf.Graph().as_default():
        p = queuepipe.from_generator(generator, output_types, output_shapes, **kwargs)
        with tf1.Session() as sess, queuepipe.running(sess):
            return drain(sess, p.batch)


def rows(batches, field=None) -> List[Any]:
    """Concatenate the rows of a list of batches (optionally one field of each) to a list."""
    parts = [b if field is None else b[field] for b in batches]
    if not parts:
        return []
    return [x.item() if isinstance(x, np.generic) else x for x in np.concatenate(parts)]


def tuples(batches) -> List[tuple]:
    """Rows of tuple-structured batches as python tuples of scalars."""
    out = []
    for b in batches:
        for r in zip(*b):
            out.append(tuple(x.item() if isinstance(x, np.generic) else x for x in r))
    return out


def sizes(batches, field=None) -> List[int]:
    return [len(b if field is None else b[field]) for b in batches]


class Timer:
    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.start
        return False


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------

def closed_markers(prefix: str) -> List[str]:
    d, base = os.path.split(prefix)
    return sorted(n for n in os.listdir(d) if n.startswith(base + "."))


# ---------------------------------------------------------------------------------------
# subprocesses (for interpreter-level checks, and for cases that may crash the interpreter)
# ---------------------------------------------------------------------------------------

def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this venv), with tests/ importable; capture output."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in [TESTS_DIR, os.environ.get("PYTHONPATH", "")] if p))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=TESTS_DIR)


def describe(proc: subprocess.CompletedProcess) -> str:
    return (f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}"
            f"\n--- stderr ---\n{proc.stderr[-3000:]}")
