"""Where W1's time goes: how close can *any* queue-fed pipeline get to limit-consumer here?

``python -m benchmarks.probes.w1_ceiling [--rounds 3]`` measures, interleaved round by round and
reported as medians of per-round ratios to limit-consumer (the harness's step: consumer op
+ ``y`` fetched), on all rows of F1 (batch 128):

- prefilled queue: a FIFOQueue filled with distinct batches *before* timing, so no
  producer runs at all -- the cost of dequeuing fresh (not cache-hot) data;
- queuepipe from_hdf5, thread x1 and process x1, as in the harness;
- limit-consumer with *side work* in another thread of the same process, started every 16
  steps (once per 2048-row block, when a pipeline's producer would run): an 8 MiB ``preadv``
  (releases the GIL) or 0.8 ms of pure Python (holds it) -- how much a block's worth of
  producer work costs the training step when it lands beside it;
- a *minimal pipeline* written for this probe: a reader thread that does one 8 MiB ``preadv``
  per block into a fresh aligned buffer (nothing else: no planning, no batching, ``y`` a
  constant), a ``numpy_function`` that takes the ready block, 16 slice enqueues, the same
  dequeue gate as queuepipe -- the least Python any queue-fed pipeline can run per block;
  and the same with 20 bare GIL round trips (``time.sleep(0)``) added per block in the
  reader thread, no work at all;
- queuepipe thread x1's step times: median and mean, and the share of the run spent in
  steps slower than 3x the median (the once-per-block stalls).

A side probe for BENCHMARKS.md's "where the time goes", not a harness row.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import threading
import time

import numpy as np

from queuepipe.tools.limits import consumer_op, limit_consumer, resident_batch, timed_steps

from ..data import ensure_file, warm_page_cache

B = 128


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


def harness_limit(x: np.ndarray, y: np.ndarray) -> float:
    """The harness's limit-consumer row: consumer op + ``y`` on a batch held in variables."""
    rows, seconds = limit_consumer([x, y], seconds=1.0, also_fetch=(1,))
    return rows / seconds


def limit_with_trigger(x: np.ndarray, y: np.ndarray, every: int, trigger: threading.Event,
                       seconds: float = 1.0, warmup: int = 20) -> float:
    """Samples/s of limit-consumer's loop (same session, fetch, warm-up and stop rule) that
    sets ``trigger`` before every ``every``-th timed step."""
    with resident_batch([x, y], also_fetch=(1,)) as (sess, fetch):
        calls = itertools.count(-warmup)  # the warm-up steps come first and never trigger

        def step() -> None:
            n = next(calls)
            if n >= 0 and n % every == 0:
                trigger.set()
            sess.run(fetch)

        steps, elapsed = timed_steps(step, seconds=seconds, warmup=warmup)
    return steps * len(x) / elapsed


def prefilled_queue(path: str, batches: int = 600) -> float:
    import h5py
    import tensorflow as tf
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


def _queuepipe_fetch(path: str, mode: str) -> list:
    """In the default graph: queuepipe from_hdf5 over F1 as in the harness, and the step's fetch."""
    import queuepipe
    pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, workers=1, mode=mode,
                               allow_smaller_final_batch=True)
    x, y = pipe.batch
    return [consumer_op([x, y]), y]


def queuepipe_row(path: str, mode: str) -> float:
    import tensorflow as tf
    import queuepipe
    with tf.Graph().as_default():
        fetch = _queuepipe_fetch(path, mode)
        with tf.compat.v1.Session() as sess, queuepipe.running(sess):
            return _timed(sess, fetch, 10 ** 9)


def limit_with_side_work(x: np.ndarray, y: np.ndarray, work: str, path: str, seconds: float = 1.0) -> float:
    """limit-consumer's loop while a thread of the same process does ``work`` every 16 steps."""
    from queuepipe.workers.buffers import aligned_empty
    due, stop = threading.Event(), threading.Event()
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size

    def side() -> None:
        block = 0
        while not stop.is_set():
            if not due.wait(0.05):
                continue
            due.clear()
            if work == "preadv":
                buf = aligned_empty((2048 * x.shape[1] * 4,), np.uint8)
                os.preadv(fd, [buf], (block * len(buf)) % max(1, size - len(buf)))
                block += 1
            else:
                t = time.perf_counter()
                while time.perf_counter() - t < 0.0008:
                    pass

    worker = threading.Thread(target=side, daemon=True)
    worker.start()
    try:
        return limit_with_trigger(x, y, 16, due, seconds=seconds)
    finally:
        stop.set()
        worker.join()
        os.close(fd)


