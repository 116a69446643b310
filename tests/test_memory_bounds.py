"""DESIGN.md, "Memory bounds": a pipeline's peak memory stays within the documented bound,
also for large samples (18 MB each), where the default shuffle buffer used to hold 16 batches
per worker whatever their size (1.15 GB for four workers) instead of a byte budget.

The end-to-end checks run in a fresh interpreter each (``run_python``), so the peak resident
set they read (``VmHWM``, reset once the session is up) is this pipeline's alone.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from helpers import describe, run_python
from queuepipe.options import (BLOCK_TARGET_BYTES, SHUFFLE_BUDGET_BYTES, PipelineOptions, default_shuffle_rows,
                               resolved_sizes)
from queuepipe.spec import Spec
from queuepipe.workers.batching import _ShuffleBuffer

pytestmark = pytest.mark.timeout(150)

SHAPE = (4500, 1000)                       # one float32 sample: 18 MB
ROW = SHAPE[0] * SHAPE[1] * 4
WORKERS, BATCH, CAPACITY = 4, 1, 4
MARGIN = 64 << 20                          # TensorFlow's own allocations, allocator slack

PEAK_SCRIPT = r"""
import json, sys, threading, time
import numpy as np
import tensorflow as tf
import queuepipe

tf1 = tf.compat.v1
SHAPE, WORKERS, BATCH, CAPACITY, STEPS = (4500, 1000), 4, 1, 4, 40
shuffle = sys.argv[1] == "shuffle"


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024


def samples():
    buf = np.zeros(SHAPE, np.float32)  # the generator reuses one buffer: queuepipe copies each sample
    for i in range(STEPS * BATCH):
        buf[0, 0] = i
        yield buf


peak = [0]
def sample_rss(stop):  # only where VmHWM cannot be reset
    while not stop.is_set():
        peak[0] = max(peak[0], status("VmRSS"))
        time.sleep(0.002)


with tf.Graph().as_default():
    p = queuepipe.from_generator(samples, tf.float32, SHAPE, batch_size=BATCH, workers=WORKERS,
                                 capacity=CAPACITY, shuffle=shuffle, seed=7)
    with tf1.Session() as sess:
        sess.run(tf.constant(0.0))
        stop = threading.Event()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            sampler = None
        except OSError:
            sampler = threading.Thread(target=sample_rss, args=(stop,), daemon=True)
        before = status("VmRSS")
        if sampler is not None:
            sampler.start()
        with queuepipe.running(sess):
            for _ in range(STEPS):
                sess.run(p.batch)
        stop.set()
        if sampler is not None:
            sampler.join()
        high = peak[0] if sampler is not None else status("VmHWM")
print(json.dumps({"growth": high - before}))
"""


def documented_bound(shuffle_rows: int) -> int:
    """DESIGN.md's bound for a thread-mode pipeline fed by a generator, in bytes:
    ``(capacity + 2) * b + workers * (3 * K + 3 * c + S)``."""
    b = BATCH * ROW                                  # a batch
    K = b                                            # a block: one batch (a batch is > 8 MiB)
    c = b                                            # the generator's chunk: batch_size samples
    S = (shuffle_rows + BATCH) * ROW if shuffle_rows else 0
    capacity_batches = math.ceil(CAPACITY / BATCH)
    return (capacity_batches + 2) * b + WORKERS * (3 * K + 3 * c + S)


def expected_default_shuffle_rows() -> int:
    """The documented default: 16 batches (two blocks at least), capped at the worker's share
    of SHUFFLE_BUDGET_BYTES, never below one batch."""
    return min(16 * BATCH, max(BATCH, SHUFFLE_BUDGET_BYTES // WORKERS // ROW))


def test_the_default_shuffle_buffer_is_bounded_in_bytes_and_a_given_one_is_honoured():
    spec = Spec.build(np.float32, SHAPE)
    sizes = resolved_sizes(PipelineOptions(batch_size=BATCH, workers=WORKERS, shuffle=True), spec)
    assert sizes.batches_per_block == 1, "a batch over BLOCK_TARGET_BYTES is a block of its own"
    assert sizes.shuffle_rows == expected_default_shuffle_rows() == 3
    # workers x budget stays bounded: more workers, fewer rows each
    many = resolved_sizes(PipelineOptions(batch_size=BATCH, workers=16, shuffle=True), spec)
    assert many.shuffle_rows * 16 * ROW <= SHUFFLE_BUDGET_BYTES + 16 * BATCH * ROW
    # never below one batch, however large a batch is
    assert default_shuffle_rows(64, 1, ROW, workers=8) == 64
    # small rows keep the old default: 16 batches, at least two blocks
    small = Spec.build(np.float32, (16,))
    per_block = BLOCK_TARGET_BYTES // (64 * 128)
    assert resolved_sizes(PipelineOptions(batch_size=128, workers=4, shuffle=True), small).shuffle_rows == \
        max(16, 2 * min(32, per_block)) * 128
    # the user's min_after_dequeue is the user's choice
    given = resolved_sizes(PipelineOptions(batch_size=BATCH, workers=WORKERS, shuffle=True,
                                           min_after_dequeue=40), spec)
    assert given.shuffle_rows == 40


def test_the_shuffle_buffer_allocates_its_capacity_once_and_never_more_than_a_row_or_a_mib_unasked():
    row = np.zeros((1, 512, 1024), np.float32)  # 2 MiB rows
    sized = _ShuffleBuffer(np.random.default_rng(0), capacity=5)
    for i in range(5):
        sized.add([row + i])
    assert len(sized.columns[0]) == 5, "the capacity the batcher names, once"
    first = sized.columns[0]
    dest = [np.empty((2,) + row.shape[1:], np.float32)]
    sized.take_into(dest, 2)
    sized.add([np.concatenate([row, row])])
    assert sized.columns[0] is first, "refilled in place: no growth, no copy"

    unsized = _ShuffleBuffer(np.random.default_rng(0))
    unsized.add([row])
    assert len(unsized.columns[0]) == 1, "no 64-row (128 MiB) first allocation for large rows"
    small = _ShuffleBuffer(np.random.default_rng(0))
    small.add([np.zeros((1, 4), np.float32)])
    assert len(small.columns[0]) == 64


def _peak_growth(variant: str) -> int:
    proc = run_python(PEAK_SCRIPT, variant, timeout=120)
    assert proc.returncode == 0, describe(proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])["growth"]


@pytest.mark.slow
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_peak_memory_of_18mb_samples_stays_within_the_documented_bound(shuffle):
    """4 thread workers, capacity 4, batch_size 1, 18 MB samples: the peak resident set grows
    by no more than DESIGN.md's bound (plus a margin for TensorFlow).  Before the byte budget,
    the default shuffle buffer alone took 17 rows per worker: ~1.6 GB against a bound of ~0.9 GB."""
    rows = expected_default_shuffle_rows() if shuffle else 0
    bound = documented_bound(rows)
    growth = _peak_growth("shuffle" if shuffle else "ordered")
    assert growth <= bound + MARGIN, (
        f"peak RSS grew by {growth / 2**20:.0f} MiB ({growth / ROW:.1f} samples of 18 MB); "
        f"DESIGN.md's bound is {bound / 2**20:.0f} MiB ({bound / ROW:.1f} samples) + {MARGIN >> 20} MiB")
