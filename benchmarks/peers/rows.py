"""Peer rows, run with the peers' virtualenv python (a zygote started by benchmarks.run).

* tftables: ``open_file`` + ``get_batch`` (multitables reader processes) + its
  ``FIFOQueueLoader``; HDF5 workloads that read whole datasets in order (W1, W5).
* tensorpack: ``QueueInput`` over a DataFlow -- HDF5 workloads: a DataFlow of the shared
  batch source; generator workloads: a DataFlow of W2's samples + ``BatchData``, in this
  process or in ``MultiProcessRunnerZMQ`` worker processes.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict

from ..references import session_repeats
from ..workloads import FEATURES, batches, make_consumer, producer_samples
from . import compat


def not_applicable(reason: str) -> Dict[str, Any]:
    return {"status": "n/a", "reason": reason}


def counted(sess, fetch, n_batches: int):
    """A step that ends (StopIteration) after ``n_batches``: one epoch of an endless stream."""
    left = [n_batches]

    def step():
        if left[0] == 0:
            raise StopIteration
        left[0] -= 1
        return sess.run(fetch)[1]
    return step


# --------------------------------------------------------------------------------------
# tftables
# --------------------------------------------------------------------------------------


def run_tftables(ctx: Dict[str, Any]) -> Dict[str, Any]:
    if ctx["kind"] != "hdf5":
        return not_applicable("tftables reads HDF5 datasets only; it cannot run a Python generator")
    if ctx.get("rows_path"):
        return not_applicable("tftables has no row selection (it streams whole datasets) and no "
                              "epoch-wise shuffle of a subset")
    tftables = compat.import_tftables()
    consumer = make_consumer(ctx)
    state: Dict[str, Any] = {}

    n_batches = -(-ctx["n_rows"] // ctx["batch"])

    def build():
        reader = tftables.open_file(str(ctx["path"]), ctx["batch"])
        # cyclic=True is tftables' default; cyclic=False (one pass) races in multitables at the
        # end of the data (see NOTES.md), so the row reads exactly one epoch's batches.
        kw = dict(cyclic=True, ordered=True, n_procs=ctx["cores"])
        xb = reader.get_batch("/X", **kw)
        yb = reader.get_batch("/y", **kw)
        loader = reader.get_fifoloader(queue_size=10, inputs=[xb, yb], threads=1)
        x, y = loader.dequeue()
        state["reader"], state["loader"] = reader, loader
        fetch = [consumer([x, y]), y]

        def step_factory(sess):
            loader.start(sess)
            state["sess"] = sess
            return counted(sess, fetch, n_batches)
        return fetch, step_factory

    def after():
        loader, reader = state.pop("loader", None), state.pop("reader", None)
        if loader is not None and loader.monitor_thread is not None:
            loader.stop(state["sess"])
        if reader is not None:
            reader.close()
            import multiprocessing
            for proc in multiprocessing.active_children():  # multitables' readers stop within ~0.1 s
                proc.join(10)
            compat.release_shared_memory()

    return session_repeats(ctx, build, per_repeat_graph=True, after_repeat=after)


# --------------------------------------------------------------------------------------
# tensorpack
# --------------------------------------------------------------------------------------


def run_tensorpack(ctx: Dict[str, Any]) -> Dict[str, Any]:
    compat.import_tensorpack()
    import tensorflow as tf
    from tensorpack.dataflow import BatchData, DataFlow, MultiProcessRunnerZMQ
    from tensorpack.input_source import QueueInput

    procs = ctx.get("procs", 0)
    if ctx["kind"] == "hdf5" and procs:
        return not_applicable("MultiProcessRunnerZMQ replicates the DataFlow in each process (no "
                              "sharding): every row would arrive once per process")
    consumer = make_consumer(ctx)

    class Batches(DataFlow):
        """The workload's shared batch source as a DataFlow."""

        def __iter__(self):
            for x, y in batches(ctx):
                yield [x, y]

    class Samples(DataFlow):
        """W2's producer as a DataFlow of samples (reseeded per process by reset_state)."""

        seed: Any = None

        def reset_state(self):
            self.seed = [ctx["seed"], os.getpid()]

        def __iter__(self):
            for x, y in producer_samples(ctx, ctx["gen_samples"], self.seed):
                yield [x, y]

    if ctx["kind"] == "hdf5":
        n_batches = sum(1 for _ in batches(ctx))
    else:
        n_batches = math.ceil(ctx["gen_samples"] / ctx["batch"])
    state: Dict[str, Any] = {}

    def build():
        if ctx["kind"] == "hdf5":
            df = Batches()
        else:
            df = BatchData(Samples(), ctx["batch"], remainder=True)
            if procs:
                df = MultiProcessRunnerZMQ(df, num_proc=procs, hwm=50)
        inp = QueueInput(df)
        inp.setup([tf.TensorSpec([None, FEATURES], tf.float32, "X"), tf.TensorSpec([None], tf.int64, "y")])
        x, y = inp.get_input_tensors()
        fetch = [consumer([x, y]), y]
        inp._inf_ds.reset_state()  # what QueueInput's callback does; forks ZMQ workers before any session

        def step_factory(sess):
            state.update(inp=inp, df=df, sess=sess)
            with sess.as_default():
                inp.thread.start()
            return counted(sess, fetch, n_batches)
        return fetch, step_factory

    def after():
        inp, df, sess = state.pop("inp", None), state.pop("df", None), state.pop("sess", None)
        if inp is not None:
            try:
                sess.run(inp.thread.close_op)
            except Exception:  # noqa: BLE001 - already closed
                pass
            inp.thread.join(10)
        if isinstance(df, MultiProcessRunnerZMQ):
            df.__del__()  # terminate and join its worker processes now, not at garbage collection

    return session_repeats(ctx, build, per_repeat_graph=True, after_repeat=after)


WAYS = {"tftables": run_tftables, "tensorpack": run_tensorpack}


def run(ctx: Dict[str, Any]) -> Dict[str, Any]:
    out = WAYS[ctx["way"]](ctx)
    if compat.APPLIED:
        out["shims"] = list(compat.APPLIED)
    return out
