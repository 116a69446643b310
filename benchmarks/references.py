"""Reference rows: the limits and the usual ways of feeding a tf.compat.v1 session.

Each ``run_<way>(ctx)`` runs in a fresh process (forked by benchmarks.zygote) and
returns the row's figures.  Every way reads through the sources in
benchmarks.workloads, so only the feeding mechanism differs.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from queuepipe.tools.limits import limit_consumer, limit_queue, limit_read, session_step
from .forking import in_processes
from .workloads import (FEATURES, Delivery, LockedIterator, batches, drive, load_rows, make_consumer,
                        samples, summarize)


def quiet():
    """Silence TF's deprecation notices for the TF1 APIs the references use on purpose."""
    try:
        from tensorflow.python.util import deprecation
        return deprecation.silence()
    except Exception:  # noqa: BLE001 - private module moved: just be noisy
        return contextlib.nullcontext()


# --------------------------------------------------------------------------------------
# Shared session loop
# --------------------------------------------------------------------------------------


def session_repeats(ctx: Dict[str, Any], build: Callable[[], Any], *, per_repeat_graph: bool = False,
                    runners: str = "none", after_repeat: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    """Run the workload ``ctx["repeats"]`` times, a fresh session each time.

    ``build()`` is called inside a new graph and returns ``(fetch, step_factory)``:
    ``fetch`` = [consumer op, y tensor]; ``step_factory(sess)`` returns ``step() -> y``
    or None for ``sess.run(fetch)[1]``.  ``runners``: "none", "tf1" (the graph's queue
    runners under a Coordinator) or "queuepipe" (``queuepipe.running``); ``after_repeat()``
    runs at the end of each repeat while its session is still open.  An exception
    carries ``bench_batches``: the batches delivered before it."""
    import tensorflow as tf
    graph = built = None
    results: List[Dict[str, Any]] = []
    try:
        for i in range(ctx["repeats"]):
            if graph is None or per_repeat_graph:
                graph = tf.Graph()
                with graph.as_default(), quiet():
                    built = build()
            rep_ctx = ctx
            if i == 0 and ctx["check"] and ctx["group"] == "queuepipe":  # the delivery check sees all data
                rep_ctx = dict(ctx, max_seconds=max(ctx["max_seconds"], ctx["check_seconds"]))
            results.append(_one_repeat(rep_ctx, graph, *built, runners=runners, after=after_repeat))
    except BaseException as exc:
        exc.bench_batches = getattr(exc, "bench_batches", 0) + sum(r["batches"] for r in results)
        raise
    return summarize(results)


def _one_repeat(ctx: Dict[str, Any], graph, fetch, step_factory, *, runners: str,
                after: Optional[Callable[[], None]]) -> Dict[str, Any]:
    import tensorflow as tf
    v1 = tf.compat.v1
    ends = (tf.errors.OutOfRangeError, StopIteration)
    delivery = Delivery(ctx)
    with v1.Session(graph=graph) as sess:
        try:
            r = _drive_session(ctx, sess, fetch, step_factory, runners, ends, delivery)
        finally:
            if after is not None:
                after()
    r["check"] = delivery.verdict(r["finished"])
    return r


def _drive_session(ctx, sess, fetch, step_factory, runners, ends, delivery) -> Dict[str, Any]:
    import tensorflow as tf
    v1 = tf.compat.v1
    step = step_factory(sess) if step_factory else None
    if step is None:
        run_step = session_step(sess, fetch, ctx.get("driver") or "sess.run")
        step = lambda: run_step()[1]  # noqa: E731 - y, for the delivery check
    if runners == "queuepipe":
        import queuepipe
        with queuepipe.running(sess):
            return drive(step, ctx, ends, delivery)
    if runners == "tf1":
        coord = v1.train.Coordinator()
        with quiet():
            threads = v1.train.start_queue_runners(sess=sess, coord=coord)
        try:
            return drive(step, ctx, ends, delivery)
        finally:
            coord.request_stop()
            try:
                coord.join(threads, stop_grace_period_secs=10)
            except (tf.errors.OutOfRangeError, tf.errors.CancelledError):
                pass
    return drive(step, ctx, ends, delivery)


def signature(tf, batched: bool):
    lead = [None] if batched else []
    return (tf.TensorSpec(lead + [FEATURES], tf.float32), tf.TensorSpec(lead, tf.int64))


# --------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------


def run_limit_read(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """Plain h5py (HDF5 workloads) or the bare producer (generator workloads), no TF, in
    ``ctx["procs"]`` processes: limit_read's fresh reader interpreters, or the producer forked here."""
    procs = ctx.get("procs", 1)
    reps = []
    for _ in range(ctx["repeats"]):
        if ctx["kind"] == "hdf5":
            rows, secs = limit_read(ctx["path"], ["X", "y"], load_rows(ctx), procs=procs,
                                    seconds=ctx["max_seconds"])
        else:
            def part(k: int, parts: int) -> int:
                deadline = time.perf_counter() + ctx["max_seconds"]
                got = 0
                for x, y in batches(ctx, k, parts):
                    got += len(y)
                    if time.perf_counter() > deadline:
                        break
                return got
            rows, secs = in_processes(part, procs)
        reps.append({"rows": rows, "seconds": secs, "first_batch_s": None})
    return summarize(reps, {"procs": procs})


def run_limit_consumer(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """The consumer on one batch already resident in tf.Variables: no input pipeline at all.

    It fetches what every feeding row's step fetches -- the consumer op and ``y``, which
    the harness reads back to check delivery -- so the ratios compare like with like
    (fetching ``y`` costs ~10 % of this step on the 2-core VM)."""
    x, y = next(iter(batches(ctx)))
    return _limit_repeats(ctx, limit_consumer, [x, y])


def _limit_repeats(ctx: Dict[str, Any], measure: Callable[..., Any], data: Any) -> Dict[str, Any]:
    """``ctx["repeats"]`` runs of a consumer limit (``limit_consumer`` or ``limit_queue`` on
    ``data``) with the workload's consumer and loop; the summary gains the step in ms."""
    reps = []
    for _ in range(ctx["repeats"]):
        rows, secs = measure(data, seconds=ctx["max_seconds"], make_consumer=make_consumer(ctx),
                             warmup=ctx["warmup_batches"], also_fetch=(1,),
                             driver=ctx.get("driver") or "sess.run")
        reps.append({"rows": rows, "seconds": secs, "first_batch_s": None})
    out = summarize(reps)
    if out["samples_per_s"]:
        out["step_ms"] = 1000.0 * ctx["batch"] / out["samples_per_s"]
    return out


LIMIT_QUEUE_BATCHES = 32  # distinct batches circulating (W1: 16 MiB, beyond the caches' reach)


def run_limit_queue(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """The same consumer fed by a circulating FIFOQueue of the workload's first batches: each
    step dequeues a batch and enqueues it back (:func:`queuepipe.tools.limits.limit_queue`).
    What any TF1-queue-fed pipeline can reach: the queue's own cost, no producer."""
    import itertools
    first = [(x.copy(), y.copy()) for x, y in itertools.islice(batches(ctx), LIMIT_QUEUE_BATCHES)]
    first = [b for b in first if len(b[1]) == ctx["batch"]] or first[:1]
    return _limit_repeats(ctx, limit_queue, first)


# --------------------------------------------------------------------------------------
# Ways of feeding
# --------------------------------------------------------------------------------------


def run_feed_dict(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """A Python generator of batches, fed with feed_dict: the pattern users start from."""
    consumer = make_consumer(ctx)

    def build():
        import tensorflow as tf
        v1 = tf.compat.v1
        px = v1.placeholder(tf.float32, [None, FEATURES], name="X")
        py = v1.placeholder(tf.int64, [None], name="y")
        fetch = [consumer([px, py]), py]

        def step_factory(sess):
            it = batches(ctx)

            def step():
                x, y = next(it)
                return sess.run(fetch, {px: x, py: y})[1]
            return step
        return fetch, step_factory
    return session_repeats(ctx, build)


def run_tf_data(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """The tf.data recipe: from_generator (samples) + map(num_parallel_calls) + batch + prefetch,
    through a tf.compat.v1 one-shot iterator."""
    return _tf_data(ctx, batched=False)


def run_tf_data_batches(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """tf.data with the generator yielding whole batches (+ map + prefetch; no batch())."""
    return _tf_data(ctx, batched=True)


def _tf_data(ctx: Dict[str, Any], batched: bool) -> Dict[str, Any]:
    consumer = make_consumer(ctx)

    def build():
        import tensorflow as tf
        v1 = tf.compat.v1
        gen = (lambda: batches(ctx)) if batched else (lambda: samples(ctx))
        ds = tf.data.Dataset.from_generator(gen, output_signature=signature(tf, batched))
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        if not batched:
            ds = ds.batch(ctx["batch"])
        ds = ds.prefetch(tf.data.AUTOTUNE)
        x, y = v1.data.make_one_shot_iterator(ds).get_next()
        return [consumer([x, y]), y], None
    return session_repeats(ctx, build, per_repeat_graph=True)


def run_tf1_native(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """TF1 tutorial style: a py_func reader + train.batch / shuffle_batch + QueueRunner.

    HDF5 workloads: each py_func call returns one slab-read block (``enqueue_many``), one
    reader thread (in order) -- shuffle_batch for shuffled workloads.  Generator
    workloads: each call returns one sample, ``num_threads`` = cores."""
    consumer = make_consumer(ctx)
    holder: Dict[str, Any] = {}

    def build():
        import tensorflow as tf
        v1 = tf.compat.v1
        B = ctx["batch"]
        if ctx["kind"] == "hdf5":
            def read():
                return holder["it"].next()
            x, y = v1.py_func(read, [], [tf.float32, tf.int64], stateful=True, name="read_block")
            x.set_shape([None, FEATURES])
            y.set_shape([None])
            if ctx["shuffle"]:
                xb, yb = v1.train.shuffle_batch([x, y], B, capacity=32 * B, min_after_dequeue=16 * B,
                                                num_threads=1, enqueue_many=True,
                                                allow_smaller_final_batch=True, seed=ctx["seed"])
            else:
                xb, yb = v1.train.batch([x, y], B, capacity=16 * B, num_threads=1, enqueue_many=True,
                                        allow_smaller_final_batch=True)
        else:
            def read():
                x, y = holder["it"].next()
                return x, np.int64(y)
            x, y = v1.py_func(read, [], [tf.float32, tf.int64], stateful=True, name="read_sample")
            x.set_shape([FEATURES])
            y.set_shape([])
            xb, yb = v1.train.batch([x, y], B, capacity=16 * B, num_threads=ctx["cores"],
                                    allow_smaller_final_batch=True)
        fetch = [consumer([xb, yb]), yb]

        def step_factory(sess):
            holder["it"] = LockedIterator(iter(batches(ctx) if ctx["kind"] == "hdf5" else samples(ctx)))
            return None
        return fetch, step_factory
    return session_repeats(ctx, build, runners="tf1")


WAYS = {
    "limit-read": run_limit_read,
    "limit-consumer": run_limit_consumer,
    "limit-queue": run_limit_queue,
    "feed_dict": run_feed_dict,
    "tf.data": run_tf_data,
    "tf.data (batches)": run_tf_data_batches,
    "tf1-native": run_tf1_native,
}


def run(ctx: Dict[str, Any]) -> Dict[str, Any]:
    return WAYS[ctx["way"]](ctx)
