"""An MNIST-tutorial-style program fed through ``feed_dict`` -- BEFORE the migration.

The shape of the classic TF1 beginners' tutorial: softmax regression on MNIST, a Python
generator of shuffled batches, and a training loop that hands every batch to
``sess.run(train_step, feed_dict={x: X, y_: y})``.  The accelerator waits while Python
shuffles, slices and copies each batch; nothing overlaps.

The tutorial loaded MNIST with ``tensorflow.examples.tutorials.mnist.input_data``, which is
gone from TensorFlow 2: this program carries the few lines that read MNIST's IDX files
(``read_idx``), and writes a synthetic MNIST in that format (gzipped IDX, 28x28 uint8
images, one-hot labels) in a temporary folder, so it runs as it is.

Run: ``python compat/feed_dict_before.py`` prints one ``result:`` line (epochs, rows, steps,
first and last loss).  ``compat/feed_dict_after.py`` is the same program on queuepipe.
"""
import gzip
import os
import struct
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

N_TRAIN, BATCH, EPOCHS, CLASSES = 2000, 100, 2, 10


def write_synthetic_mnist(data_dir, n=N_TRAIN, seed=0):
    """``train-images-idx3-ubyte.gz`` / ``train-labels-idx1-ubyte.gz``: each digit class is a
    fixed random 28x28 pattern plus noise, so softmax regression can learn it."""
    rng = np.random.RandomState(seed)
    prototypes = rng.uniform(0, 1, size=(CLASSES, 28, 28))
    labels = rng.randint(0, CLASSES, size=n).astype(np.uint8)
    images = np.clip(160 * prototypes[labels] + rng.normal(0, 40, size=(n, 28, 28)), 0, 255).astype(np.uint8)
    with gzip.open(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes())
    with gzip.open(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">ii", 2049, n) + labels.tobytes())


def read_idx(path):
    """An IDX file (MNIST's format) as a numpy array: big-endian header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        magic = struct.unpack(">i", f.read(4))[0]
        dims = struct.unpack(">" + "i" * (magic & 0xFF), f.read(4 * (magic & 0xFF)))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def gen(data_dir, batch_size, seed=0):
    """One epoch of shuffled (images, one-hot labels) batches, as the tutorial's next_batch gave them."""
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).reshape(-1, 784)
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))
    order = np.random.RandomState(seed).permutation(len(labels))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield images[idx].astype(np.float32) / 255.0, np.eye(CLASSES, dtype=np.float32)[labels[idx]]


def main():
    tf.disable_v2_behavior()
    with tempfile.TemporaryDirectory() as data_dir:
        write_synthetic_mnist(data_dir)

        # --- input: placeholders, fed by the loop below ---
        x = tf.placeholder(tf.float32, [None, 784])
        y_ = tf.placeholder(tf.float32, [None, CLASSES])

        # --- the model: softmax regression, as in the tutorial ---
        W = tf.Variable(tf.zeros([784, CLASSES]))
        b = tf.Variable(tf.zeros([CLASSES]))
        y = tf.matmul(x, W) + b
        cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(labels=y_, logits=y))
        train_step = tf.train.GradientDescentOptimizer(0.5).minimize(cross_entropy)

        losses, rows, steps = [], 0, 0
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # --- the training loop: one feed_dict per batch ---
            for epoch in range(EPOCHS):
                for X, Y in gen(data_dir, BATCH, seed=epoch):
                    _, loss = sess.run([train_step, cross_entropy], feed_dict={x: X, y_: Y})
                    losses.append(loss)
                    rows += len(X)
                    steps += 1
    print("result: epochs=%d rows=%d steps=%d loss=%.4f->%.4f" % (EPOCHS, rows, steps, losses[0], losses[-1]))


if __name__ == "__main__":
    main()
