"""W1's CPU budget: can *any* producer in the consumer's process reach 0.85 x limit-queue here?

``python -m benchmarks.probes.w1_budget [--rounds 3] [--seconds 3]`` measures, interleaved round
by round, each way's rows/s *and* the CPU it burns (this process's user + system time over
the timed window, in cores):

- limit-consumer and limit-queue (the harness's references, :mod:`queuepipe.tools.limits`),
  with ``sess.run`` and with ``make_callable``;
- the read alone: W1's 8 MiB slab reads (``read_direct``) in one thread, no TF;
- queuepipe from_hdf5 thread x1 and process x1 (workers' CPU included for threads; a child's
  is added from ``/proc`` for processes), with both loops.

From these, per row: the consumer's core-seconds (limit-queue's cores / its rate) plus the
read's (one core / its rate) is what a row costs at least; ``cores / that`` is the most any
pipeline can deliver here, whatever its design, as a ratio to limit-queue.  If that bound is
near or below 0.85, the 2-core target is a budget question, not a serial stage.

A side probe for BENCHMARKS.md's "Where the time goes", not a harness row.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..data import SIZES, ensure_file, warm_page_cache

B = 128
FEATURES = 1024


def _children_cpu() -> float:
    """CPU seconds of this process's live children (process workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + _children_cpu()


def timed(step: Callable[[], object], seconds: float, warmup: int = 20) -> Tuple[float, float]:
    """(rows/s, cores used) of ``step`` (one batch per call) over ``seconds`` after ``warmup``."""
    for _ in range(warmup):
        step()
    n, c0, t0 = 0, _cpu(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return n * B / wall, cpu / wall


def first_batches(path: str, k: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    import h5py
    with h5py.File(path, "r") as f:
        return [(f["X"][i * B:(i + 1) * B], f["y"][i * B:(i + 1) * B]) for i in range(k)]


def limit_way(kind: str, driver: str, batches, seconds: float) -> Tuple[float, float]:
    import tensorflow as tf
    from queuepipe.tools.limits import consumer_op, resident_batch, session_step
    tf1 = tf.compat.v1
    if kind == "consumer":
        with resident_batch(list(batches[0]), also_fetch=(1,)) as (sess, fetch):
            return timed(session_step(sess, fetch, driver), seconds)
    graph = tf.Graph()
    with graph.as_default():
        q = tf1.FIFOQueue(len(batches), [tf.float32, tf.int64], shapes=[[B, FEATURES], [B]])
        xs, ys = tf1.placeholder(tf.float32, [B, FEATURES]), tf1.placeholder(tf.int64, [B])
        fill = q.enqueue([xs, ys])
        x, y = q.dequeue()
        with tf.control_dependencies([q.enqueue([x, y])]):
            x, y = tf.identity(x), tf.identity(y)
            fetch = [consumer_op([x, y]), y]
        with tf1.Session(graph=graph) as sess:
            for bx, by in batches:
                sess.run(fill, {xs: bx, ys: by})
            return timed(session_step(sess, fetch, driver), seconds)


def read_alone(path: str, seconds: float) -> Tuple[float, float]:
    """W1's reads with nothing else: 8 MiB slabs in order, one thread, rows/s and cores."""
    import h5py
    with h5py.File(path, "r") as f:
        X, Y = f["X"], f["y"]
        n = X.shape[0]
        slab = 2048
        x = np.empty((slab, FEATURES), np.float32)
        y = np.empty((slab,), np.int64)
        pos = [0]

        def step():  # one batch's worth of rows per call, as the other ways count
            lo = pos[0] % (n - slab)
            X.read_direct(x, np.s_[lo:lo + slab], np.s_[0:slab])
            Y.read_direct(y, np.s_[lo:lo + slab], np.s_[0:slab])
            pos[0] += slab
        rate, cores = timed(step, seconds, warmup=2)
    return rate * slab / B, cores


def queuepipe_way(path: str, mode: str, driver: str, seconds: float) -> Tuple[float, float]:
    import tensorflow as tf
    import queuepipe
    from queuepipe.tools.limits import consumer_op, session_step
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, workers=1, mode=mode, num_epochs=None)
        x, y = pipe.batch
        fetch = [consumer_op([x, y]), y]
        with tf1.Session() as sess, queuepipe.running(sess):
            return timed(session_step(sess, fetch, driver), seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    path = str(ensure_file("F1", SIZES["full"]["F1"], log=print))
    warm_page_cache(path)
    batches = first_batches(path, 32)
    ways: Dict[str, Callable[[], Tuple[float, float]]] = {"read alone (1 thread)": lambda: read_alone(path, args.seconds)}
    for driver in ("sess.run", "make_callable"):
        ways[f"limit-consumer [{driver}]"] = lambda d=driver: limit_way("consumer", d, batches, args.seconds)
        ways[f"limit-queue [{driver}]"] = lambda d=driver: limit_way("queue", d, batches, args.seconds)
        for mode in ("thread", "process"):
            ways[f"queuepipe {mode} x1 [{driver}]"] = (
                lambda m=mode, d=driver: queuepipe_way(path, m, d, args.seconds))
    got: Dict[str, List[Tuple[float, float]]] = {k: [] for k in ways}
    for r in range(args.rounds):
        for k, f in ways.items():
            got[k].append(f())
        print(f"round {r + 1} done", flush=True)
    med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
           for k, vals in got.items()}
    cores = len(os.sched_getaffinity(0))
    print(f"\nmedians of {args.rounds} interleaved rounds, {cores} cores:")
    print(f"  {'way':34s} {'rows/s':>10s} {'cores':>6s} {'core-us/row':>12s}")
    for k, (rate, used) in med.items():
        print(f"  {k:34s} {rate:10.0f} {used:6.2f} {1e6 * used / rate:12.3f}")
    read_rate, read_cores = med["read alone (1 thread)"]
    read_cost = read_cores / read_rate
    for driver in ("sess.run", "make_callable"):
        q_rate, q_cores = med[f"limit-queue [{driver}]"]
        bound = cores / (q_cores / q_rate + read_cost)
        print(f"  [{driver}] CPU bound for consumer + read on {cores} cores: {bound:.0f} rows/s = "
              f"{bound / q_rate:.2f} x limit-queue; queuepipe thread x1 "
              f"{med[f'queuepipe thread x1 [{driver}]'][0] / q_rate:.2f} x, process x1 "
              f"{med[f'queuepipe process x1 [{driver}]'][0] / q_rate:.2f} x")


if __name__ == "__main__":
    main()
