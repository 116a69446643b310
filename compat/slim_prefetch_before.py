"""A two-tower slim-style training script over a TF1 batch -- BEFORE the migration.

Multi-GPU programs built on TF-Slim (``model_deploy``, ``train_image_classifier.py``) batch
their input with ``tf.train.batch``, put the batch into ``slim.prefetch_queue.prefetch_queue``
and call ``batch_queue.dequeue()`` once per tower; the towers' gradients are averaged.
``tf.contrib.slim`` no longer exists in TensorFlow 2.x, so ``prefetch_queue`` below reproduces
slim's function -- a ``FIFOQueue`` of ``capacity`` batches with the batch's shapes, a
``QueueRunner`` of ``num_threads`` enqueue threads in ``QUEUE_RUNNERS``, its
``fraction_of_<capacity>_full`` summary, the queue returned -- and the program runs on TF 2.21
as it ran on TF 1.x.  The input: ``slice_input_producer`` over in-memory synthetic arrays,
``tf.train.batch``.

Run: ``python compat/slim_prefetch_before.py`` trains a softmax classifier on two towers
(``/gpu:0`` and ``/gpu:1`` when there are GPUs, else both on the CPU) for 3 epochs and prints
one ``OK:`` line: towers, steps, that every sample was seen once per epoch, that it learnt.
``compat/slim_prefetch_after.py`` is this program with the input part (between the ``# ---
input`` markers) on queuepipe.

What this "before" cannot show: when its reader fails, the prefetch queue's thread reports it
to the Coordinator and the towers see ``OutOfRangeError`` -- a silent end of data -- or, with
no Coordinator, wait forever.
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
def input_batch():
    """TF1's input: one row at a time from a producer queue, batched by ``tf.train.batch``."""
    ids, x, y = synthetic_data()
    row_id, row_x, row_y = tf.train.slice_input_producer([ids, x, y], num_epochs=EPOCHS, shuffle=False)
    return tf.train.batch([row_id, row_x, row_y], batch_size=BATCH, num_threads=1, capacity=4 * BATCH)


def prefetch_queue(tensors, capacity=8, num_threads=1, dynamic_pad=False, shared_name=None, name=None):
    """slim's ``prefetch_queue``, as ``tf.contrib.slim.prefetch_queue`` had it."""
    if isinstance(tensors, dict):
        names = sorted(tensors)
        tensor_list = [tensors[n] for n in names]
    else:
        names, tensor_list = None, list(tensors)
    with tf.name_scope(name, "prefetch_queue", tensor_list) as name:
        dtypes = [t.dtype for t in tensor_list]
        shapes = [t.get_shape() for t in tensor_list]
        queue_class = tf.PaddingFIFOQueue if dynamic_pad else tf.FIFOQueue
        queue = queue_class(capacity=capacity, dtypes=dtypes, shapes=shapes, names=names,
                            shared_name=shared_name)
        enqueue_op = queue.enqueue(tensors)
        tf.train.add_queue_runner(tf.train.QueueRunner(queue, [enqueue_op] * num_threads))
        tf.summary.scalar("fraction_of_%d_full" % capacity, tf.cast(queue.size(), tf.float32) * (1.0 / capacity))
        return queue
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
