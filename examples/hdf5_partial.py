"""Train on *parts* of HDF5 datasets: ``queuepipe.from_hdf5`` + a ``map_fn`` replaces a generator.

Before -- the user's generator opens the files, picks the training rows, preprocesses
row by row and yields ``(X, y)``; every batch is fed with ``feed_dict``, one row per
Python step, while the model waits::

    def generate_data(self):
        for path in self.files:
            with h5py.File(path, "r") as f:
                train = np.flatnonzero(f["split"][...] == 0)
                for i in train:
                    X = (f["features"][i] - self.mean) / self.std   # one h5py call per row
                    yield np.clip(X, -4, 4).astype(np.float32), f["labels"][i]

After -- the same selection and preprocessing, declared: ``rows=`` picks the training
rows of each file, reads are planned in large slabs, ``map_fn`` standardises whole
blocks in numpy inside the workers, and batches arrive as graph tensors.
Run: ``python examples/hdf5_partial.py`` (a few seconds).
"""
from __future__ import annotations

import functools
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
FEATURES = 16


def make_synthetic_files(root, sizes=(6000, 4000), seed=0):
    """Files with features, labels and a train/test split column (0 = train)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, n in enumerate(sizes):
        labels = rng.integers(0, 2, size=n)
        features = rng.normal(3.0, 2.0, size=(n, FEATURES)).astype(np.float32)
        features[labels == 1, :4] += 1.5                       # the signal
        path = os.path.join(root, f"part{i}.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=features, chunks=(512, FEATURES), compression="gzip")
            f.create_dataset("labels", data=labels.astype(np.int64))
            f.create_dataset("split", data=(rng.random(n) < 0.2).astype(np.int8))
        paths.append(path)
    return paths


def training_rows(path, n_rows):
    """rows= callable: this file's training rows (file-local ids), asked once per file."""
    with h5py.File(path, "r") as f:
        return np.flatnonzero(f["split"][...] == 0)


def standardise(block, mean, std):
    """map_fn: the generator's per-row preprocessing, on a whole block at once."""
    X, y = block
    return np.clip((X - mean) / std, -4, 4).astype(np.float32), y


def main(steps=300):
    with tempfile.TemporaryDirectory() as root:
        return train(make_synthetic_files(root), steps)


def train(paths, steps):
    mean, std = 3.0, 2.0
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(
            paths, ("features", "labels"),
            rows=training_rows,                                # only the training split
            map_fn=functools.partial(standardise, mean=mean, std=std),
            output_types=(tf.float32, tf.int64), output_shapes=((FEATURES,), ()),
            batch_size=64, shuffle=True, seed=0, num_epochs=None, workers=2)
        X, y = pipe.batch
        logits = tf.matmul(X, tf1.get_variable("w", [FEATURES, 2])) + tf1.get_variable("b", [2])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        train_op = tf1.train.AdamOptimizer(0.02).minimize(loss)

        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            with queuepipe.running(sess):
                losses = []
                for step in range(steps):
                    _, value = sess.run([train_op, loss])
                    losses.append(value)
                    if step % 100 == 0:
                        print(f"step {step:4d}  loss {value:.3f}")
    final = float(np.mean(losses[-50:]))
    print(f"mean loss of the last 50 steps {final:.3f}")
    return final


if __name__ == "__main__":
    main()
