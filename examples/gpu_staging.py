"""Batches on the GPU before the step needs them: ``pipe.staged()``.

Without staging, the step that dequeues batch N also copies it from the host to the GPU,
so the copy is on the critical path of every step. ``pipe.staged(device, depth=1)`` gives
the same tensors, already on ``device``: a thread of the pipeline's queue runner copies
batch N+1 while step N runs. Nothing else changes: ``MonitoredTrainingSession`` starts it
with the workers, and the loop ends at ``OutOfRangeError`` as before.

Runs on the CPU when TensorFlow sees no GPU (``staged()`` then stages onto ``/cpu:0``,
where there is no copy to hide). Prints where the staged ops were placed.
Run: ``python examples/gpu_staging.py`` (a few seconds).
"""
from __future__ import annotations

import os

# Before TensorFlow loads: no C++ INFO/WARNING lines (set TF_CPP_MIN_LOG_LEVEL=0 to see them all).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from queuepipe.tools.quiet import quiet_tensorflow_import  # noqa: E402

with quiet_tensorflow_import():  # the same level for the lines TF prints while it loads
    import tensorflow as tf

import queuepipe  # noqa: E402

tf1 = tf.compat.v1
tf.get_logger().setLevel("ERROR")  # no deprecation notices for the TF1 APIs this example uses on purpose
FEATURES, CLASSES, SAMPLES = 64, 10, 20_000


def samples():
    """A stand-in for your generator: (features, label) pairs, shard-aware."""
    info = queuepipe.worker_info()
    index, count = (info.index, info.count) if info else (0, 1)
    rng = np.random.default_rng(index)
    centers = np.random.default_rng(0).normal(size=(CLASSES, FEATURES)).astype(np.float32)
    for _ in range(index, SAMPLES, count):
        label = int(rng.integers(CLASSES))
        yield centers[label] + rng.normal(scale=0.5, size=FEATURES).astype(np.float32), np.int64(label)


def main() -> None:
    gpu = bool(tf.config.list_physical_devices("GPU"))
    device = "/gpu:0" if gpu else "/cpu:0"
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(samples, (tf.float32, tf.int64), ((FEATURES,), ()),
                                        batch_size=256, workers=2, allow_smaller_final_batch=True)
        X, y = pipe.staged(device, depth=1)           # the only line that differs from pipe.batch
        with tf.device(device):
            w = tf1.get_variable("w", [FEATURES, CLASSES], initializer=tf1.zeros_initializer())
            b = tf1.get_variable("b", [CLASSES], initializer=tf1.zeros_initializer())
            logits = tf.matmul(X, w) + b
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            step = tf1.train.get_or_create_global_step()
            train = tf1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=step)
        seen = 0
        config = tf1.ConfigProto(allow_soft_placement=True)
        with tf1.train.MonitoredTrainingSession(config=config) as sess:
            while not sess.should_stop():
                _, labels, value = sess.run([train, y, loss])
                seen += len(labels)
        print(f"device: {device} ({'GPU found' if gpu else 'no GPU: staged on the CPU'})")
        print("staged ops: " + ", ".join(f"{op.type} on {op.device}" for op in pipe.staging.ops()))
        print(f"trained on {seen} samples (every sample once), last loss {value:.3f}")


if __name__ == "__main__":
    main()
