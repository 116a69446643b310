"""Where W1's CPU goes on a small machine: per thread, per step, per block (issue 13).

``python -m benchmarks.probes.w1_cpu [--rounds 3] [--seconds 3] [--driver make_callable]``:
each measurement in a fresh interpreter, rounds interleaved, W1's step (the harness's
consumer op + ``y``, batch 128 x 4 KiB rows, F1 in the page cache) for

- ``limit-queue``: the circulating ``FIFOQueue`` of 32 distinct batches (no producer);
- ``queuepipe thread x1``: ``from_hdf5`` over F1, in order, repeated epochs;

and reports, over the timed window:

- rows/s, and the step-time shape: median, p99, the share of the run spent in steps longer
  than 3x the median and how many such steps come per 16-batch block;
- every thread's CPU time and **run-queue wait** -- time it was ready to run but no core was
  free -- from ``/proc/self/task/<tid>/schedstat`` (no ``perf`` needed), grouped as the main
  thread (the training loop), TF's pools (inter-op ``tf_Compute`` and the intra-op threads),
  and queuepipe's threads;
- for queuepipe, the runner thread's CPU per block, split into the ``preadv`` copy, the rest of
  producing the block (planning, batching, hand-over bookkeeping: Python) and running the
  block's enqueue op (the ``py_func`` pull and 16 slice enqueues, inline in that thread).

The runner's split wraps ``os.preadv`` and two of queuepipe's methods with CPU-time counters
(``time.thread_time``), in this probe's process only.  A side probe for BENCHMARKS.md ("W1
against limit-queue"), not a harness row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from typing import Callable, Dict, List

import numpy as np

from .fresh import interleaved_rounds, run_child

B = 128
PER_BLOCK = 16
WAYS = ("limit-queue", "queuepipe thread x1")


def _thread_times() -> Dict[int, Dict[str, float]]:
    """Every thread of this process: name, CPU seconds on a core, seconds waiting on a run queue."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run_ns, wait_ns, _ = (int(v) for v in f.read().split())
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = {"name": name, "cpu": run_ns / 1e9, "wait": wait_ns / 1e9}
    return out


def _group(tid: int, name: str, ours: Dict[int, str]) -> str:
    if tid == os.getpid():
        return "main"
    if tid in ours:
        return "queuepipe " + ("runner" if "-enqueue-" in ours[tid] else "other")
    return "tf inter-op" if name.startswith("tf_") else "tf intra-op + other"


class RunnerSplit:
    """CPU time the runner thread spends in ``preadv``, in producing a block and in its enqueue op."""

    def __init__(self):
        self.cpu = {"preadv": 0.0, "produce": 0.0, "enqueue": 0.0}
        self.blocks = 0

    def timed(self, key: str, fn: Callable, count: bool = False) -> Callable:
        def wrapper(*args, **kwargs):
            if count:
                self.blocks += 1
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[key] += time.thread_time() - t0
        return wrapper

    def install(self) -> None:
        import queuepipe.tf.runner as runner
        import queuepipe.workers.runtime as runtime
        os.preadv = self.timed("preadv", os.preadv)
        runtime.PipelineRuntime.prefetch = self.timed("produce", runtime.PipelineRuntime.prefetch, count=True)
        inline = runner.inline_callable
        runner.inline_callable = lambda sess, op: self.timed("enqueue", inline(sess, op))

    def reset(self) -> None:
        self.cpu = dict.fromkeys(self.cpu, 0.0)
        self.blocks = 0

    def per_block_us(self) -> Dict[str, float]:
        n = max(1, self.blocks)
        out = {k: v / n * 1e6 for k, v in self.cpu.items()}
        out["produce"] -= out["preadv"]  # the copy happens inside producing
        return out


