"""``queuepipe demo``: the same generator through feed_dict and through queuepipe, side by side.

Builds its own synthetic HDF5 file, trains a small tf.compat.v1 softmax classifier on
it, and reports training steps per second: feed_dict (the pattern users start from),
then queuepipe with 1..N thread workers and 1..N process workers.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import List, Optional, Tuple

import numpy as np


def _model(tf, X, y):
    tf1 = tf.compat.v1
    w1 = tf1.get_variable("w1", [X.shape[-1], 128])
    b1 = tf1.get_variable("b1", [128], initializer=tf1.zeros_initializer())
    w2 = tf1.get_variable("w2", [128, 4])
    hidden = tf.nn.relu(tf.matmul(X, w1) + b1)
    logits = tf.matmul(hidden, w2)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    train = tf1.train.AdamOptimizer(1e-3).minimize(loss)
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.float32))
    return train, loss, acc


def run_feed_dict(path: str, batch_size: int, seconds: float, work: int) -> Tuple[float, float]:
    import tensorflow as tf
    from .demo_data import FEATURES, SceneGenerator
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        X = tf1.placeholder(tf.float32, [None, FEATURES])
        y = tf1.placeholder(tf.int64, [None])
        train, loss, acc = _model(tf, X, y)
        gen = SceneGenerator({"path": path, "python_work": work}).generate_data()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            steps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                xs, ys = zip(*[next(gen) for _ in range(batch_size)])
                _, a = sess.run([train, acc], feed_dict={X: np.stack(xs), y: np.array(ys)})
                steps += 1
            return steps / (time.perf_counter() - t0), float(a)


def run_queuepipe(path: str, batch_size: int, seconds: float, work: int, workers: int,
                  mode: str) -> Tuple[float, float]:
    import tensorflow as tf
    import queuepipe
    from .demo_data import FEATURES, SceneGenerator
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        scene_gen = SceneGenerator({"path": path, "python_work": work})
        pipe = queuepipe.from_generator(scene_gen.generate_data, (tf.float32, tf.int64),
                                        ((FEATURES,), ()), batch_size=batch_size, workers=workers,
                                        mode=mode)
        X, y = pipe.batch
        train, loss, acc = _model(tf, X, y)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            with queuepipe.running(sess):
                for _ in range(3):  # warm-up: workers start, queue fills
                    sess.run(train)
                steps, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    _, a = sess.run([train, acc])
                    steps += 1
                rate = steps / (time.perf_counter() - t0)
            return rate, float(a)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="queuepipe demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per configuration")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 1),
                        help="largest worker count to try")
    parser.add_argument("--python-work", type=int, default=200,
                        help="pure-Python steps per sample in the generator (GIL-bound work)")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "queuepipe-demo-scenes.h5"))
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .demo_data import make_scene_file
    path = make_scene_file(args.data)
    print(f"queuepipe demo: synthetic scenes in {path}; batch {args.batch_size}; "
          f"{args.seconds:.0f} s per row; {os.cpu_count()} CPU cores")
    rows = []
    base, acc = run_feed_dict(path, args.batch_size, args.seconds, args.python_work)
    rows.append(("feed_dict (1 thread)", base, acc))
    print(f"  {'feed_dict (1 thread)':28s} {base:8.1f} steps/s  {base * args.batch_size:9.0f} samples/s  1.00x")
    for mode in ("thread", "process"):
        for w in range(1, args.workers + 1):
            rate, acc = run_queuepipe(path, args.batch_size, args.seconds, args.python_work, w, mode)
            label = f"queuepipe {w} {mode}{'es' if w > 1 and mode == 'process' else 's' if w > 1 else ''}"
            rows.append((label, rate, acc))
            print(f"  {label:28s} {rate:8.1f} steps/s  {rate * args.batch_size:9.0f} samples/s  "
                  f"{rate / base:.2f}x   (train accuracy {acc:.2f})")
    best = max(rows[1:], key=lambda r: r[1])
    print(f"best: {best[0]} at {best[1] / base:.2f}x feed_dict")
    print("note: this generator does per-sample Python work and h5py reads, which hold the GIL, so extra thread\n"
          "workers only contend with each other and with the training loop; process workers run it in parallel.\n"
          "Use mode='process' for Python-heavy generators (README: 'Which option when').")
    return 0
