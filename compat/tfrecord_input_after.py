"""The TFRecord program of ``compat/tfrecord_input_before.py`` -- AFTER the migration: the
records are read and parsed by queuepipe's workers, a batch at a time.

What changed (``diff compat/tfrecord_input_before.py compat/tfrecord_input_after.py``), all in
the input functions -- the feature dict, the record files, the model and the training loop
(``start_queue_runners``, the Coordinator, ``OutOfRangeError`` at the end: queuepipe's
runner sits in the same ``QUEUE_RUNNERS`` collection) are the same:

- ``read_and_decode`` (``TFRecordReader`` + ``parse_single_example``, one record per op run)
  is gone; ``inputs`` calls ``queuepipe.tfrecords(filenames, FEATURES, ...)`` -- the same
  feature dict -- in place of ``string_input_producer`` + ``tf.train.batch``.  Workers parse
  the records (queuepipe's own ``tf.train.Example`` decoder, no TensorFlow in them);
- ``decode_raw`` and the scaling now run once on the whole batch (``[batch]`` strings ->
  ``[batch, 64]``) instead of once per example;
- ``num_threads=2`` becomes ``workers=2``; ``num_epochs`` is counted by the workers, so
  ``local_variables_initializer()`` is no longer needed (kept below, harmless).

Run: ``python compat/tfrecord_input_after.py`` prints the same ``result:`` line as the
before (epochs, rows, steps; the losses differ a little: two workers interleave blocks).
"""
import os
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

import queuepipe

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


def inputs(filenames, batch_size, num_epochs):
    """Batches of (images, labels), ``num_epochs`` passes over the files."""
    pipe = queuepipe.tfrecords(filenames, FEATURES, batch_size=batch_size, num_epochs=num_epochs,
                               workers=2, allow_smaller_final_batch=True)
    batch = pipe.batch  # {"image_raw": string [batch], "label": int64 [batch]}
    images = tf.reshape(tf.decode_raw(batch["image_raw"], tf.uint8), [-1, PIXELS])
    images = tf.cast(images, tf.float32) * (1.0 / 255) - 0.5
    labels = tf.cast(batch["label"], tf.int32)
    return images, labels


def main():
    tf.disable_eager_execution()
    with tempfile.TemporaryDirectory() as data_dir:
        filenames = convert_to(data_dir)

        # --- input: queuepipe.tfrecords, parsed in the workers, decoded per batch ---
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
