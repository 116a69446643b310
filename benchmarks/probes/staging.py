"""What staging costs where it cannot help, and what it does where it can (issue 14).

``python -m benchmarks.probes.staging [--rounds 5] [--base PATH]`` measures, interleaved round
by round, each measurement in a fresh interpreter, reported as medians of per-round ratios:

- **W1** (all rows of F1 in order, batch 128, from_hdf5 thread x1, the harness's consumer
  op + ``y``): unstaged ``pipe.batch`` against ``pipe.staged("/cpu:0")``.  On a CPU device
  the copy is nothing, so this is staging's pure cost (target: within 5 %).  With
  ``--base PATH`` (a checkout of an older queuepipe) the unstaged row of that version runs
  too, for the cost of the consumer statistics every dequeue now records.
- **W4** (W2's producer, batch 32, a 20 ms step that holds no core, from_generator thread
  and process x2): unstaged against staged
  (target: >= 0.97 staged, never below unstaged).  Efficiency as the harness computes it:
  the ideal step is limit-consumer's (the same step on a batch held in variables).

A side probe for BENCHMARKS.md, not a harness row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
W1_SECONDS = 3.0
W4_BATCHES = 60


def child(workload: str, staged: bool, mode: str, workers: int) -> dict:
    """One measurement, in this interpreter: rows/s (W1) or efficiency (W4)."""
    import tensorflow as tf
    import queuepipe
    from benchmarks.data import SIZES, ensure_file
    from benchmarks.workloads import STEP_SECONDS, FEATURES, ProducerGen, calibrate_loops, make_consumer
    tf1 = tf.compat.v1
    path = ensure_file("F1", SIZES["full"]["F1"], log=lambda m: None)
    batch = 128 if workload == "W1" else 32
    ctx = dict(path=str(path), sleep_step=workload == "W4", work_loops=calibrate_loops(),
               gen_samples=W4_BATCHES * batch + 8 * batch, seed=0)
    with tf.Graph().as_default():
        if workload == "W1":
            pipe = queuepipe.from_hdf5(str(path), ["X", "y"], batch_size=batch, workers=workers, mode=mode,
                                       allow_smaller_final_batch=True)
            x, y = pipe.staged("/cpu:0") if staged else pipe.batch
        else:
            pipe = queuepipe.from_generator(ProducerGen(ctx), (tf.float32, tf.int64), ((FEATURES,), ()),
                                            batch_size=batch, workers=workers, mode=mode,
                                            allow_smaller_final_batch=True)
            x, y = pipe.staged("/cpu:0") if staged else pipe.batch
        fetches = [make_consumer(ctx)([x, y]), y]
        with tf1.Session() as sess, queuepipe.running(sess):
            for _ in range(8):  # warm-up: workers started, queue and staging filled
                last = sess.run(fetches)
            done, t0 = 0, time.perf_counter()
            limit = W1_SECONDS if workload == "W1" else float("inf")
            try:
                while time.perf_counter() - t0 < limit and (workload == "W1" or done < W4_BATCHES):
                    sess.run(fetches)
                    done += 1
            except tf.errors.OutOfRangeError:
                pass
            elapsed = time.perf_counter() - t0
    if workload == "W1":
        return {"value": done * batch / elapsed, "unit": "rows/s"}
    # the harness's W4 efficiency: ideal step (limit-consumer: the same step on a batch held in
    # variables, so no input at all) over the measured step
    import numpy as np
    from queuepipe.tools.limits import limit_consumer
    sample = [np.random.default_rng(0).random((batch, FEATURES), np.float32), np.arange(batch, dtype=np.int64)]
    rows, seconds = limit_consumer(sample, seconds=1.0, warmup=5, make_consumer=make_consumer(ctx),
                                   also_fetch=(1,))
    ideal = seconds / (rows / batch)
    del last
    return {"value": ideal / (elapsed / done), "unit": "efficiency", "ideal_ms": 1e3 * ideal,
            "step_ms": 1e3 * elapsed / done, "nominal": done * STEP_SECONDS / elapsed}


def measure(workload: str, staged: bool, mode: str, workers: int, pythonpath: str) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pythonpath, str(REPO)]), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-m", "benchmarks.probes.staging", "--child", workload,
                          "staged" if staged else "plain", mode, str(workers)],
                         capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"measurement failed ({workload}, staged={staged}, {mode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])["value"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--base", default=None, help="checkout of an older queuepipe: adds its unstaged W1 row")
    p.add_argument("--only", default="W1,W4")
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        workload, kind, mode, workers = args.child
        print(json.dumps(child(workload, kind == "staged", mode, int(workers))))
        return
    only = args.only.split(",")
    variants = []
    if "W1" in only:
        if args.base:
            variants.append(("W1 thread x1 unstaged (base)", "W1", False, "thread", 1, args.base))
        variants += [("W1 thread x1 unstaged", "W1", False, "thread", 1, str(REPO)),
                     ("W1 thread x1 staged /cpu:0", "W1", True, "thread", 1, str(REPO))]
    if "W4" in only:
        for mode in ("thread", "process"):
            variants += [(f"W4 {mode} x2 unstaged", "W4", False, mode, 2, str(REPO)),
                         (f"W4 {mode} x2 staged /cpu:0", "W4", True, mode, 2, str(REPO))]
    values = {v[0]: [] for v in variants}
    for r in range(args.rounds):
        for label, *rest in variants:
            values[label].append(measure(*rest))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.4g}" for k, v in values.items()), flush=True)
    print(f"\nmedians of {args.rounds} interleaved rounds (cores: {os.cpu_count()}):")
    for label, vals in values.items():
        print(f"  {label:34s} {statistics.median(vals):10.4g}   (min {min(vals):.4g}, max {max(vals):.4g})")
    pairs = [(a, b) for a in values for b in values
             if b.startswith(a.split(" unstaged")[0]) and "staged /cpu:0" in b and "unstaged" in a
             and "(base)" not in a]
    for a, b in pairs:
        ratios = [y / x for x, y in zip(values[a], values[b])]
        print(f"  {b} / {a}: median ratio {statistics.median(ratios):.3f}")
    base = [k for k in values if "(base)" in k]
    if base:
        a, b = base[0], base[0].replace(" (base)", "")
        ratios = [y / x for x, y in zip(values[a], values[b])]
        print(f"  {b} / {a}: median ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
