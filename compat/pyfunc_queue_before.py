"""A ``py_func`` HDF5 data layer feeding a TF1 queue -- BEFORE the migration.

A pattern of many TF1 research codebases: a Python class opens the HDF5 file with h5py and
returns ONE sample per call; ``tf.py_func`` makes that call a graph op; a
``RandomShuffleQueue`` is filled by ``QueueRunner`` threads (registered with
``add_queue_runner``) that run the py_func and the enqueue op; the model takes
``dequeue_many(BATCH)``.  The layer cycles through the file forever, so the training loop
runs a fixed number of steps (``EPOCHS * rows // BATCH``) and stops the threads itself.

Costs: one ``sess.run``-level Python call per sample, holding the GIL; h5py's global lock
serialises the reads of all enqueue threads; one h5py call per row.

It writes a synthetic HDF5 file (``/X`` float32 [1024, 16], ``/y`` int64, 4 classes) in a
temporary folder.  Runs on TF 2.21 through ``tf.compat.v1``.

Run: ``python compat/pyfunc_queue_before.py`` prints one ``result:`` line (epochs, rows,
steps, first and last loss).  ``compat/pyfunc_queue_after.py`` is the same program on queuepipe.
"""
import os
import tempfile
import threading

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

N, D, CLASSES, BATCH, EPOCHS = 1024, 16, 4, 64, 2


def make_file(path, seed=0):
    """Rows whose class is the nearest of 4 centres."""
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 2, size=(CLASSES, D))
    y = rng.randint(0, CLASSES, size=N)
    X = (centres[y] + rng.normal(0, 1, size=(N, D))).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(128, D))
        f.create_dataset("y", data=y.astype(np.int64))


class HDF5DataLayer(object):
    """The user's data layer: a shuffled pass over the rows, again and again, one row per call."""

    def __init__(self, path, seed=0):
        self.h5 = h5py.File(path, "r")
        self.X, self.y = self.h5["X"], self.h5["y"]
        self.n = len(self.y)
        self.rng = np.random.RandomState(seed)
        self.order, self.pos = self.rng.permutation(self.n), 0
        self.lock = threading.Lock()

    def read_sample(self):
        with self.lock:  # called from several QueueRunner threads at once
            if self.pos == self.n:
                self.order, self.pos = self.rng.permutation(self.n), 0
            i = self.order[self.pos]
            self.pos += 1
            return self.X[i], self.y[i]

    def close(self):
        self.h5.close()


def main():
    tf.disable_eager_execution()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.h5")
        make_file(path)

        # --- input: py_func reads one sample; QueueRunner threads fill a RandomShuffleQueue ---
        layer = HDF5DataLayer(path)
        x, y = tf.py_func(layer.read_sample, [], [tf.float32, tf.int64], stateful=True)
        x.set_shape([D])
        y.set_shape([])
        queue = tf.RandomShuffleQueue(capacity=512, min_after_dequeue=256, dtypes=[tf.float32, tf.int64],
                                      shapes=[[D], []])
        enqueue_op = queue.enqueue([x, y])
        tf.train.add_queue_runner(tf.train.QueueRunner(queue, [enqueue_op] * 2))
        X, Y = queue.dequeue_many(BATCH)
        num_steps = EPOCHS * layer.n // BATCH

        logits = tf.matmul(X, tf.get_variable("w", [D, CLASSES])) + tf.get_variable("b", [CLASSES])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=Y, logits=logits))
        train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        batch_rows = tf.shape(Y)[0]

        losses, rows, steps = [], 0, 0
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            coord = tf.train.Coordinator()
            threads = tf.train.start_queue_runners(sess=sess, coord=coord)
            try:
                for _ in range(num_steps):
                    _, loss_value, n = sess.run([train_op, loss, batch_rows])
                    losses.append(loss_value)
                    rows += n
                    steps += 1
            finally:
                coord.request_stop()
                coord.join(threads)
        layer.close()
    print("result: epochs=%d rows=%d steps=%d loss=%.4f->%.4f" % (EPOCHS, rows, steps, losses[0], losses[-1]))


if __name__ == "__main__":
    main()
