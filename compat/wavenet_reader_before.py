"""A WaveNet-style ``AudioReader`` -- BEFORE the migration.

The reader of tensorflow-wavenet and its many descendants: Python threads iterate over the
audio clips and push each one through a placeholder into a ``PaddingFIFOQueue``
(``sess.run(enqueue, feed_dict={placeholder: audio})``); training takes
``reader.dequeue(batch_size)`` (``dequeue_many``: clips padded with zeros to the longest clip
of the batch); ``reader.start_threads(sess, n_threads)`` starts the threads.  The clips are
synthetic here (variable-length float32 ``[T, 1]`` arrays, never zero), so no audio file is
needed.  One change to the original, so that the program exits: its threads are daemons and
the shutdown closes the queue with ``cancel_pending_enqueues`` before ``coord.join`` (the
original's threads, blocked in ``enqueue`` on a full queue, kept ``coord.join`` waiting).

Run: ``python compat/wavenet_reader_before.py`` takes 20 batches of 4 clips, checks that each
is padded to its longest clip, and prints one ``OK:`` line.
``compat/wavenet_reader_after.py`` is this program with the input part (between the ``# ---
input`` markers) on ``queuepipe.compat.feeding.from_feeds``.
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
import threading  # noqa: E402


class AudioReader(object):
    """Generic background audio reader that preprocesses audio files and enqueues them."""

    def __init__(self, coord, queue_size=32):
        self.coord = coord
        self.threads = []
        self.sample_placeholder = tf.placeholder(dtype=tf.float32, shape=None)
        self.queue = tf.PaddingFIFOQueue(queue_size, ["float32"], shapes=[(None, 1)])
        self.enqueue = self.queue.enqueue([self.sample_placeholder])

    def dequeue(self, num_elements):
        return self.queue.dequeue_many(num_elements)

    def thread_main(self, sess):
        try:
            while not self.coord.should_stop():
                for audio, _filename in load_synthetic_audio():
                    if self.coord.should_stop():
                        break
                    sess.run(self.enqueue, feed_dict={self.sample_placeholder: audio})
        except tf.errors.CancelledError:
            pass  # the queue was closed at shutdown

    def start_threads(self, sess, n_threads=1):
        for _ in range(n_threads):
            thread = threading.Thread(target=self.thread_main, args=(sess,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self.threads
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
    coord = tf.train.Coordinator()
    reader = AudioReader(coord, queue_size=QUEUE_SIZE)
    audio_batch = reader.dequeue(BATCH)
    # --- end input ---
    energy = tf.reduce_sum(tf.square(audio_batch))  # stands for the WaveNet model
    with tf.Session() as sess:
        # --- input ---
        threads = reader.start_threads(sess, n_threads=N_THREADS)
        try:
            frames, mean_energy = train(sess, audio_batch, energy)
        finally:
            coord.request_stop()
            sess.run(reader.queue.close(cancel_pending_enqueues=True))
            coord.join(threads)
        # --- end input ---
    print(f"OK: {STEPS} batches of {BATCH} clips [{BATCH}, T, 1] float32, each padded to its longest clip; "
          f"{frames} frames of audio, mean energy per frame {mean_energy:.3f}")


if __name__ == "__main__":
    main()
