"""``queuepipe demo``: the same generator through feed_dict and through queuepipe, side by side.

Builds its own synthetic HDF5 file, trains a small tf.compat.v1 softmax classifier on
it, and reports training steps per second: feed_dict (the pattern users start from),
then queuepipe with 1..N thread workers and 1..N process workers, each as a ratio to
feed_dict; then advice computed from those numbers (:func:`advice`), never a fixed text.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .quiet import quiet_tensorflow_import, quiet_tensorflow_logs


def _model(tf, X, y):
    """The demo's model on batch tensors ``X``, ``y``: a one-hidden-layer softmax classifier;
    returns its (train op, loss, accuracy) -- the same for every configuration measured."""
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
    """(steps/s, last train accuracy) with the generator called in the training loop and its
    samples fed through placeholders: the baseline every ratio is relative to."""
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
    """(steps/s, last train accuracy) with the same generator run by queuepipe on ``workers``
    ``mode`` workers, after three warm-up steps (workers start, the queue fills)."""
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


@dataclass(frozen=True)
class Measured:
    """One row of the demo's table: a way of feeding the model and its training speed."""

    mode: str                 # "feed_dict", "thread" or "process"
    workers: int              # queuepipe workers (1 for feed_dict: the training loop itself)
    steps_per_s: float
    accuracy: float = float("nan")

    @property
    def label(self) -> str:
        """``feed_dict (1 thread)``, ``queuepipe 2 threads``, ``queuepipe 1 process``..."""
        if self.mode == "feed_dict":
            return "feed_dict (1 thread)"
        noun = "process" if self.mode == "process" else "thread"
        plural = ("es" if noun == "process" else "s") if self.workers > 1 else ""
        return f"queuepipe {self.workers} {noun}{plural}"


def advice(rows: Sequence[Measured], *, tolerance: float = 0.10) -> List[str]:
    """The closing advice, computed from the measured ``rows`` (a ``feed_dict`` row and queuepipe
    rows): the best configuration with its measured ratio, then, per worker mode measured with
    more than one worker, whether more workers helped, hurt or made no difference.

    Ratios within ``tolerance`` of 1 count as "about the same" (these timings move by ~10 %
    run to run), so the advice never claims more than the numbers show."""
    base = next(r for r in rows if r.mode == "feed_dict")
    piped = [r for r in rows if r.mode != "feed_dict"]
    if not piped:
        return ["no queuepipe configuration was measured"]
    best = max(piped, key=lambda r: r.steps_per_s)
    ratio = best.steps_per_s / base.steps_per_s
    if ratio >= 1 + tolerance:
        lines = [f"use workers={best.workers}, mode={best.mode!r}: {best.label} trained {ratio:.2f}x as fast "
                 f"as feed_dict, the best measured here"]
    elif ratio > 1 - tolerance:
        lines = [f"queuepipe's best ({best.label}) ran {ratio:.2f}x feed_dict, about the same: here the training "
                 f"step, not the generator, sets the pace, so moving the generator off the loop gains little"]
    else:
        lines = [f"queuepipe's best ({best.label}) ran only {ratio:.2f}x feed_dict: with a generator this fast, "
                 f"the pipeline's own work outweighs what it saves"]
    for mode in ("thread", "process"):
        line = _more_workers(mode, [r for r in piped if r.mode == mode], tolerance)
        if line:
            lines.append(line)
    lines.append("(README, 'Which option when': threads or processes, and why)")
    return lines


def _more_workers(mode: str, rows: Sequence[Measured], tolerance: float) -> Optional[str]:
    """One advice line: how the best run with more than one ``mode`` worker compares with one
    worker -- or None when one of the two was not measured."""
    one = next((r for r in rows if r.workers == 1), None)
    more = [r for r in rows if r.workers > 1]
    if one is None or not more:
        return None
    top = max(more, key=lambda r: r.steps_per_s)
    gain = top.steps_per_s / one.steps_per_s
    said = f"{top.label} ran {gain:.2f}x one {mode}"
    if gain >= 1 + tolerance:
        why = ("enough of the work -- h5py reads, numpy, TF's own step -- runs outside the GIL for threads "
               "to overlap" if mode == "thread"
               else "each process runs the generator in parallel, on its own core")
        return f"{said}: more {mode} workers help with this generator ({why})"
    if gain <= 1 - tolerance:
        why = ("they hold the GIL for the generator's Python work and contend with each other and with the "
               "training loop's sess.run" if mode == "thread"
               else "more processes than the step can use, or than there are free cores, only add overhead")
        return f"{said}: extra {mode} workers slow it down here ({why})"
    return f"{said}: about the same; extra {mode} workers neither help nor hurt measurably here"


def header(path: str, scenes: int, batch_size: int, seconds: float, python_work: int, cores: int) -> List[str]:
    """The lines above the table: what is measured, on what, and what the ratio is relative to."""
    return [
        "queuepipe demo: training speed of a small tf.compat.v1 classifier fed by a Python generator",
        f"  data: random rows of {scenes} scenes in {path}; {python_work} pure-Python steps per sample",
        f"  batch {batch_size} samples; each configuration trains {seconds:g} s after warm-up; "
        f"this machine: {cores} CPU cores",
        "  ratio = steps/s relative to feed_dict (the same generator, called in the training loop, "
        "fed by feed_dict)",
        f"  {'configuration':28s} {'steps/s':>8s}  {'samples/s':>9s}  {'ratio':>6s}",
    ]


def _row_line(row: Measured, base: float, batch_size: int) -> str:
    """One table line."""
    acc = "" if row.mode == "feed_dict" else f"   (train accuracy {row.accuracy:.2f})"
    return (f"  {row.label:28s} {row.steps_per_s:8.1f}  {row.steps_per_s * batch_size:9.0f}  "
            f"{row.steps_per_s / base:5.2f}x{acc}")


def main(argv: Optional[List[str]] = None) -> int:
    """``queuepipe demo``: measure feed_dict, then 1..N thread and 1..N process workers; print the
    table and the advice computed from it."""
    parser = argparse.ArgumentParser(prog="queuepipe demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per configuration")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 1),
                        help="largest worker count to try")
    parser.add_argument("--python-work", type=int, default=200,
                        help="pure-Python steps per sample in the generator (GIL-bound work)")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "queuepipe-demo-scenes.h5"))
    args = parser.parse_args(argv)

    quiet_tensorflow_logs()
    from .demo_data import make_scene_file, scene_count
    path = make_scene_file(args.data)
    for line in header(path, scene_count(path), args.batch_size, args.seconds, args.python_work,
                       os.cpu_count() or 1):
        print(line, flush=True)
    with quiet_tensorflow_import():
        import tensorflow  # noqa: F401 - loaded here, quietly, before the first measurement
    rate, acc = run_feed_dict(path, args.batch_size, args.seconds, args.python_work)
    rows = [Measured("feed_dict", 1, rate, acc)]
    print(_row_line(rows[0], rate, args.batch_size), flush=True)
    for mode in ("thread", "process"):
        for w in range(1, args.workers + 1):
            rate, acc = run_queuepipe(path, args.batch_size, args.seconds, args.python_work, w, mode)
            rows.append(Measured(mode, w, rate, acc))
            print(_row_line(rows[-1], rows[0].steps_per_s, args.batch_size), flush=True)
    lines = advice(rows)
    print("advice: " + lines[0])
    for line in lines[1:]:
        print("        " + line)
    return 0
