"""A small TF1 training job over a resumable pipeline: run, killed and restarted by ``test_resume.py``.

    python resume_train.py DATA.h5 CHECKPOINT_DIR LOG SHUFFLE(0|1) MODE WORKERS SAVE_EVERY STEP_SECONDS

Trains with ``MonitoredTrainingSession(checkpoint_dir=..., save_checkpoint_steps=SAVE_EVERY)``
on ``from_hdf5(..., resumable=True)`` for 2 epochs, restoring the latest checkpoint when one
exists; each step sleeps STEP_SECONDS (a model's compute time, so the test can kill it
mid-epoch).  After every step it appends one line to LOG: ``<global step> <row id> <row id> ...``
(one ``os.write`` per line, so a SIGKILL leaves at most one partial last line).  The test
reads the log back: the steps up to the checkpoint a restart restored, plus the steps after
it, must cover every row exactly once per epoch.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import queuepipe  # noqa: E402

tf1 = tf.compat.v1


def main(argv):
    data, checkpoint_dir, log_path, shuffle, mode, workers, save_every, step_seconds = argv
    tf1.disable_eager_execution()
    pipe = queuepipe.from_hdf5(data, {"x": "/x", "y": "/y"}, batch_size=16, workers=int(workers), mode=mode,
                               shuffle=shuffle == "1", seed=None, num_epochs=2, batches_per_block=2,
                               allow_smaller_final_batch=True, resumable=True, name="train")
    weight = tf1.get_variable("w", [4], initializer=tf1.zeros_initializer())
    loss = tf.reduce_mean(tf.square(tf.reduce_sum(pipe.batch["x"] * weight, axis=1) - 1.0))
    global_step = tf1.train.get_or_create_global_step()
    train_op = tf1.train.GradientDescentOptimizer(0.01).minimize(loss, global_step=global_step)
    with tf.control_dependencies([train_op]):
        step = tf.identity(global_step)  # this step's number, after its increment
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with tf1.train.MonitoredTrainingSession(checkpoint_dir=checkpoint_dir, save_checkpoint_steps=int(save_every),
                                            save_summaries_steps=None, save_summaries_secs=None,
                                            log_step_count_steps=None) as sess:
        while not sess.should_stop():
            ids, number = sess.run([pipe.batch["y"], step])
            os.write(log, (" ".join(map(str, [number] + ids.tolist())) + "\n").encode())
            time.sleep(float(step_seconds))
    os.write(log, b"done\n")
    os.close(log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
