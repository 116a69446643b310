"""Issue 13's candidates for W1's serial cost, each measured on its own.

``python -m benchmarks.probes.handover [--rounds 5] [--seconds 2]``, interleaved rounds,
medians; batch 128 x 4 KiB rows (W1's), the harness's consumer op + ``y``:

1. **the dequeue gate** -- limit-queue's step with queuepipe's per-step ops added after the
   dequeue: the error ``Switch``/``Merge``, then also the consumer statistics (two
   ``tf.timestamp``s, the batch's rows, an ``assign_add``), against the bare circulating
   queue, with ``sess.run`` and with ``make_callable``;
2. **a block's enqueue op** -- the cost of queuepipe's per-block graph (``tf.cond`` + 16 chained
   slice enqueues of an 8 MiB block) run on a ready block, per block and per batch, against
   16 plain enqueues of one batch each (16 dequeues in the same loop keep the queue from
   filling, so the figure is enqueue + dequeue);
3. **the ``numpy_function`` hand-over** -- the same enqueue op fed by a ``numpy_function``
   returning the ready block against the block fed to ``placeholder_with_default``s;
4. **TF's inter-op pool** -- queuepipe from_hdf5 thread x1 under the default session config
   against ``inter_op_parallelism_threads=4`` and ``use_per_session_threads=True``.

A side probe for BENCHMARKS.md's "Where the time goes", not a harness row.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import numpy as np

B, FEATURES, PER_BLOCK = 128, 1024, 16


def _rate(step: Callable[[], object], seconds: float, per_call: int = 1, warmup: int = 20) -> float:
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * per_call / (time.perf_counter() - t0)


def gate(driver: str, seconds: float, gated: bool, stats: bool = False) -> float:
    """Batches/s of limit-queue's step, bare or with queuepipe's per-step ops: the error gate
    (``gated``) and the consumer statistics (``stats``)."""
    import tensorflow as tf
    from queuepipe.tf.consumer_stats import ConsumerStats, step_started
    from queuepipe.tools.limits import consumer_op, session_step
    tf1 = tf.compat.v1
    rng = np.random.default_rng(0)
    with tf.Graph().as_default() as g:
        q = tf1.FIFOQueue(32, [tf.float32, tf.int64, tf.string], shapes=[[B, FEATURES], [B], []])
        xs, ys = tf1.placeholder(tf.float32, [B, FEATURES]), tf1.placeholder(tf.int64, [B])
        fill = q.enqueue([xs, ys, ""])
        started = step_started() if stats else None
        x, y, err = q.dequeue()
        after = [q.enqueue([x, y, err])]
        if gated:
            on_error, on_ok = tf.raw_ops.Switch(data=err, pred=tf.equal(err, ""))
            merged, _ = tf.raw_ops.Merge(inputs=[on_ok, tf.identity(on_error)])
            after.append(merged)
        if stats:
            recorder = ConsumerStats(q.queue_ref)
            after.append(recorder.record(started, [x, y, err], tf.shape(y)[0]))
        with tf.control_dependencies(after):
            x, y = tf.identity(x), tf.identity(y)
        fetch = [consumer_op([x, y]), y]
        with tf1.Session(graph=g) as sess:
            if stats:
                sess.run(recorder.reset_op)
            for _ in range(32):
                sess.run(fill, {xs: rng.random((B, FEATURES), np.float32), ys: np.arange(B)})
            return _rate(session_step(sess, fetch, driver), seconds)


def enqueue_ops(seconds: float, kind: str) -> float:
    """Batches/s through queuepipe's per-block enqueue graph (or plain per-batch enqueues) on a
    ready block, the queue emptied by an op in the same run."""
    import tensorflow as tf
    from queuepipe.tf.pipeline import _enqueue_block
    from queuepipe.workers.buffers import aligned_empty
    tf1 = tf.compat.v1
    block_x = aligned_empty((B * PER_BLOCK, FEATURES), np.float32)
    block_x[:] = 1
    block_y = np.arange(B * PER_BLOCK, dtype=np.int64)
    errors = np.full(PER_BLOCK, b"", dtype=object)
    with tf.Graph().as_default() as g:
        q = tf1.FIFOQueue(64, [tf.float32, tf.int64, tf.string], shapes=[[B, FEATURES], [B], []])
        if kind == "numpy_function":
            outs = tf1.numpy_function(lambda: [block_x, block_y, errors], [], [tf.float32, tf.int64, tf.string])
            cols, errs = [outs[0], outs[1]], outs[2]
            cols[0].set_shape([None, FEATURES])
            cols[1].set_shape([None])
            errs.set_shape([None])
        else:
            cols = [tf1.placeholder(tf.float32, [None, FEATURES]), tf1.placeholder(tf.int64, [None])]
            errs = tf1.placeholder(tf.string, [None])
        if kind == "plain per batch":
            op = tf.group(*[q.enqueue([cols[0][j * B:(j + 1) * B], cols[1][j * B:(j + 1) * B], errs[j]])
                            for j in range(PER_BLOCK)])
        else:
            op = _enqueue_block(q, cols, errs, B, PER_BLOCK)
        drain = tf.group(*[q.dequeue()[2] for _ in range(PER_BLOCK)])  # no copy, unlike dequeue_many
        with tf1.Session(graph=g) as sess:
            if kind == "numpy_function":
                run = sess.make_callable(op)

                def step():
                    run()
                    sess.run(drain)
            else:
                run = sess.make_callable(op, feed_list=cols + [errs])

                def step():
                    run(block_x, block_y, errors)
                    sess.run(drain)
            return _rate(step, seconds, per_call=PER_BLOCK, warmup=5)


def inter_op(seconds: float, config_kind: str) -> float:
    import tensorflow as tf
    import queuepipe
    from queuepipe.tools.limits import consumer_op
    from benchmarks.data import SIZES, ensure_file
    tf1 = tf.compat.v1
    path = str(ensure_file("F1", SIZES["full"]["F1"], log=lambda m: None))
    config = {"default": None,
              "inter_op 4": tf1.ConfigProto(inter_op_parallelism_threads=4),
              "per-session threads": tf1.ConfigProto(use_per_session_threads=True)}[config_kind]
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, num_epochs=None)
        x, y = pipe.batch
        fetch = [consumer_op([x, y]), y]
        with tf1.Session(config=config) as sess, queuepipe.running(sess):
            return _rate(lambda: sess.run(fetch), seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    s = args.seconds
    ways: Dict[str, Callable[[], float]] = {}
    for driver in ("sess.run", "make_callable"):
        ways[f"1 limit-queue step [{driver}]"] = lambda d=driver: gate(d, s, False)
        ways[f"1 + gate [{driver}]"] = lambda d=driver: gate(d, s, True)
        ways[f"1 + gate + statistics [{driver}]"] = lambda d=driver: gate(d, s, True, True)
    for kind in ("plain per batch", "block (cond + chained slices)", "numpy_function"):
        ways[f"2/3 enqueue: {kind}"] = lambda k=kind: enqueue_ops(s, k)
    for kind in ("default", "inter_op 4", "per-session threads"):
        ways[f"4 W1 thread x1, {kind}"] = lambda k=kind: inter_op(s, k)
    got: Dict[str, List[float]] = {k: [] for k in ways}
    for r in range(args.rounds):
        for k, f in ways.items():
            got[k].append(f())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in got.items()), flush=True)
    print(f"\nbatches/s, medians of {args.rounds} interleaved rounds:")
    for k, v in got.items():
        print(f"  {k:48s} {statistics.median(v):9.0f}   us/batch {1e6 / statistics.median(v):7.1f}")


if __name__ == "__main__":
    main()
