"""The user's generator, unchanged, trained through queuepipe instead of feed_dict.

Before (single-threaded; the accelerator idles while Python prepares each batch)::

    for X, y in sceneGen.generate_data():
        sess.run(train_op, feed_dict={X_ph: X, y_ph: y})

After: the same ``generate_data`` runs on several workers in the background and the
batch tensors are part of the graph.  Run: ``python examples/scene_generator.py``.
"""
from __future__ import annotations

import os
import tempfile

# Before TensorFlow loads: no C++ INFO/WARNING lines (set TF_CPP_MIN_LOG_LEVEL=0 to see them all).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from queuepipe.tools.quiet import quiet_tensorflow_import  # noqa: E402

with quiet_tensorflow_import():  # the same level for the lines TF prints while it loads
    import tensorflow as tf

import queuepipe  # noqa: E402

tf1 = tf.compat.v1


class SceneGenerator(object):
    """The user's class: opens HDF5 files, selects parts of datasets, preprocesses, yields forever."""

    def __init__(self, params):
        self.path = params["path"]
        self.window = params["window"]

    def preprocess(self, scene, label):
        centre = scene[len(scene) // 2]
        X = np.clip(centre - 0.1 * scene.mean(axis=0), -5, 5)   # some per-sample numpy work
        return X.astype(np.float32), int(label)

    def generate_data(self):
        # A different random stream per worker: seed from queuepipe.worker_info() when present.
        info = queuepipe.worker_info()
        rng = np.random.default_rng(info.seed if info else None)
        with h5py.File(self.path, "r") as f:
            series, labels = f["series"], f["labels"]
            while True:
                start = int(rng.integers(0, series.shape[0] - self.window))
                X, y = self.preprocess(series[start:start + self.window], labels[start + self.window // 2])
                yield X, y


def make_synthetic_file(path, n=20000, features=32, seed=0):
    """A long multichannel series whose label says which channel group carries a bump."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    series = rng.normal(size=(n, features)).astype(np.float32)
    series[labels == 1, : features // 2] += 1.0
    with h5py.File(path, "w") as f:
        f.create_dataset("series", data=series, chunks=(256, features))
        f.create_dataset("labels", data=labels.astype(np.int64))


def main(steps=300):
    """Train on a synthetic file in a temporary folder, removed on every way out (an exception
    or Ctrl-C included): the workers have closed the file by the time ``train`` returns."""
    with tempfile.TemporaryDirectory(prefix="queuepipe-example-") as root:
        path = os.path.join(root, "scenes.h5")
        make_synthetic_file(path)
        return train(path, steps)


def train(path, steps):
    """The training loop: ``SceneGenerator.generate_data`` feeds the graph through queuepipe."""
    sceneGen = SceneGenerator({"path": path, "window": 8})

    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(
            sceneGen.generate_data,            # unchanged: called once per worker
            output_types=(tf.float32, tf.int64),
            output_shapes=((32,), ()),
            batch_size=64, workers=2)
        X, y = pipe.batch                      # batch tensors, wired into the graph
        logits = tf.matmul(X, tf1.get_variable("w", [32, 2]))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        train_op = tf1.train.AdamOptimizer(0.01).minimize(loss)

        l = float("nan")
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            with queuepipe.running(sess):
                for step in range(steps):
                    _, l = sess.run([train_op, loss])
                    if step % 100 == 0:
                        print(f"step {step:4d}  loss {l:.3f}")
    print(f"final loss {l:.3f}")
    return l


if __name__ == "__main__":
    main()
