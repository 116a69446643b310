"""A tftables program, as tftables' README and how-to write it -- BEFORE the migration.

It cannot run here (tftables and multitables are not installed); it is kept as the "before"
half of a pair: ``compat/tftables_after.py`` is this program with one line changed, the
import.  ``diff compat/tftables_before.py compat/tftables_after.py`` shows it.

tftables targets TF1; under TF2, a TF1 program imports ``tensorflow.compat.v1 as tf`` and
turns eager execution off, which is what both halves do.
"""
import os
import tempfile

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

import tftables

N_ROWS, BATCH, NUM_LABELS = 96, 16, 3


def make_file(path):
    """A table (label, data) and an array of row ids, as a tftables user would have them."""
    table = np.zeros(N_ROWS, dtype=[("label", "i4"), ("data", "u1", (4,))])
    table["label"] = np.arange(N_ROWS) % NUM_LABELS
    table["data"] = (np.arange(N_ROWS * 4) % 251).reshape(N_ROWS, 4)
    with h5py.File(path, "w") as f:
        f.create_dataset("table", data=table, chunks=(32,))
        f.create_dataset("row_ids", data=np.arange(N_ROWS, dtype=np.int64))


def read_table_and_labels(path):
    """README's "slightly more involved" example: two datasets, ordered, through a FIFO loader."""
    reader = tftables.open_file(filename=path, batch_size=BATCH)
    table_batch = reader.get_batch("/table", cyclic=True, ordered=True)
    label_pl, data_pl = table_batch["label"], table_batch["data"]
    truth_batch = tf.one_hot(label_pl, NUM_LABELS, 1, 0)
    data_float = tf.cast(data_pl, tf.float32) / 255.0
    ids_batch = reader.get_batch("/row_ids", cyclic=True, ordered=True)

    loader = reader.get_fifoloader(queue_size=4, inputs=[truth_batch, data_float, ids_batch], threads=1)
    truth_cpu, data_cpu, ids_cpu = loader.dequeue()
    result = tf.reduce_sum(data_cpu, axis=1) + tf.cast(tf.argmax(truth_cpu, axis=1), tf.float32)

    seen = []
    with tf.Session() as sess:
        with loader.begin(sess):
            for _ in range(2 * N_ROWS // BATCH):  # cyclic: two passes over the file
                ids, _ = sess.run([ids_cpu, result])
                seen.extend(ids.tolist())
    reader.close()
    assert seen == list(range(N_ROWS)) * 2, "ordered access: file order, wrapping around"
    return len(seen)


def one_pass_with_load_dataset(path):
    """The how-to's ``load_dataset``: one dataset, an input transform, one non-cyclic pass."""
    def input_transform(tbl_batch):
        labels = tbl_batch["label"]
        data = tbl_batch["data"]
        truth = tf.cast(tf.one_hot(labels, NUM_LABELS, 1, 0), tf.float32)
        data_float = tf.cast(data, tf.float32)
        return truth, data_float

    loader = tftables.load_dataset(filename=path, dataset_path="/table", input_transform=input_transform,
                                   batch_size=BATCH, cyclic=False, ordered=False, processes=2)
    truth_batch, data_batch = loader.dequeue()
    total = tf.reduce_sum(data_batch)
    rows = 0
    grand_total = 0.0
    with tf.Session() as sess:
        with loader.begin(sess):  # catch_termination: the end of the pass ends the loop quietly
            while True:
                t, s = sess.run([truth_batch, total])
                rows += len(t)
                grand_total += s
    expected = float((np.arange(N_ROWS * 4) % 251).sum())
    assert rows == N_ROWS and grand_total == expected, (rows, grand_total, expected)
    return rows


def feed_dicts(path):
    """README's quick start: placeholders fed from ``reader.feed()``."""
    reader = tftables.open_file(filename=path, batch_size=BATCH)
    ids_pl = reader.get_batch("/row_ids")
    doubled = ids_pl * 2
    out = []
    with tf.Session() as sess:
        for i, feed_dict in enumerate(reader.feed()):
            out.extend(sess.run(doubled, feed_dict=feed_dict).tolist())
            if i >= 2:
                break
    reader.close()
    assert out == [2 * i for i in range(3 * BATCH)]
    return len(out)


def main():
    tf.disable_eager_execution()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.h5")
        make_file(path)
        a = read_table_and_labels(path)
        b = one_pass_with_load_dataset(path)
        c = feed_dicts(path)
    print(f"OK: fifo loader {a} rows in file order, load_dataset one pass of {b} rows, feed {c} rows")


if __name__ == "__main__":
    main()
