"""The CIFAR-10-tutorial-style program of ``compat/cifar10_input_before.py`` -- AFTER the
migration: the records are read, shuffled and batched by queuepipe's workers.

What changed (``diff compat/cifar10_input_before.py compat/cifar10_input_after.py``), all in
the input functions -- the model, the loss, the training loop (``start_queue_runners`` and
the Coordinator: queuepipe's runner sits in the same ``QUEUE_RUNNERS`` collection) and the
data files are the same:

- ``read_cifar10`` (``FixedLengthRecordReader`` + ``decode_raw``, one record per op run) is
  gone: ``queuepipe.fixed_length_records(filenames, RECORD_BYTES, ...)`` replaces it and
  ``string_input_producer`` + ``shuffle_batch``; the batch is ``uint8 [batch, 3073]``,
  whole records, split into label and image with two slices over the batch;
- ``distort`` is unchanged and still runs per example: ``queuepipe.per_sample(distort,
  images)`` applies it to every image of the dequeued batch (``tf.map_fn``), so it now runs
  after the queue, in the training step, instead of in the ``shuffle_batch`` threads;
- ``shuffle_batch``'s ``min_after_dequeue`` becomes the workers' shuffle buffer
  (``shuffle=True, min_after_dequeue=...``, per worker), ``num_threads=4`` becomes
  ``workers=2``, and ``overlap_epochs=True`` keeps ``shuffle_batch``'s mixing of
  neighbouring epochs;
- ``num_epochs`` is counted by the workers: ``local_variables_initializer()`` is no longer
  needed (it is kept below, harmless, as the only line of the loop that could go).

Run: ``python compat/cifar10_input_after.py`` prints the same ``result:`` line as the
before (epochs, rows, steps; the losses differ: other shuffling, other random distortions).
"""
import os
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

import queuepipe

NUM_FILES, RECORDS_PER_FILE = 2, 250
NUM_EXAMPLES_PER_EPOCH = NUM_FILES * RECORDS_PER_FILE
BATCH_SIZE, NUM_EPOCHS, NUM_CLASSES, IMAGE_SIZE = 50, 2, 10, 24
LABEL_BYTES, HEIGHT, WIDTH, DEPTH = 1, 32, 32, 3
IMAGE_BYTES = HEIGHT * WIDTH * DEPTH
RECORD_BYTES = LABEL_BYTES + IMAGE_BYTES  # 3073


def write_synthetic_cifar10(data_dir, seed=0):
    """``data_batch_1.bin`` ... : CIFAR-10's binary layout, label byte then R, G, B planes."""
    rng = np.random.RandomState(seed)
    colours = rng.uniform(40, 215, size=(NUM_CLASSES, DEPTH))
    for i in range(1, NUM_FILES + 1):
        labels = rng.randint(0, NUM_CLASSES, size=RECORDS_PER_FILE)
        images = colours[labels][:, :, None, None] + rng.normal(0, 30, size=(RECORDS_PER_FILE, DEPTH, HEIGHT, WIDTH))
        records = np.concatenate([labels[:, None].astype(np.uint8),
                                  np.clip(images, 0, 255).astype(np.uint8).reshape(RECORDS_PER_FILE, -1)], axis=1)
        records.tofile(os.path.join(data_dir, "data_batch_%d.bin" % i))


def distort(uint8image):
    """The training distortions, on ONE example."""
    image = tf.cast(uint8image, tf.float32)
    image = tf.random_crop(image, [IMAGE_SIZE, IMAGE_SIZE, 3])
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, max_delta=63)
    image = tf.image.random_contrast(image, lower=0.2, upper=1.8)
    return tf.image.per_image_standardization(image)


def distorted_inputs(data_dir, batch_size, num_epochs):
    """Shuffled batches of distorted images, and their labels."""
    filenames = [os.path.join(data_dir, "data_batch_%d.bin" % i) for i in range(1, NUM_FILES + 1)]
    min_queue_examples = int(NUM_EXAMPLES_PER_EPOCH * 0.4)
    pipe = queuepipe.fixed_length_records(
        filenames, RECORD_BYTES, batch_size=batch_size, num_epochs=num_epochs, shuffle=True,
        min_after_dequeue=min_queue_examples, overlap_epochs=True, workers=2,
        allow_smaller_final_batch=True)
    records = pipe.batch  # uint8 [batch, 3073]: label byte, then the R, G, B planes
    labels = tf.cast(records[:, 0], tf.int32)
    uint8images = tf.transpose(tf.reshape(records[:, LABEL_BYTES:], [-1, DEPTH, HEIGHT, WIDTH]), [0, 2, 3, 1])
    images = queuepipe.per_sample(distort, uint8images)  # the same per-example function, per image
    return images, labels


def inference(images):
    """A small convnet: conv 5x5 + relu, global average pool, softmax layer."""
    kernel = tf.get_variable("conv1/weights", [5, 5, 3, 32], initializer=tf.truncated_normal_initializer(stddev=0.05))
    conv = tf.nn.relu(tf.nn.conv2d(images, kernel, [1, 1, 1, 1], padding="SAME"))
    pooled = tf.reduce_mean(conv, axis=[1, 2])
    weights = tf.get_variable("softmax/weights", [32, NUM_CLASSES], initializer=tf.zeros_initializer())
    biases = tf.get_variable("softmax/biases", [NUM_CLASSES], initializer=tf.zeros_initializer())
    return tf.matmul(pooled, weights) + biases


def main():
    tf.disable_v2_behavior()
    with tempfile.TemporaryDirectory() as data_dir:
        write_synthetic_cifar10(data_dir)

        # --- input: queuepipe's workers read and shuffle; per-example distortion after the queue ---
        images, labels = distorted_inputs(data_dir, BATCH_SIZE, NUM_EPOCHS)

        logits = inference(images)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_op = tf.train.AdamOptimizer(0.01).minimize(loss)
        batch_rows = tf.shape(labels)[0]

        losses, rows, steps = [], 0, 0
        with tf.Session() as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            coord = tf.train.Coordinator()
            threads = tf.train.start_queue_runners(sess=sess, coord=coord)
            try:
                while not coord.should_stop():
                    _, loss_value, n = sess.run([train_op, loss, batch_rows])
                    losses.append(loss_value)
                    rows += n
                    steps += 1
            except tf.errors.OutOfRangeError:
                pass  # num_epochs reached
            finally:
                coord.request_stop()
            coord.join(threads)
    print("result: epochs=%d rows=%d steps=%d loss=%.4f->%.4f" % (NUM_EPOCHS, rows, steps, losses[0], losses[-1]))


if __name__ == "__main__":
    main()
