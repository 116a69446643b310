"""``queuepipe.compat.keras``: queuepipe pipelines as Keras 3 ``PyDataset`` for fit/evaluate/predict.

Real Keras 3 models (TensorFlow backend) on real HDF5 files.  Column 0 of every sample is
its row id and a pass-through layer records, in eager mode, the ids of every batch the
model actually trains on -- so the tests count how often each sample was seen.
"""
from __future__ import annotations

import pickle
import threading

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import mode  # noqa: F401
from queuepipe.compat.keras import PipelineDataset, hdf5_dataset
from sample_gens import MyDataError

N = 50
BATCH = 8  # 7 batches per pass, the last one of 2 rows


class RecordIds(keras.layers.Layer):
    """Passes features 1: on, records column 0 (the row id) of every batch it sees eagerly."""

    def __init__(self, seen, **kwargs):
        super().__init__(**kwargs)
        self.record = seen.append  # not the list itself: Keras would track (copy) a list attribute

    def call(self, x):
        if tf.executing_eagerly():
            self.record(np.rint(x.numpy()[:, 0]).astype(int).tolist())
        return x[:, 1:]


def make_model(seen):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(RecordIds(seen)(inputs)))
    model.compile(keras.optimizers.SGD(0.1), "mse", run_eagerly=True)
    return model


def make_file(path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 3)).astype(np.float32)
    X[:, 0] = np.arange(N)
    y = (2 * X[:, 1] - X[:, 2]).astype(np.float32)[:, None]
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(10, 3))
        f.create_dataset("y", data=y)
    return str(path), X, y


def flat(batches):
    return [i for b in batches for i in b]


def no_pipeline_threads():
    return not [t.name for t in threading.enumerate() if t.name.startswith("queuepipe-")]


def test_fit_sees_every_sample_once_per_epoch_and_learns(tmp_path, mode):
    path, X, y = make_file(tmp_path / "d.h5")
    seen = []
    model = make_model(seen)
    with hdf5_dataset(path, {"x": "/X", "y": "/y"}, batch_size=BATCH, workers=2, mode=mode,
                      shuffle=True, seed=5) as ds:
        assert len(ds) == 7
        history = model.fit(ds, epochs=2, verbose=0)
    assert len(seen) == 14, "len(ds) batches per epoch"
    for epoch in (seen[:7], seen[7:]):
        assert sorted(flat(epoch)) == list(range(N)), "each epoch is exactly one pass over the rows"
    assert flat(seen[:7]) != flat(seen[7:]), "epochs are shuffled differently (seed + pass)"
    assert history.history["loss"][1] < history.history["loss"][0]
    assert no_pipeline_threads()


def test_evaluate_and_predict_cover_every_row_once_in_file_order(tmp_path):
    path, X, y = make_file(tmp_path / "d.h5")
    seen = []
    model = make_model(seen)
    with hdf5_dataset(path, {"x": "/X", "y": "/y"}, batch_size=BATCH) as ds:
        loss = model.evaluate(ds, verbose=0)
        assert sorted(flat(seen)) == list(range(N))
        seen.clear()
        predictions = model.predict(ds, verbose=0)
        assert flat(seen) == list(range(N)), "one worker, no shuffle: file order"
    expected = np.asarray(model(X[:, :], training=False))
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, np.mean((expected - y) ** 2), rtol=1e-4)


def test_an_endless_pipeline_is_cut_into_epochs_and_no_batch_is_lost():
    def counting():  # one worker: ids 0, 1, 2, ... forever
        i = 0
        while True:
            yield np.array([i, i % 7, 1.0], np.float32), np.float32(i % 7)
            i += 1

    def make_pipeline():
        return queuepipe.from_generator(counting, (tf.float32, tf.float32), ((3,), ()), batch_size=4,
                                        num_epochs=None)

    seen = []
    model = make_model(seen)
    with PipelineDataset(make_pipeline, batches_per_epoch=5) as ds:
        model.fit(ds, epochs=2, verbose=0)
        assert ds.passes == 1
    assert flat(seen) == list(range(40)), "Keras' look at the first batches took none away"


def test_a_worker_error_reaches_fit_and_indexing_raises_it_with_its_type():
    def failing():
        for i in range(12):
            yield np.array([i, 0, 0], np.float32), np.float32(0)
        raise MyDataError("sample 12 is bad")

    def make_pipeline():
        return queuepipe.from_generator(failing, (tf.float32, tf.float32), ((3,), ()), batch_size=4,
                                        batches_per_block=1)  # the 3 whole batches go out before the error

    model = make_model([])
    with PipelineDataset(make_pipeline, batches_per_epoch=10) as ds:
        with pytest.raises(Exception, match="sample 12 is bad"):
            model.fit(ds, epochs=1, verbose=0)
    with PipelineDataset(make_pipeline, batches_per_epoch=10) as ds:
        ds.on_epoch_begin()
        for _ in range(3):
            assert ds[0][0].shape == (4, 3)
        with pytest.raises(MyDataError, match="sample 12 is bad"):
            ds[0]
        with pytest.raises(MyDataError, match="sample 12 is bad"):
            ds[0]  # and again: a failed dataset never starts over silently
        assert ds.passes == 1
    assert no_pipeline_threads()


def test_close_stops_the_workers_and_misuse_is_refused(tmp_path):
    path, X, y = make_file(tmp_path / "d.h5")
    ds = hdf5_dataset(path, {"x": "/X", "y": "/y"}, batch_size=BATCH, shuffle=True)
    x0, y0 = ds[0]
    assert x0.shape == (BATCH, 3) and y0.shape == (BATCH, 1)
    assert not no_pipeline_threads(), "the workers run while the dataset is open"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ds)
    ds.close()
    assert no_pipeline_threads()
    with pytest.raises(queuepipe.ArgumentError, match="closed"):
        ds[1]
    with pytest.raises(queuepipe.ArgumentError, match="'x' \\(required\\)"):
        hdf5_dataset(path, {"inputs": "/X"}, batch_size=BATCH)
    with pytest.raises(queuepipe.ArgumentError, match="num_epochs"):
        hdf5_dataset(path, {"x": "/X"}, batch_size=BATCH, num_epochs=3)
    with pytest.raises(queuepipe.HDF5InputError, match="nope"):
        hdf5_dataset(path, {"x": "/X", "y": "/nope"}, batch_size=BATCH)


def test_named_inputs_and_sample_weights(tmp_path):
    path, X, y = make_file(tmp_path / "d.h5")
    with h5py.File(path, "a") as f:
        f.create_dataset("w", data=np.linspace(0, 1, N, dtype=np.float32))
    ds = hdf5_dataset(path, {"x": {"a": "/X", "b": "/y"}, "y": "/y", "sample_weight": "/w"},
                      batch_size=BATCH, drop_remainder=True)
    with ds:
        assert len(ds) == N // BATCH
        batches = list(ds)
    assert len(batches) == 6
    x, target, weight = batches[0]
    np.testing.assert_array_equal(x["a"], X[:BATCH])
    np.testing.assert_array_equal(x["b"], y[:BATCH])
    np.testing.assert_array_equal(target, y[:BATCH])
    np.testing.assert_allclose(weight, np.linspace(0, 1, N, dtype=np.float32)[:BATCH])