def minimal_pipeline(path: str, yields: int = 0, seconds: float = 1.0) -> float:
    """Samples/s of the minimal hand-written pipeline described in the module docstring."""
    import queue
    import h5py
    import tensorflow as tf
    from queuepipe.workers.buffers import aligned_empty
    v1 = tf.compat.v1
    with h5py.File(path, "r") as f:
        start, width, n = f["X"].id.get_offset(), f["X"].shape[1], f["X"].shape[0]
        if start is None:  # chunked: the benchmark writes the chunks one after another
            start = f["X"].id.get_chunk_info(0).byte_offset
    rows = 16 * B
    labels = aligned_empty((rows,), np.int64)
    labels[...] = 1
    ready: "queue.Queue" = queue.Queue(2)
    stop = threading.Event()
    fd = os.open(path, os.O_RDONLY)

    def reader() -> None:
        block = 0
        while not stop.is_set():
            for _ in range(yields):
                time.sleep(0)
            buf = aligned_empty((rows, width), np.float32)
            os.preadv(fd, [buf.reshape(-1).view(np.uint8)], start + (block % (n // rows)) * buf.nbytes)
            block += 1
            while not stop.is_set():
                try:
                    ready.put(buf, timeout=0.05)
                    break
                except queue.Full:
                    pass

    def take():
        return ready.get(), labels, np.full(16, b"", dtype=object)

    with tf.Graph().as_default():
        q = v1.FIFOQueue(32, [tf.float32, tf.int64, tf.string])
        x_block, y_block, errors = v1.numpy_function(take, [], [tf.float32, tf.int64, tf.string])
        enqueue = None
        for j in range(16):
            with tf.control_dependencies([enqueue] if enqueue is not None else []):
                enqueue = q.enqueue([x_block[j * B:(j + 1) * B], y_block[j * B:(j + 1) * B], errors[j]])
        x, y, error = q.dequeue()
        on_error, on_ok = tf.raw_ops.Switch(data=error, pred=tf.equal(error, ""))
        raised = v1.numpy_function(lambda message: message, [on_error], tf.string, stateful=True)
        gate, _ = tf.raw_ops.Merge(inputs=[on_ok, raised])
        with tf.control_dependencies([gate]):
            x, y = tf.identity(x), tf.identity(y)
        threads = [threading.Thread(target=reader, daemon=True)]
        with v1.Session() as sess:
            run_enqueue = sess.make_callable(enqueue)

            def enqueuer() -> None:
                try:
                    while not stop.is_set():
                        run_enqueue()
                except (tf.errors.CancelledError, tf.errors.OutOfRangeError):
                    pass

            threads.append(threading.Thread(target=enqueuer, daemon=True))
            for t in threads:
                t.start()
            try:
                fetch = [consumer_op([x, y]), y]
                for _ in range(20):
                    sess.run(fetch)
                steps, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    sess.run(fetch)
                    steps += 1
                return steps * B / (time.perf_counter() - t0)
            finally:
                stop.set()
                sess.run(q.close(cancel_pending_enqueues=True))
                for t in threads:
                    t.join()
                os.close(fd)


def step_trace(path: str) -> dict:
    """queuepipe thread x1 over all of F1: step-time median and mean, share of time in slow steps."""
    import tensorflow as tf
    import queuepipe
    with tf.Graph().as_default():
        fetch = _queuepipe_fetch(path, "thread")
        times = []
        with tf.compat.v1.Session() as sess, queuepipe.running(sess):
            for _ in range(20):
                sess.run(fetch)
            try:
                while True:
                    t = time.perf_counter()
                    sess.run(fetch)
                    times.append(time.perf_counter() - t)
            except tf.errors.OutOfRangeError:
                pass
    d = np.array(times)
    median = float(np.median(d))
    slow = d > 3 * median
    return {"median_us": median * 1e6, "mean_us": float(d.mean()) * 1e6,
            "slow_share": float(d[slow].sum() / d.sum()), "slow_per_block": float(slow.sum() / (len(d) / 16))}


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
        "limit + 8 MiB preadv / 16 steps": lambda: limit_with_side_work(x0, y0, "preadv", str(path)),
        "limit + 0.8 ms Python / 16 steps": lambda: limit_with_side_work(x0, y0, "python", str(path)),
        "minimal pipeline": lambda: minimal_pipeline(str(path)),
        "minimal pipeline + 20 GIL round trips": lambda: minimal_pipeline(str(path), yields=20),
    }
    ratios = {name: [] for name in ways}
    limits, traces = [], []
    for r in range(args.rounds):
        limit = harness_limit(x0, y0)
        limits.append(limit)
        for name, way in ways.items():
            ratios[name].append(way() / limit)
        traces.append(step_trace(str(path)))
        print(f"round {r + 1}/{args.rounds} done (limit-consumer {limit / 1e3:.0f} k/s)", flush=True)
    print(f"\nlimit-consumer (op + y): median {statistics.median(limits) / 1e3:.0f} k samples/s")
    for name, values in ratios.items():
        print(f"{name:36s} x limit-consumer: median {statistics.median(values):.2f}  "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    for key, label in (("median_us", "median step (us)"), ("mean_us", "mean step (us)"),
                       ("slow_share", "share of time in steps > 3x median"),
                       ("slow_per_block", "such slow steps per 16-batch block")):
        print(f"queuepipe thread x1 {label}: median {statistics.median(t[key] for t in traces):.2f}")


if __name__ == "__main__":
    main()
