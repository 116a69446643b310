"""TFRecord files through TF1 queues -- BEFORE the migration.

The structure of the TF1 "reading data" how-to and its fully-connected reader example:
``tf.train.Example`` records (``image_raw`` bytes, ``label`` int64, ``height``/``width``)
in TFRecord files; ``string_input_producer(files, num_epochs=...)``; a ``TFRecordReader``
reading one serialized example per op run; ``parse_single_example`` with a feature dict;
``decode_raw`` and a reshape per example; ``tf.train.batch`` with enqueue threads;
``start_queue_runners`` and the Coordinator loop that ends on ``OutOfRangeError``
(``num_epochs`` needs ``local_variables_initializer()``).

It writes synthetic records (8x8 uint8 images, 10 classes; 2 files of 300) with
``tf.io.TFRecordWriter`` in a temporary folder.  Runs on TF 2.21 through ``tf.compat.v1``.

Run: ``python compat/tfrecord_input_before.py`` prints one ``result:`` line (epochs, rows,
steps, first and last loss).  ``compat/tfrecord_input_after.py`` is the same program on queuepipe.
"""
import os
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

NUM_FILES, RECORDS_PER_FILE, SIZE, NUM_CLASSES = 2, 300, 8, 10
BATCH_SIZE, NUM_EPOCHS = 50, 2
PIXELS = SIZE * SIZE
FEATURES = {
    "image_raw": tf.FixedLenFeature([], tf.string),
    "label": tf.FixedLenFeature([], tf.int64),
}


def _int64_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def convert_to(data_dir, seed=0):
    """Synthetic images, one prototype per class plus noise, written as tf.train.Example records."""
    rng = np.random.RandomState(seed)
    prototypes = rng.uniform(0, 255, size=(NUM_CLASSES, PIXELS))
    filenames = []
    for i in range(NUM_FILES):
        filename = os.path.join(data_dir, "train-%05d-of-%05d.tfrecords" % (i, NUM_FILES))
        labels = rng.randint(0, NUM_CLASSES, size=RECORDS_PER_FILE)
        images = np.clip(prototypes[labels] + rng.normal(0, 40, size=(RECORDS_PER_FILE, PIXELS)), 0, 255)
        with tf.io.TFRecordWriter(filename) as writer:
            for image, label in zip(images.astype(np.uint8), labels):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "height": _int64_feature(SIZE),
                    "width": _int64_feature(SIZE),
                    "label": _int64_feature(int(label)),
                    "image_raw": _bytes_feature(image.tobytes())}))
                writer.write(example.SerializeToString())
        filenames.append(filename)
    return filenames


def read_and_decode(filename_queue):
    """One (image float32 [64], label int32) from the next serialized example."""
    reader = tf.TFRecordReader()
    _, serialized_example = reader.read(filename_queue)
    features = tf.parse_single_example(serialized_example, features=FEATURES)
    image = tf.decode_raw(features["image_raw"], tf.uint8)
    image.set_shape([PIXELS])
    image = tf.cast(image, tf.float32) * (1.0 / 255) - 0.5
    label = tf.cast(features["label"], tf.int32)
    return image, label


def inputs(filenames, batch_size, num_epochs):
    """Batches of (images, labels), ``num_epochs`` passes over the files, in file order."""
    filename_queue = tf.train.string_input_producer(filenames, num_epochs=num_epochs, shuffle=False)
    image, label = read_and_decode(filename_queue)
    images, labels = tf.train.batch([image, label], batch_size=batch_size, num_threads=2,
                                    capacity=1000 + 3 * batch_size, allow_smaller_final_batch=True)
    return images, labels


def main():
    tf.disable_eager_execution()
    with tempfile.TemporaryDirectory() as data_dir:
        filenames = convert_to(data_dir)

        # --- input: producer queue, TFRecordReader, parse_single_example, tf.train.batch ---
        images, labels = inputs(filenames, BATCH_SIZE, NUM_EPOCHS)

        hidden = tf.nn.relu(tf.matmul(images, tf.get_variable("hidden/weights", [PIXELS, 32])) +
                            tf.get_variable("hidden/biases", [32], initializer=tf.zeros_initializer()))
        logits = tf.matmul(hidden, tf.get_variable("softmax/weights", [32, NUM_CLASSES]))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_op = tf.train.AdamOptimizer(0.01).minimize(loss)
        batch_rows = tf.shape(labels)[0]

        losses, rows, step = [], 0, 0
        with tf.Session() as sess:
            sess.run(tf.group(tf.global_variables_initializer(), tf.local_variables_initializer()))
            coord = tf.train.Coordinator()
            threads = tf.train.start_queue_runners(sess=sess, coord=coord)
            try:
                while not coord.should_stop():
                    _, loss_value, n = sess.run([train_op, loss, batch_rows])
                    losses.append(loss_value)
                    rows += n
                    step += 1
            except tf.errors.OutOfRangeError:
                pass  # done training for NUM_EPOCHS epochs
            finally:
                coord.request_stop()
            coord.join(threads)
    print("result: epochs=%d rows=%d steps=%d loss=%.4f->%.4f" % (NUM_EPOCHS, rows, step, losses[0], losses[-1]))


if __name__ == "__main__":
    main()
