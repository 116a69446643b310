"""TF's spinning thread pools against W1: ``ConfigProto.experimental.disable_thread_spinning``.

``python -m benchmarks.probes.spinning [--rounds 3] [--seconds 3]``: each measurement in a
fresh interpreter, rounds interleaved, W1's step (consumer op + ``y``, batch 128 x 4 KiB),
with ``sess.run`` and with ``make_callable``, on a session with TF's default config and on
one with ``disable_thread_spinning=True``:

- limit-queue (a circulating FIFOQueue of 32 distinct batches: no producer);
- queuepipe from_hdf5 thread x1 over F1, repeated epochs.

Why: a native profile of W1 (``perf record -p PID``, thread x1) puts ~22 % of the process's
CPU in Eigen's thread pools looking for work (``RunQueue::PopBack``, ``GlobalSteal``) and
~16 % in the kernel's scheduler (``finish_task_switch``, wake-ups): TF's idle inter-op and
intra-op threads spin before they sleep, and on 2 cores that spinning takes the core the
pipeline's reader needs.  A side probe for BENCHMARKS.md, not a harness row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from .fresh import run_child

B = 128


def child(way: str, driver: str, spin: bool, seconds: float) -> float:
    import h5py
    import tensorflow as tf
    import queuepipe
    from queuepipe.tools.limits import circulating_queue, consumer_op, session_step
    from benchmarks.data import SIZES, ensure_file
    tf1 = tf.compat.v1
    path = str(ensure_file("F1", SIZES["full"]["F1"], log=lambda m: None))
    config = tf1.ConfigProto()
    config.experimental.disable_thread_spinning = not spin
    with tf.Graph().as_default():
        if way == "limit-queue":
            with h5py.File(path, "r") as f:
                batches = [(f["X"][i * B:(i + 1) * B], f["y"][i * B:(i + 1) * B]) for i in range(32)]
            with circulating_queue(batches, also_fetch=[1], config=config) as (sess, fetch):
                return _rate(session_step(sess, fetch, driver), seconds)
        pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, num_epochs=None)
        x, y = pipe.batch
        fetch = [consumer_op([x, y]), y]
        with tf1.Session(config=config) as sess, queuepipe.running(sess):
            return _rate(session_step(sess, fetch, driver), seconds)


def _rate(step, seconds: float) -> float:
    for _ in range(50):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * B / (time.perf_counter() - t0)


def measure(way: str, driver: str, spin: bool, seconds: float) -> float:
    return run_child("benchmarks.probes.spinning", way, driver, "spin" if spin else "nospin", str(seconds),
                     tf_log_level="2")["rows_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        way, driver, spin, seconds = args.child
        print(json.dumps({"rows_per_s": child(way, driver, spin == "spin", float(seconds))}))
        return
    keys = [(w, d, s) for w in ("limit-queue", "queuepipe thread x1") for d in ("sess.run", "make_callable")
            for s in (True, False)]
    got = {k: [] for k in keys}
    for r in range(args.rounds):
        for k in keys:
            got[k].append(measure(*k, args.seconds))
        print(f"round {r + 1} done", flush=True)
    med = {k: statistics.median(v) for k, v in got.items()}
    print(f"\nrows/s, medians of {args.rounds} interleaved rounds ({os.cpu_count()} cores):")
    for (w, d, s), v in med.items():
        print(f"  {w:22s} [{d}] {'spinning' if s else 'no spinning':12s} {v:10.0f}")
    for d in ("sess.run", "make_callable"):
        for s in (True, False):
            ratio = med[("queuepipe thread x1", d, s)] / med[("limit-queue", d, s)]
            print(f"  [{d}] {'spinning' if s else 'no spinning':12s} queuepipe / limit-queue = {ratio:.3f}")
        gain = statistics.median(a / b for a, b in zip(got[("queuepipe thread x1", d, False)],
                                                        got[("queuepipe thread x1", d, True)]))
        print(f"  [{d}] queuepipe no spinning / spinning (median of per-round ratios) = {gain:.3f}")


if __name__ == "__main__":
    main()
