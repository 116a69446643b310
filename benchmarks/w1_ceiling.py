"""Where W1's time goes: how close can *any* queue-fed pipeline get to limit-consumer here?

``python -m benchmarks.w1_ceiling [--rounds 3]`` measures, interleaved round by round and
reported as medians of per-round ratios to limit-consumer (the harness's step: consumer op
+ ``y`` fetched), on all rows of F1 (batch 128):

- prefilled queue: a FIFOQueue filled with distinct batches *before* timing, so no
  producer runs at all -- the cost of dequeuing fresh (not cache-hot) data;
- queuepipe from_hdf5, thread x1 and process x1, as in the harness;
- the same with ``ConfigProto.experimental.disable_thread_spinning`` (the session's
  thread pools stop spinning while they wait, leaving the CPU to the workers).

A side probe for BENCHMARKS.md's "where the time goes", not a harness row.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from queuepipe import bench_cli

from .data import ensure_file, warm_page_cache

B = 128


def _session_config(no_spin: bool):
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto()
    if no_spin:
        config.experimental.disable_thread_spinning = True
    return config


def _timed(sess, fetch, steps: int) -> float:
    """Samples/s of ``sess.run(fetch)`` for ``steps`` steps or until the data ends (after 20 warm-up)."""
    import tensorflow as tf
    for _ in range(20):
        sess.run(fetch)
    t0 = time.perf_counter()
    done = 0
    try:
        for _ in range(steps):
            sess.run(fetch)
            done += 1
    except tf.errors.OutOfRangeError:
        pass
    return done * B / (time.perf_counter() - t0)


def limit_consumer(x: np.ndarray, y: np.ndarray) -> float:
    """The harness's limit-consumer row: consumer op + ``y`` on a batch held in variables."""
    rows, seconds = bench_cli.limit_consumer([x, y], seconds=1.0, also_fetch=(1,))
    return rows / seconds


def prefilled_queue(path: str, batches: int = 600) -> float:
    import h5py
    import tensorflow as tf
    from queuepipe.bench_cli import consumer_op
    v1 = tf.compat.v1
    with h5py.File(path, "r") as f:
        xs, ys = f["X"][:batches * B], f["y"][:batches * B]
    with tf.Graph().as_default():
        queue = v1.FIFOQueue(batches, [tf.float32, tf.int64], shapes=[[B, xs.shape[1]], [B]])
        px, py = v1.placeholder(tf.float32, [B, xs.shape[1]]), v1.placeholder(tf.int64, [B])
        enqueue = queue.enqueue([px, py])
        x, y = queue.dequeue()
        with v1.Session() as sess:
            for i in range(batches):
                sess.run(enqueue, {px: xs[i * B:(i + 1) * B], py: ys[i * B:(i + 1) * B]})
            return _timed(sess, [consumer_op([x, y]), y], batches - 40)


def queuepipe_row(path: str, mode: str, no_spin: bool = False) -> float:
    import tensorflow as tf
    import queuepipe
    from queuepipe.bench_cli import consumer_op
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, workers=1, mode=mode,
                                   allow_smaller_final_batch=True)
        x, y = pipe.batch
        with v1.Session(config=_session_config(no_spin)) as sess, queuepipe.running(sess):
            return _timed(sess, [consumer_op([x, y]), y], 10 ** 9)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    path = ensure_file("F1", 262_144)
    warm_page_cache(path)
    import h5py
    with h5py.File(path, "r") as f:
        x0, y0 = f["X"][:B], f["y"][:B]
    ways = {
        "prefilled queue (no producer)": lambda: prefilled_queue(str(path)),
        "queuepipe thread x1": lambda: queuepipe_row(str(path), "thread"),
        "queuepipe process x1": lambda: queuepipe_row(str(path), "process"),
        "queuepipe thread x1, no spinning": lambda: queuepipe_row(str(path), "thread", True),
        "queuepipe process x1, no spinning": lambda: queuepipe_row(str(path), "process", True),
    }
    ratios = {name: [] for name in ways}
    limits = []
    for r in range(args.rounds):
        limit = limit_consumer(x0, y0)
        limits.append(limit)
        for name, way in ways.items():
            ratios[name].append(way() / limit)
        print(f"round {r + 1}/{args.rounds} done (limit-consumer {limit / 1e3:.0f} k/s)", flush=True)
    print(f"\nlimit-consumer (op + y): median {statistics.median(limits) / 1e3:.0f} k samples/s")
    for name, values in ratios.items():
        print(f"{name:36s} x limit-consumer: median {statistics.median(values):.2f}  "
              f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
