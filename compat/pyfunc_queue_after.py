"""The ``py_func`` data-layer program of ``compat/pyfunc_queue_before.py`` -- AFTER the
migration: queuepipe reads the HDF5 file, in blocks, on two workers.

What changed (``diff compat/pyfunc_queue_before.py compat/pyfunc_queue_after.py``), all on
the input side -- the file, the model and the session code are the same:

- the ``HDF5DataLayer`` class, the ``py_func``, the ``RandomShuffleQueue``, its enqueue op
  and the ``QueueRunner`` / ``add_queue_runner`` lines are gone: ``queuepipe.from_hdf5(path,
  ("X", "y"), shuffle=True, num_epochs=EPOCHS, workers=2)`` replaces them, and ``X, Y =
  pipe.batch`` replaces ``queue.dequeue_many(BATCH)``.  Rows are read in chunk-aligned
  blocks (not one h5py call per row), shuffled by block order plus a row buffer per worker
  (``min_after_dequeue``), each row exactly once per epoch;
- the loop runs until the end of data (``OutOfRangeError`` after ``EPOCHS`` epochs)
  instead of a step count computed from the file's length;
- ``start_queue_runners`` and the Coordinator stay: queuepipe's runner is in the graph's
  ``QUEUE_RUNNERS`` collection (``with queuepipe.running(sess):`` would do the same).

Keeping your own read function instead (it decodes, augments, reads several files...):
wrap it in a generator and hand that to ``queuepipe.from_generator`` -- MIGRATION.md,
"py_func + FIFOQueue + QueueRunner", shows it.

It writes the same synthetic HDF5 file as the before.  Run: ``python compat/pyfunc_queue_after.py``
prints the same ``result:`` line as the before (epochs, rows, steps; another loss: other shuffling).
"""
import os
import tempfile

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

import queuepipe

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


def main():
    tf.disable_eager_execution()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.h5")
        make_file(path)

        # --- input: queuepipe reads, shuffles and batches the file on two workers ---
        pipe = queuepipe.from_hdf5(path, ("X", "y"), batch_size=BATCH, shuffle=True, seed=0,
                                   num_epochs=EPOCHS, workers=2)
        X, Y = pipe.batch

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
                while not coord.should_stop():
                    _, loss_value, n = sess.run([train_op, loss, batch_rows])
                    losses.append(loss_value)
                    rows += n
                    steps += 1
            except tf.errors.OutOfRangeError:
                pass  # EPOCHS passes over the file done
            finally:
                coord.request_stop()
                coord.join(threads)
    print("result: epochs=%d rows=%d steps=%d loss=%.4f->%.4f" % (EPOCHS, rows, steps, losses[0], losses[-1]))


if __name__ == "__main__":
    main()
