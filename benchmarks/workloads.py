"""The standard workloads W1..W5 (shared/WORKLOADS.md) and what every way of feeding them shares.

TF-free at import: the peers' virtualenv imports this module too.  Every way reads
through the same sources defined here (the HDF5 batch source, the W2 producer), so the
rows differ only in how the data reaches the session.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from queuepipe.tools.limits import chunk_rows_of, consumer_op, slab_plan

FEATURES = 1024
ROW_BYTES = FEATURES * 4 + 8  # X float32 [1024] + y int64
STEP_SECONDS = 0.020          # W4's accelerator-like step
SLAB_ROWS = 2048              # rows per h5py call in the shared HDF5 batch source (8 chunks, 8 MiB)


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    kind: str          # "hdf5" or "generator"
    file: str          # "F1" or "F2"
    batch: int
    epochs: int = 1
    selection: bool = False
    shuffle: bool = False
    sleep_step: bool = False
    check: bool = False  # check every selected row is delivered exactly `epochs` times


WORKLOADS: Dict[str, Workload] = {w.id: w for w in [
    Workload("W1", "in-cache I/O: all rows of F1 in order, 1 epoch", "hdf5", "F1", 128, check=True),
    Workload("W2", "GIL-bound preprocessing: random rows of F1 + ~0.5 ms pure Python per sample",
             "generator", "F1", 128),
    Workload("W3", "partial selection: sorted random 20 % of F1, shuffled, 2 epochs", "hdf5", "F1", 128,
             epochs=2, selection=True, shuffle=True, check=True),
    Workload("W4", "overlap: W2's producer, 20 ms step that does not hold a core", "generator", "F1", 32,
             sleep_step=True),
    Workload("W5", "compressed: all rows of F2 (gzip 4 + shuffle), 1 epoch", "hdf5", "F2", 128, check=True),
]}


# --------------------------------------------------------------------------------------
# The consumer
# --------------------------------------------------------------------------------------


def _sleep_step(total):
    time.sleep(STEP_SECONDS)  # releases the GIL and holds no core, like an accelerator step
    return np.float32(total)


def make_consumer(ctx: Dict[str, Any]) -> Callable:
    """tensors -> the workload's consumer op (W4: the reduction, then a 20 ms sleeping py_func)."""
    if not ctx["sleep_step"]:
        return consumer_op

    def sleeping(tensors):
        import tensorflow as tf
        out = tf.compat.v1.py_func(_sleep_step, [consumer_op(tensors)], tf.float32, stateful=True,
                                   name="step_20ms")
        out.set_shape([])
        return out
    return sleeping


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


def load_rows(ctx: Dict[str, Any]) -> Optional[np.ndarray]:
    return np.load(ctx["rows_path"]) if ctx.get("rows_path") else None


