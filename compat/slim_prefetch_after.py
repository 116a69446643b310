"""The two-tower slim-style script of ``compat/slim_prefetch_before.py`` -- AFTER the migration.

Only the input part differs (the lines between the ``# --- input`` markers; the rest is the
same, line for line): ``input_batch()`` builds a ``queuepipe.from_generator`` pipeline (two
workers, each its shard of the samples, 3 epochs) instead of ``slice_input_producer`` +
``tf.train.batch``, and ``prefetch_queue`` is imported from ``queuepipe.compat.slim`` instead
of being slim's own.  ``batch_queue.dequeue()`` then gives every tower a fresh batch of the
pipeline -- no second queue -- with the one-hot labels computed on it; ``start_queue_runners``
and the Coordinator start and stop the workers as before.

Run: ``python compat/slim_prefetch_after.py`` prints the same kind of ``OK:`` line as the
before (towers, steps, every sample once per epoch, that it learnt).  What the before could not
do: a worker's error raises in the towers' ``sess.run`` with its own type and text, never as
an ``OutOfRangeError`` and never as a hang (tests/test_compat_slim.py).
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

N_SAMPLES, FEATURES, CLASSES, BATCH, EPOCHS, NUM_TOWERS = 512, 8, 3, 32, 3, 2


def synthetic_data(n=N_SAMPLES, seed=0):
    """ids, features and labels: the label is the argmax of a fixed linear map of the features."""
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(FEATURES, CLASSES)), axis=1).astype(np.int64)
    return np.arange(n, dtype=np.int64), x, y


# --- input ---
import queuepipe  # noqa: E402
from queuepipe.compat.slim.prefetch_queue import prefetch_queue  # noqa: E402


def shard_of_samples():
    """This worker's share of the samples, one (id, features, label) at a time."""
    ids, x, y = synthetic_data()
    info = queuepipe.worker_info()
    for i in range(info.index, N_SAMPLES, info.count):
        yield ids[i], x[i], y[i]


def input_batch():
    """queuepipe's input: two workers run the generator; ``.batch`` is the batch tensors."""
    pipe = queuepipe.from_generator(shard_of_samples, (tf.int64, tf.float32, tf.int64), ((), (FEATURES,), ()),
                                    batch_size=BATCH, num_epochs=EPOCHS, workers=2, capacity=4 * BATCH)
    return pipe.batch
# --- end input ---


def tower_loss(images, labels):
    """A softmax classifier whose variables the towers share."""
    with tf.variable_scope("model", reuse=tf.AUTO_REUSE):
        w = tf.get_variable("w", [FEATURES, CLASSES], initializer=tf.zeros_initializer())
        b = tf.get_variable("b", [CLASSES], initializer=tf.zeros_initializer())
    logits = tf.matmul(images, w) + b
    loss = tf.losses.softmax_cross_entropy(labels, logits)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(labels, 1)), tf.int32))
    return loss, correct


def average_gradients(tower_grads):
    return [(tf.add_n([g for g, _ in pairs]) / len(pairs), pairs[0][1]) for pairs in zip(*tower_grads)]


def tower_device(i):
    gpus = len(tf.config.list_physical_devices("GPU"))
    return "/gpu:%d" % (i % gpus) if gpus else "/cpu:0"


def train():
    ids, images, labels = input_batch()
    labels = tf.one_hot(labels, CLASSES)  # slim.one_hot_encoding, before the prefetch queue
    batch_queue = prefetch_queue([ids, images, labels], capacity=2 * NUM_TOWERS)
    optimizer = tf.train.GradientDescentOptimizer(0.5)
    tower_grads, tower_ids, losses, corrects = [], [], [], []
    for i in range(NUM_TOWERS):
        with tf.device(tower_device(i)), tf.name_scope("tower_%d" % i):
            ids_i, images_i, labels_i = batch_queue.dequeue()
            loss, correct = tower_loss(images_i, labels_i)
            tower_grads.append(optimizer.compute_gradients(loss))
            tower_ids.append(ids_i)
            losses.append(loss)
            corrects.append(correct)
    train_op = optimizer.apply_gradients(average_gradients(tower_grads))
    step_correct = tf.add_n(corrects)

    seen = collections.Counter()
    steps = correct_last_epoch = 0
    coord = tf.train.Coordinator()
    with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
        sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
        threads = tf.train.start_queue_runners(sess=sess, coord=coord)
        try:
            while not coord.should_stop():
                _, step_ids, correct = sess.run([train_op, tower_ids, step_correct])
                for batch_ids in step_ids:
                    seen.update(batch_ids.tolist())
                steps += 1
                if steps > (EPOCHS - 1) * N_SAMPLES // (BATCH * NUM_TOWERS):
                    correct_last_epoch += correct
        except tf.errors.OutOfRangeError:
            pass  # the end of the data
        finally:
            coord.request_stop()
        coord.join(threads)
    assert sorted(seen) == list(range(N_SAMPLES)) and set(seen.values()) == {EPOCHS}, "exactly once per epoch"
    return steps, correct_last_epoch / N_SAMPLES


def main():
    tf.disable_eager_execution()
    steps, accuracy = train()
    assert accuracy > 0.9, f"the towers did not learn: last-epoch accuracy {accuracy:.2f}"
    print(f"OK: {NUM_TOWERS} towers, {steps} steps, each of {N_SAMPLES} samples seen once per epoch "
          f"for {EPOCHS} epochs, last-epoch accuracy above 0.9")


if __name__ == "__main__":
    main()
