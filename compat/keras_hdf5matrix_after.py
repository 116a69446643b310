"""The Keras 2 program of ``compat/keras_hdf5matrix_before.py`` -- AFTER the migration, on
Keras 3: queuepipe's workers read the HDF5 file and run the generator.

What changed (``diff compat/keras_hdf5matrix_before.py compat/keras_hdf5matrix_after.py``),
all on the input side -- the file, the generator, the model, the callback and the printed
results are the same:

- the four ``HDF5Matrix`` views become two ``queuepipe.compat.keras.hdf5_dataset(path,
  {"x": "/X", "y": "/y"}, rows=slice(...), batch_size=BATCH)`` datasets (Keras 3
  ``PyDataset`` s): ``model.fit(train, epochs=EPOCHS)`` takes ``batch_size`` and shuffling
  from the dataset (``shuffle=True, seed=0``: block order plus a row buffer -- no longer
  ``shuffle="batch"``), one pass over the rows per Keras epoch; ``model.evaluate(test)``;
- ``fit_generator(gen, steps_per_epoch=...)`` (gone in Keras 3) becomes ``model.fit(
  PipelineDataset(make_pipeline, steps_per_epoch), epochs=EPOCHS)``, where ``make_pipeline``
  builds ``queuepipe.from_generator(...)`` over the same generator (``yields="blocks"``: it
  yields whole batches); queuepipe's worker runs it, Keras' own ``workers`` stay unused;
- the datasets are closed at the end (``with``), which stops their workers.

Run: ``python compat/keras_hdf5matrix_after.py`` prints three ``result[...]:`` lines, as
the before did on Keras 2.
"""
import functools
import os
import tempfile

import h5py
import numpy as np
from keras.callbacks import Callback
from keras.layers import Dense
from keras.models import Sequential

import queuepipe
from queuepipe.compat.keras import PipelineDataset, hdf5_dataset

N, N_TRAIN, D, CLASSES, BATCH, EPOCHS = 1000, 800, 16, 4, 32, 2


def make_file(path, seed=0):
    """/X float32 [1000, 16], /y int64: the nearest of 4 centres."""
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 2, size=(CLASSES, D))
    y = rng.randint(0, CLASSES, size=N)
    X = (centres[y] + rng.normal(0, 1, size=(N, D))).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(100, D))
        f.create_dataset("y", data=y.astype(np.int64))


def batch_generator(path, batch_size):
    """The user's generator: batches of the training rows, in order, forever."""
    with h5py.File(path, "r") as f:
        X, y = f["X"], f["y"]
        while True:
            for start in range(0, N_TRAIN, batch_size):
                stop = min(start + batch_size, N_TRAIN)
                yield X[start:stop], y[start:stop]


class StepCounter(Callback):
    def on_train_begin(self, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def build_model():
    model = Sequential([Dense(32, activation="relu", input_shape=(D,)), Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.h5")
        make_file(path)

        # --- input: queuepipe datasets over the file's rows, one pass per Keras epoch ---
        train = hdf5_dataset(path, {"x": "/X", "y": "/y"}, rows=slice(0, N_TRAIN), batch_size=BATCH,
                             shuffle=True, seed=0)
        test = hdf5_dataset(path, {"x": "/X", "y": "/y"}, rows=slice(N_TRAIN, N), batch_size=BATCH)

        with train, test:
            model = build_model()
            counter = StepCounter()
            history = model.fit(train, epochs=EPOCHS, verbose=0, callbacks=[counter])
            loss = history.history["loss"]
            print("result[fit]: epochs=%d rows=%d steps=%d loss=%.4f->%.4f"
                  % (EPOCHS, EPOCHS * N_TRAIN, counter.steps, loss[0], loss[-1]))

            # --- input: the user's generator, run by a queuepipe worker ---
            model = build_model()
            counter = StepCounter()
            steps_per_epoch = -(-N_TRAIN // BATCH)

            def make_pipeline():
                return queuepipe.from_generator(functools.partial(batch_generator, path, BATCH),
                                                output_types=(np.float32, np.int64), output_shapes=((D,), ()),
                                                yields="blocks", batch_size=BATCH)

            with PipelineDataset(make_pipeline, steps_per_epoch) as batches:
                history = model.fit(batches, epochs=EPOCHS, verbose=0, callbacks=[counter])
            loss = history.history["loss"]
            print("result[fit_generator]: epochs=%d rows=%d steps=%d loss=%.4f->%.4f"
                  % (EPOCHS, EPOCHS * N_TRAIN, counter.steps, loss[0], loss[-1]))

            test_loss = model.evaluate(test, verbose=0)
            print("result[evaluate]: epochs=1 rows=%d loss=%.4f" % (N - N_TRAIN, test_loss))


if __name__ == "__main__":
    main()
