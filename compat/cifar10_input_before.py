"""CIFAR-10-tutorial-style input: binary record files through TF1 queues -- BEFORE the migration.

The structure of the TF1 CIFAR-10 tutorial's ``cifar10_input.py``: ``data_batch_N.bin``
files of records of 1 label byte + 3072 image bytes (32x32x3, channel-major);
``string_input_producer`` over the file names; a ``FixedLengthRecordReader`` and
``decode_raw`` turning one record into one example; per-example distortion (random crop,
flip, brightness, contrast, ``per_image_standardization``); ``shuffle_batch`` with
``num_threads`` enqueue threads; ``start_queue_runners`` and a Coordinator in the training
loop.  Here it trains for ``num_epochs=2`` (so ``local_variables_initializer()`` is
needed: the epoch counter is a local variable) until ``OutOfRangeError``.

These APIs still exist in TF 2.21 as ``tf.compat.v1.*`` (deprecated, with warnings) and run
with eager execution and the v2 behaviour turned off, which is what this program does.  It
writes synthetic files in CIFAR-10's binary format (2 files of 250 records; each class has
its own colour) in a temporary folder.

Run: ``python compat/cifar10_input_before.py`` prints one ``result:`` line (epochs, rows,
steps, first and last loss).  ``compat/cifar10_input_after.py`` is the same program on queuepipe.
"""
import os
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

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


def read_cifar10(filename_queue):
    """One example from the files of ``filename_queue``: (uint8 image [32, 32, 3], int32 label [1])."""
    reader = tf.FixedLengthRecordReader(record_bytes=RECORD_BYTES)
    key, value = reader.read(filename_queue)
    record = tf.decode_raw(value, tf.uint8)
    label = tf.cast(tf.strided_slice(record, [0], [LABEL_BYTES]), tf.int32)
    depth_major = tf.reshape(tf.strided_slice(record, [LABEL_BYTES], [RECORD_BYTES]), [DEPTH, HEIGHT, WIDTH])
    return tf.transpose(depth_major, [1, 2, 0]), label


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
    filename_queue = tf.train.string_input_producer(filenames, num_epochs=num_epochs)
    uint8image, label = read_cifar10(filename_queue)
    float_image = distort(uint8image)
    float_image.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    label.set_shape([1])
    min_queue_examples = int(NUM_EXAMPLES_PER_EPOCH * 0.4)
    images, label_batch = tf.train.shuffle_batch(
        [float_image, label], batch_size=batch_size, num_threads=4,
        capacity=min_queue_examples + 3 * batch_size, min_after_dequeue=min_queue_examples,
        allow_smaller_final_batch=True)
    return images, tf.reshape(label_batch, [-1])


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

        # --- input: producer queue, reader, per-example distortion, shuffle_batch ---
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
