"""The MNIST-tutorial-style program of ``compat/feed_dict_before.py`` -- AFTER the migration:
its generator now runs on queuepipe's workers and the batch is part of the graph.

What changed (``diff compat/feed_dict_before.py compat/feed_dict_after.py``), all on the
input side -- the model, the optimiser and the data files are the same:

- ``import queuepipe``;
- ``gen`` takes its shard of the epoch: with ``workers=2`` each worker calls ``gen()`` and
  would otherwise deliver every row once *per worker*; ``queuepipe.worker_info()`` gives
  the worker's index and count (and ``None`` outside a worker, so ``gen`` still works alone).
  Each worker shuffles its own shard; its seed comes from the worker and the epoch;
- the two placeholders become ``x, y_ = pipe.batch`` from ``queuepipe.from_generator(...,
  yields="blocks")`` -- ``gen`` yields whole batches, which queuepipe takes as blocks of
  rows and re-cuts into batches of ``BATCH``; ``num_epochs=EPOCHS`` calls ``gen`` again
  for each epoch;
- the loop runs ``sess.run([train_step, cross_entropy, ...])`` with no ``feed_dict`` until
  the end of data (``tf.errors.OutOfRangeError``), inside ``queuepipe.running(sess)``,
  which starts the workers and stops them on the way out.

Run: ``python compat/feed_dict_after.py`` prints the same ``result:`` line as the before
(epochs, rows, steps; the losses differ a little: the rows arrive in another order).
"""
import functools
import gzip
import os
import struct
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

import queuepipe

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
    """One epoch of shuffled (images, one-hot labels) batches of this worker's shard."""
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).reshape(-1, 784)
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))
    info = queuepipe.worker_info()  # which worker of how many (None outside queuepipe)
    index, count = (info.index, info.count) if info else (0, 1)
    mine = np.arange(index, len(labels), count)
    order = mine[np.random.RandomState(seed + 1000 * (info.epoch if info else 0)).permutation(len(mine))]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield images[idx].astype(np.float32) / 255.0, np.eye(CLASSES, dtype=np.float32)[labels[idx]]


def main():
    tf.disable_v2_behavior()
    with tempfile.TemporaryDirectory() as data_dir:
        write_synthetic_mnist(data_dir)

        # --- input: gen() on two workers; the batch is a pair of graph tensors ---
        pipe = queuepipe.from_generator(
            functools.partial(gen, data_dir, BATCH), output_types=(tf.float32, tf.float32),
            output_shapes=((784,), (CLASSES,)), yields="blocks", batch_size=BATCH, workers=2,
            num_epochs=EPOCHS, allow_smaller_final_batch=True)
        x, y_ = pipe.batch
        batch_rows = tf.shape(x)[0]

        # --- the model: softmax regression, as in the tutorial ---
        W = tf.Variable(tf.zeros([784, CLASSES]))
        b = tf.Variable(tf.zeros([CLASSES]))
        y = tf.matmul(x, W) + b
        cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(labels=y_, logits=y))
        train_step = tf.train.GradientDescentOptimizer(0.5).minimize(cross_entropy)

        losses, rows, steps = [], 0, 0
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # --- the training loop: no feed_dict; it ends with the data ---
            with queuepipe.running(sess):
                try:
                    while True:
                        _, loss, n = sess.run([train_step, cross_entropy, batch_rows])
                        losses.append(loss)
                        rows += n
                        steps += 1
                except tf.errors.OutOfRangeError:
                    pass
    print("result: epochs=%d rows=%d steps=%d loss=%.4f->%.4f" % (EPOCHS, rows, steps, losses[0], losses[-1]))


if __name__ == "__main__":
    main()