def hdf5_batches(ctx: Dict[str, Any], part: int = 0, parts: int = 1) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(X, y) batches of the workload: covering slabs read with ``read_direct``, selected rows
    picked in numpy; shuffled workloads visit slabs in a random order per epoch and shuffle
    rows within a window of 16 batches.  Batches run on across epoch ends; only the very
    last batch may be smaller.  ``part``/``parts`` take a share of every epoch's slabs."""
    import h5py
    rows = load_rows(ctx)
    batch = ctx["batch"]
    rng = np.random.default_rng([ctx["seed"], part])
    with h5py.File(ctx["path"], "r") as f:
        X, Y = f["X"], f["y"]
        plan = slab_plan(rows, X.shape[0], chunk_rows_of(X), SLAB_ROWS)
        plan = plan[len(plan) * part // parts: len(plan) * (part + 1) // parts]
        window = 16 * batch if ctx["shuffle"] else 0
        pend_x: List[np.ndarray] = []
        pend_y: List[np.ndarray] = []
        pending = 0
        for _ in range(ctx["epochs"]):
            order = rng.permutation(len(plan)) if ctx["shuffle"] else range(len(plan))
            for k in order:
                lo, hi, start, stop = plan[k]
                x = np.empty((hi - lo, FEATURES), np.float32)
                y = np.empty((hi - lo,), np.int64)
                X.read_direct(x, np.s_[lo:hi], np.s_[0:hi - lo])
                Y.read_direct(y, np.s_[lo:hi], np.s_[0:hi - lo])
                if rows is not None:
                    pick = rows[start:stop] - lo
                    x, y = x[pick], y[pick]
                pend_x.append(x)
                pend_y.append(y)
                pending += len(y)
                if pending >= max(batch, window):
                    x, y = np.concatenate(pend_x), np.concatenate(pend_y)
                    if window:
                        perm = rng.permutation(len(y))
                        x, y = x[perm], y[perm]
                    full = len(y) // batch * batch
                    for i in range(0, full, batch):
                        yield x[i:i + batch], y[i:i + batch]
                    pend_x, pend_y, pending = [x[full:]], [y[full:]], len(y) - full
        if pending:
            x, y = np.concatenate(pend_x), np.concatenate(pend_y)
            if window:
                perm = rng.permutation(len(y))
                x, y = x[perm], y[perm]
            for i in range(0, len(y), batch):
                yield x[i:i + batch], y[i:i + batch]


def python_work(loops: int) -> int:
    """The W2 per-sample pure-Python work (holds the GIL throughout)."""
    acc = 0
    for k in range(loops):
        acc = (acc * 31 + k) & 0xFFFFF
    return acc


def calibrate_loops(target_s: float = 0.0005, trials: int = 7) -> int:
    """Loop count of :func:`python_work` that takes ``target_s`` on this machine now."""
    python_work(20000)
    per = []
    for _ in range(trials):
        t0 = time.perf_counter()
        python_work(20000)
        per.append((time.perf_counter() - t0) / 20000)
    return max(1, int(round(target_s / statistics.median(per))))


def producer_samples(ctx: Dict[str, Any], n: int, seed: Any) -> Iterator[Tuple[np.ndarray, np.int64]]:
    """W2's generator: ``n`` rows of F1 at random positions, each followed by ~0.5 ms of Python."""
    import h5py
    loops = ctx["work_loops"]
    rng = np.random.default_rng(seed)
    with h5py.File(ctx["path"], "r") as f:
        X, Y = f["X"], f["y"]
        total = X.shape[0]
        for i in rng.integers(0, total, size=n):
            x = X[int(i)]
            y = Y[int(i)]
            python_work(loops)
            yield x, y


def producer_batches(ctx: Dict[str, Any], n: int, seed: Any) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """W2's generator grouped into batches with ``np.stack`` (the last one may be smaller)."""
    batch = ctx["batch"]
    xs, ys = [], []
    for x, y in producer_samples(ctx, n, seed):
        xs.append(x)
        ys.append(y)
        if len(ys) == batch:
            yield np.stack(xs), np.asarray(ys, np.int64)
            xs, ys = [], []
    if ys:
        yield np.stack(xs), np.asarray(ys, np.int64)


class ProducerGen:
    """A picklable ``from_generator`` callable for W2/W4: each worker produces its share.

    ``queuepipe.worker_info()`` tells the worker its index and seed."""

    def __init__(self, ctx: Dict[str, Any]):
        self.ctx = {k: ctx[k] for k in ("path", "work_loops", "gen_samples", "seed")}

    def __call__(self):
        from queuepipe import worker_info
        info = worker_info()
        index, count, seed = (0, 1, self.ctx["seed"]) if info is None else (info.index, info.count, info.seed)
        n = self.ctx["gen_samples"] * (index + 1) // count - self.ctx["gen_samples"] * index // count
        return producer_samples(self.ctx, n, seed)


def batches(ctx: Dict[str, Any], part: int = 0, parts: int = 1) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """The workload's (X, y) batches, read the shared way."""
    if ctx["kind"] == "hdf5":
        return hdf5_batches(ctx, part, parts)
    n = ctx["gen_samples"] * (part + 1) // parts - ctx["gen_samples"] * part // parts
    return producer_batches(ctx, n, [ctx["seed"], part])


def samples(ctx: Dict[str, Any]) -> Iterator[Tuple[np.ndarray, Any]]:
    """The workload's rows one at a time (for the per-sample recipes)."""
    if ctx["kind"] == "hdf5":
        return (row for x, y in hdf5_batches(ctx) for row in zip(x, y))
    return producer_samples(ctx, ctx["gen_samples"], ctx["seed"])


class LockedIterator:
    """One iterator stepped from several threads (py_func bodies), one ``next`` at a time."""

    def __init__(self, it: Iterator[Any]):
        self.it = it
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            return next(self.it)


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


class Delivery:
    """Counts the y values delivered, to check every selected row arrives exactly ``epochs`` times."""

    def __init__(self, ctx: Dict[str, Any]):
        self.enabled = bool(ctx["check"])
        self.ctx = ctx
        self.seen: List[np.ndarray] = []

    def add(self, y) -> None:
        if self.enabled:
            self.seen.append(np.asarray(y).reshape(-1))

    def verdict(self, finished: bool) -> Optional[str]:
        if not self.enabled:
            return None
        if not finished:
            return "not checked (time-capped)"
        ctx = self.ctx
        got = np.bincount(np.concatenate(self.seen) if self.seen else np.zeros(0, np.int64),
                          minlength=ctx["n_rows"])
        rows = load_rows(ctx)
        want = np.zeros(ctx["n_rows"], np.int64)
        if rows is None:
            want[:] = ctx["epochs"]
        else:
            want[rows] = ctx["epochs"]
        if len(got) != len(want):
            return f"FAIL: row ids beyond the dataset ({len(got) - len(want)} extra)"
        bad = np.flatnonzero(got != want)
        if not len(bad):
            return "ok"
        missing = int(np.maximum(want - got, 0).sum())
        extra = int(np.maximum(got - want, 0).sum())
        return f"FAIL: {missing} rows missing, {extra} extra (of {int(want.sum())})"


def drive(step: Callable[[], Any], ctx: Dict[str, Any], end_errors: Tuple[type, ...] = (StopIteration,),
          delivery: Optional[Delivery] = None) -> Dict[str, Any]:
    """Call ``step()`` (-> the batch's y) until the data ends or the time cap; time after warm-up.

    Returns rows timed, seconds, first-batch latency, and whether the data ended."""
    warm = ctx["warmup_batches"]
    cap = ctx["max_seconds"]
    t_start = time.perf_counter()
    first = t0 = t_last = t_prev = None
    n = timed = total = 0
    finished = False
    try:
        while True:
            y = step()
            now = t_prev = time.perf_counter()
            total += len(y)
            if delivery is not None:
                delivery.add(y)
            n += 1
            if first is None:
                first = now - t_start
            if t0 is None:
                if n >= max(1, warm):
                    t0 = now
            else:
                timed += len(y)
                t_last = now
                if now - t0 > cap:
                    break
    except end_errors:
        finished = True
    except BaseException as exc:
        exc.bench_batches = n  # lets a caller tell "never started" from "failed midway"
        raise
    if timed:
        rows, seconds = timed, t_last - t0
    else:  # fewer batches than the warm-up: everything, start-up included
        rows, seconds = total, (t_prev or time.perf_counter()) - t_start
    return {"rows": int(rows), "seconds": float(max(seconds, 1e-9)), "first_batch_s": first,
            "finished": finished, "batches": n, "delivered": int(total)}


def summarize(repeats: List[Dict[str, Any]], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Median samples/s over the repeats (and the spread)."""
    rates = [r["rows"] / r["seconds"] for r in repeats if r["seconds"] > 0 and r["rows"] > 0]
    out: Dict[str, Any] = {"status": "ok" if rates else "error",
                           "samples_per_s": statistics.median(rates) if rates else None,
                           "repeat_samples_per_s": rates,
                           "first_batch_s": statistics.median([r["first_batch_s"] for r in repeats
                                                               if r.get("first_batch_s") is not None] or [0.0]),
                           "rows_timed": sum(r["rows"] for r in repeats)}
    if not rates:
        out["reason"] = "no rows were delivered"
    checks = [r["check"] for r in repeats if r.get("check")]
    if checks:
        fails = [c for c in checks if c.startswith("FAIL")]
        out["check"] = fails[0] if fails else checks[0]
    if extra:
        out.update(extra)
    return out
