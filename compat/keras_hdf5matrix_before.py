"""Keras 2 training from HDF5: ``HDF5Matrix`` and ``fit_generator`` -- BEFORE the migration.

How Keras 2 programs (standalone ``keras`` 2.x, or ``tf.keras`` up to TF 2.3) trained on an
HDF5 file larger than memory: ``keras.utils.HDF5Matrix`` wraps a dataset so that ``fit``
indexes it like an array (``shuffle="batch"``: HDF5Matrix cannot be shuffled row by row),
and ``fit_generator`` runs a Python generator of batches on Keras' enqueuer threads.

THIS PROGRAM DOES NOT RUN HERE, and is kept as the reference "before": Keras 3 (which comes
with TensorFlow 2.16+) has neither ``HDF5Matrix`` nor ``fit_generator``, and Keras 2 is not
installed.  The test suite only checks that it compiles and uses both.  Its "after",
``compat/keras_hdf5matrix_after.py``, runs on Keras 3 and prints the same kind of
``result:`` lines.  (It ran on Keras 2.2-2.3 / tf.keras <= 2.3 with h5py.)
"""
import os
import tempfile

import h5py
import numpy as np
from keras.callbacks import Callback
from keras.layers import Dense
from keras.models import Sequential
from keras.utils import HDF5Matrix

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

        # --- input: HDF5Matrix views of the file, indexed by fit ---
        X_train = HDF5Matrix(path, "X", start=0, end=N_TRAIN)
        y_train = HDF5Matrix(path, "y", start=0, end=N_TRAIN)
        X_test = HDF5Matrix(path, "X", start=N_TRAIN, end=N)
        y_test = HDF5Matrix(path, "y", start=N_TRAIN, end=N)

        model = build_model()
        counter = StepCounter()
        history = model.fit(X_train, y_train, batch_size=BATCH, epochs=EPOCHS, shuffle="batch", verbose=0,
                            callbacks=[counter])
        loss = history.history["loss"]
        print("result[fit]: epochs=%d rows=%d steps=%d loss=%.4f->%.4f"
              % (EPOCHS, EPOCHS * len(X_train), counter.steps, loss[0], loss[-1]))

        # --- input: the user's generator, run by fit_generator's enqueuer ---
        model = build_model()
        counter = StepCounter()
        steps_per_epoch = -(-N_TRAIN // BATCH)
        history = model.fit_generator(batch_generator(path, BATCH), steps_per_epoch=steps_per_epoch,
                                      epochs=EPOCHS, workers=1, max_queue_size=10, verbose=0, callbacks=[counter])
        loss = history.history["loss"]
        print("result[fit_generator]: epochs=%d rows=%d steps=%d loss=%.4f->%.4f"
              % (EPOCHS, EPOCHS * N_TRAIN, counter.steps, loss[0], loss[-1]))

        test_loss = model.evaluate(X_test, y_test, batch_size=BATCH, verbose=0)
        print("result[evaluate]: epochs=1 rows=%d loss=%.4f" % (len(X_test), test_loss))


if __name__ == "__main__":
    main()
