"""What a pipeline tells TensorBoard: its queue's fill level, samples per second, input wait.

Every pipeline adds three scalar summaries to ``GraphKeys.SUMMARIES`` when it is built, so
``MonitoredTrainingSession(save_summaries_steps=...)`` (or any ``merge_all()``) writes them
with no extra code:

- ``queue/<name>/fraction_of_<capacity>_full``: the queue's size over its capacity, under
  the name ``tf.compat.v1.train.batch`` used (capacity in samples);
- ``queue/<name>/samples_per_second``: samples handed to the consumer per second since the
  previous evaluation of the summary (or since the run started);
- ``queue/<name>/input_wait_fraction``: the fraction of that time the consumer waited for
  input (0: the input keeps up; near 1: the step waits for the pipeline).

None of them dequeues: running the summary op alone never takes a batch.  The last two read
the consumer's statistics (:mod:`.consumer_stats`) in a ``py_func`` that runs only when the
summaries are evaluated.
"""
from __future__ import annotations

import threading
import time
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from .consumer_stats import SAMPLES, WAIT_SECONDS

tf1 = tf.compat.v1


class RateMeter:
    """Differences of the consumer's statistics between two evaluations, per second of wall time."""

    def __init__(self, runner):
        self.runner = runner
        self._lock = threading.Lock()
        self._last: Optional[Tuple[float, float, float, int]] = None  # (time, wait, samples, run)

    def __call__(self, stats: np.ndarray) -> np.ndarray:
        now = time.monotonic()
        run_id = self.runner.runs_reset
        with self._lock:
            last = self._last
            if last is None or last[3] != run_id or stats[SAMPLES] < last[2]:
                last = (self.runner.reset_at or now, 0.0, 0.0, run_id)
            self._last = (now, float(stats[WAIT_SECONDS]), float(stats[SAMPLES]), run_id)
        elapsed = now - last[0]
        if elapsed <= 0:
            return np.zeros(2, np.float32)
        samples_per_second = (stats[SAMPLES] - last[2]) / elapsed
        wait_fraction = min(1.0, max(0.0, (stats[WAIT_SECONDS] - last[1]) / elapsed))
        return np.array([samples_per_second, wait_fraction], np.float32)


def add_summaries(pipeline) -> None:
    """Add the pipeline's three summaries to ``GraphKeys.SUMMARIES``."""
    capacity = pipeline.capacity_batches * pipeline.batch_size
    prefix = f"queue/{pipeline.name}"
    with tf.control_dependencies(None):
        fraction = tf.cast(pipeline.runner.queue_size, tf.float32) * (1.0 / pipeline.capacity_batches)
        tf1.summary.scalar(f"{prefix}/fraction_of_{capacity}_full", fraction)
        rates = tf1.numpy_function(RateMeter(pipeline.runner), [pipeline.stats.value], tf.float32,
                                   stateful=True, name=f"{pipeline.name}_rates")
        rates.set_shape([2])
        tf1.summary.scalar(f"{prefix}/samples_per_second", rates[0])
        tf1.summary.scalar(f"{prefix}/input_wait_fraction", rates[1])
