"""The WaveNet-style reader program of ``compat/wavenet_reader_before.py`` -- AFTER the migration.

Only the input part differs (the lines between the ``# --- input`` markers; the rest is the
same, line for line):

- the ``AudioReader`` class (placeholder, ``PaddingFIFOQueue``, enqueue op, threads) becomes
  ``clips()``, the body of its thread loop as a generator;
- ``reader.dequeue(BATCH)`` becomes ``from_feeds(clips, sample_placeholder, batch_size=BATCH,
  workers=N_THREADS, capacity=QUEUE_SIZE, num_epochs=None, output_shapes=(None, 1)).batch``:
  the placeholder gives the dtype, the queue's ``shapes=[(None, 1)]`` the shape, its unknown
  length makes each batch padded to its longest clip (as ``dequeue_many`` padded),
  ``num_epochs=None`` replaces the thread's endless loop over the clips;
- ``start_threads`` and the shutdown (``request_stop``, closing the queue, ``coord.join``)
  become ``with queuepipe.running(sess):``, which starts the workers and stops and joins
  them on the way out.

Run: ``python compat/wavenet_reader_after.py`` prints the same kind of ``OK:`` line as the
before.  And what the before could not do: an exception in the generator reaches
``sess.run`` with its own type, never a hang (tests/test_compat_feeding.py).
"""
import numpy as np
import tensorflow.compat.v1 as tf

BATCH, STEPS, N_THREADS, QUEUE_SIZE = 4, 20, 2, 32
CLIP_LENGTHS = (120, 200, 75, 310, 160, 90, 240, 180)


def load_synthetic_audio():
    """What ``load_generic_audio`` yielded, without the files: (audio [T, 1] float32, filename)."""
    for k, length in enumerate(CLIP_LENGTHS):
        t = np.arange(length, dtype=np.float32)
        audio = 0.5 + 0.25 * np.sin(2 * np.pi * (k + 1) * t / length)
        yield audio.reshape(-1, 1).astype(np.float32), "clip_%d.wav" % k


# --- input ---
import queuepipe  # noqa: E402
from queuepipe.compat.feeding import from_feeds  # noqa: E402


def clips():
    """The reader thread's loop as a generator: what it fed the placeholder, one clip at a time."""
    for audio, _filename in load_synthetic_audio():
        yield audio
# --- end input ---


def check_padding(batch):
    """Each clip's frames are non-zero, the padding zeros: the batch is as long as its longest clip."""
    lengths = (batch[:, :, 0] != 0).sum(axis=1)
    assert batch.shape[0] == BATCH and batch.shape[2] == 1, batch.shape
    assert set(lengths.tolist()) <= set(CLIP_LENGTHS), lengths
    assert batch.shape[1] == lengths.max(), (batch.shape, lengths)
    return int(lengths.sum())


def train(sess, audio_batch, energy):
    frames, total = 0, 0.0
    for _ in range(STEPS):
        batch, e = sess.run([audio_batch, energy])
        frames += check_padding(batch)
        total += e
    return frames, total / frames  # the padding adds no energy


def main():
    tf.disable_eager_execution()
    # --- input ---
    sample_placeholder = tf.placeholder(dtype=tf.float32, shape=None)
    pipe = from_feeds(clips, sample_placeholder, batch_size=BATCH, workers=N_THREADS, capacity=QUEUE_SIZE,
                      num_epochs=None, output_shapes=(None, 1))
    audio_batch = pipe.batch
    # --- end input ---
    energy = tf.reduce_sum(tf.square(audio_batch))  # stands for the WaveNet model
    with tf.Session() as sess:
        # --- input ---
        with queuepipe.running(sess):
            frames, mean_energy = train(sess, audio_batch, energy)
        # --- end input ---
    print(f"OK: {STEPS} batches of {BATCH} clips [{BATCH}, T, 1] float32, each padded to its longest clip; "
          f"{frames} frames of audio, mean energy per frame {mean_energy:.3f}")


if __name__ == "__main__":
    main()
