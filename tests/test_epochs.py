"""Epochs in delivery order (issue 12, item 8): every row of epoch k is in the queue before any
row of epoch k+1 -- with shuffling, with several workers, threads or processes -- unless the
pipeline asks for ``overlap_epochs=True`` (TF1's ``shuffle_batch`` behaviour: only the totals
hold).  Checked on the flattened delivery order: the k-th window of ``n`` delivered rows must
be exactly the selection (the one batch at a boundary holds the older rows first)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe

from helpers import drain, mode  # noqa: F401 - fixture
from sample_gens import WholeRange

tf1 = tf.compat.v1

N = 250
EPOCHS = 3


def _file(tmp_path):
    path = str(tmp_path / "rows.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("id", data=np.arange(N, dtype=np.int64), chunks=(16,))
    return path


def _delivered(pipe) -> list:
    with tf1.Session() as sess, queuepipe.running(sess):
        return np.concatenate(drain(sess, pipe.batch)).tolist()


def _windows(order, n, epochs):
    return [sorted(order[k * n:(k + 1) * n]) for k in range(epochs)]


@pytest.mark.parametrize("workers,shuffle", [(1, True), (2, False), (3, True)])
def test_hdf5_epochs_are_delivered_one_after_another(tmp_path, mode, workers, shuffle):
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(_file(tmp_path), "id", batch_size=7, workers=workers, mode=mode,
                                   shuffle=shuffle, seed=3, num_epochs=EPOCHS, batches_per_block=2,
                                   allow_smaller_final_batch=True)
        order = _delivered(pipe)
    assert len(order) == N * EPOCHS
    for k, window in enumerate(_windows(order, N, EPOCHS)):
        assert window == list(range(N)), (
            f"epoch {k}: the {N} rows delivered in its place are not the selection "
            f"({len(set(window))} distinct): epochs mixed")


def test_hdf5_overlapping_epochs_when_asked_still_deliver_each_row_once_per_epoch(tmp_path):
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(_file(tmp_path), "id", batch_size=7, workers=2, shuffle=True, seed=3,
                                   num_epochs=EPOCHS, overlap_epochs=True, allow_smaller_final_batch=True)
        order = _delivered(pipe)
    assert sorted(order) == sorted(list(range(N)) * EPOCHS)


def test_generator_epochs_with_shuffle_are_delivered_in_order(mode):
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WholeRange(N), tf.int64, (), batch_size=7, shuffle=True, seed=1,
                                        num_epochs=EPOCHS, mode=mode, allow_smaller_final_batch=True)
        order = _delivered(pipe)
    assert [sorted(w) for w in _windows(order, N, EPOCHS)] == [list(range(N))] * EPOCHS
    assert order[:N] != list(range(N)), "shuffle=True delivered the first epoch unshuffled"


def test_one_worker_without_shuffle_keeps_the_exact_order_across_epoch_boundaries():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WholeRange(37), tf.int64, (), batch_size=5, num_epochs=3,
                                        allow_smaller_final_batch=True)
        assert _delivered(pipe) == list(range(37)) * 3