def child(way: str, driver: str, seconds: float) -> dict:
    import h5py
    import tensorflow as tf
    import queuepipe
    from queuepipe.tools.limits import circulating_queue, consumer_op, session_step
    from benchmarks.data import SIZES, ensure_file
    tf1 = tf.compat.v1
    path = str(ensure_file("F1", SIZES["full"]["F1"], log=lambda m: None))
    split = RunnerSplit() if way != "limit-queue" else None
    if split is not None:
        split.install()
    with tf.Graph().as_default():
        if way == "limit-queue":
            with h5py.File(path, "r") as f:
                batches = [(f["X"][i * B:(i + 1) * B], f["y"][i * B:(i + 1) * B]) for i in range(32)]
            with circulating_queue(batches, also_fetch=[1]) as (sess, fetch):
                return _measure(session_step(sess, fetch, driver), seconds, split)
        pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, num_epochs=None)
        x, y = pipe.batch
        with tf1.Session() as sess, queuepipe.running(sess):
            return _measure(session_step(sess, [consumer_op([x, y]), y], driver), seconds, split)


def _measure(step: Callable[[], object], seconds: float, split) -> dict:
    for _ in range(200):
        step()
    ours = {t.native_id: t.name for t in threading.enumerate() if t.name.startswith("queuepipe")}
    if split is not None:
        split.reset()
    before = _thread_times()
    ends: List[float] = []
    t0 = last = time.perf_counter()
    while last - t0 < seconds:
        step()
        now = time.perf_counter()
        ends.append(now - last)
        last = now
    after = _thread_times()
    wall = last - t0
    d = np.array(ends) * 1e6
    median = float(np.median(d))
    slow = d > 3 * median
    groups: Dict[str, Dict[str, float]] = {}
    for tid, a in after.items():
        b = before.get(tid, {"cpu": 0.0, "wait": 0.0})
        g = groups.setdefault(_group(tid, a["name"], ours), {"cpu": 0.0, "wait": 0.0})
        g["cpu"] += (a["cpu"] - b["cpu"]) / wall    # cores
        g["wait"] += (a["wait"] - b["wait"]) / wall
    return {"rows_s": len(d) * B / wall, "median_us": median, "p99_us": float(np.percentile(d, 99)),
            "slow_share": float(d[slow].sum() / d.sum()), "slow_per_block": float(slow.sum() / len(d) * PER_BLOCK),
            "threads": groups, "runner_us_per_block": split.per_block_us() if split is not None else None}


def measure(way: str, driver: str, seconds: float) -> dict:
    return run_child("benchmarks.probes.w1_cpu", way, driver, str(seconds))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--driver", choices=("sess.run", "make_callable"), default="make_callable")
    args = parser.parse_args()
    from benchmarks.data import SIZES, ensure_file, warm_page_cache
    warm_page_cache(ensure_file("F1", SIZES["full"]["F1"]))
    results = interleaved_rounds(WAYS, args.rounds, lambda way: measure(way, args.driver, args.seconds))
    print(f"driver {args.driver}, {args.rounds} interleaved rounds of {args.seconds:g} s, medians; "
          f"{os.cpu_count()} cores")
    ratios = [q["rows_s"] / lq["rows_s"] for q, lq in zip(results[WAYS[1]], results[WAYS[0]])]
    print(f"queuepipe / limit-queue per round: {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.2f})")
    for way in WAYS:
        rs = results[way]
        med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
        print(f"\n{way}: {med('rows_s') / 1e3:.0f} k rows/s; step median {med('median_us'):.0f} us, "
              f"p99 {med('p99_us'):.0f} us; {med('slow_share'):.0%} of the run in steps > 3x the median, "
              f"{med('slow_per_block'):.2f} such steps per block")
        names = sorted({g for r in rs for g in r["threads"]})
        for g in names:
            cpu = statistics.median(r["threads"].get(g, {"cpu": 0})["cpu"] for r in rs)
            wait = statistics.median(r["threads"].get(g, {"wait": 0})["wait"] for r in rs)
            print(f"  {g:22s} {cpu:5.2f} cores on CPU, {wait:5.2f} waiting for a core")
        total = statistics.median(sum(g["cpu"] for g in r["threads"].values()) for r in rs)
        print(f"  {'process':22s} {total:5.2f} cores on CPU")
        if rs[0]["runner_us_per_block"] is not None:
            split = {k: statistics.median(r["runner_us_per_block"][k] for r in rs) for k in rs[0]["runner_us_per_block"]}
            print("  runner CPU per 16-batch block: " + ", ".join(f"{k} {v:.0f} us" for k, v in split.items()))


if __name__ == "__main__":
    main()
