"""The reference limits a pipeline is measured against, for the same rows of the same datasets.

* **limit-read** (:func:`limit_read`) -- plain h5py reading the covering chunk-aligned slabs
  into numpy (the best plain-h5py way), no TensorFlow: what the disk and decompression allow;
* **limit-consumer** (:func:`limit_consumer`) -- a ``tf.compat.v1`` session running a consumer
  op on one batch already resident in ``tf.Variable`` s: the most any input pipeline can
  deliver to it;
* **limit-queue** (:func:`limit_queue`, :func:`circulating_queue`) -- the same consumer fed by
  a TF1 queue of batches that circulate (each step dequeues one and enqueues it back): what a
  queue-fed pipeline can reach, with no producer;

and what their users share with them: the covering slab plan, the consumer op, and a
``from_hdf5`` pipeline with its tensors in dataset order.

Shared by ``queuepipe bench`` (:mod:`queuepipe.tools.bench`) and the repository's benchmark
harness (``python -m benchmarks.run``, whose peer rows import it in the peers' virtualenv
too), and imported by every reader process of ``limit_read``.  So it is TensorFlow-free at
import time: TensorFlow, h5py and queuepipe's pipeline are imported inside the functions
that use them.  Nothing here forks: ``limit_read`` with several processes runs them as
fresh interpreters.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import select
import subprocess
import sys
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

# How long limit_read waits for its reader processes to start (each imports numpy and h5py).
START_TIMEOUT_S = 120.0

# --------------------------------------------------------------------------------------
# Covering slabs
# --------------------------------------------------------------------------------------


def chunk_rows_of(ds: Any) -> int:
    """Rows per read granule: the chunk's leading dim, or ~64 KiB worth for contiguous data."""
    if ds.chunks:
        return int(ds.chunks[0])
    row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    return max(1, (64 << 10) // row)


def slab_plan(rows: Optional[np.ndarray], n: int, chunk_rows: int,
              max_slab_rows: int) -> List[Tuple[int, int, int, int]]:
    """Covering slabs ``(lo, hi, start, stop)``: rows ``[lo, hi)`` are read in one call and
    hold ``rows[start:stop]`` (sorted ``rows``); for all rows (``rows is None``) start/stop
    are ``lo``/``hi``.  Slabs cover only the chunks holding a selected row, merged while
    consecutive, up to ``max_slab_rows`` (rounded to whole chunks)."""
    chunk_rows = max(1, int(chunk_rows))
    per = max(1, max_slab_rows // chunk_rows) * chunk_rows
    if rows is None:
        return [(lo, min(n, lo + per), lo, min(n, lo + per)) for lo in range(0, n, per)]
    if rows.size == 0:
        return []
    chunks = np.unique(rows // chunk_rows)
    # split where chunks stop being consecutive or a slab would grow past `per` rows
    breaks = [0]
    first = chunks[0]
    for k in range(1, len(chunks)):
        if chunks[k] != chunks[k - 1] + 1 or (chunks[k] - first + 1) * chunk_rows > per:
            breaks.append(k)
            first = chunks[k]
    breaks.append(len(chunks))
    plan = []
    for a, b in zip(breaks[:-1], breaks[1:]):
        lo = int(chunks[a]) * chunk_rows
        hi = min(n, (int(chunks[b - 1]) + 1) * chunk_rows)
        start, stop = np.searchsorted(rows, [lo, hi])
        plan.append((lo, hi, int(start), int(stop)))
    return plan


def row_nbytes(datasets: Sequence[Any]) -> int:
    """Bytes of one row across ``datasets`` (uncompressed)."""
    return int(sum(int(np.prod(d.shape[1:], dtype=np.int64)) * d.dtype.itemsize for d in datasets))


# --------------------------------------------------------------------------------------
# limit-read: plain h5py, no TensorFlow
# --------------------------------------------------------------------------------------


def read_slabs(path: str, names: Sequence[str], rows: Optional[np.ndarray], *,
               max_slab_rows: int = 2048, part: int = 0, parts: int = 1,
               deadline: Optional[float] = None, min_seconds: float = 0.0) -> int:
    """Read this part's share of the slabs of ``rows`` (sorted or None); returns rows delivered.

    The best plain-h5py way: ``read_direct`` of chunk-aligned slabs into reused buffers,
    selected rows picked out in numpy.  Passes over the share repeat until ``min_seconds``
    have gone by (a tiny selection is otherwise all start-up), never past ``deadline``
    (a ``time.perf_counter()`` value)."""
    import h5py
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        dsets = [f[k] for k in names]
        n = dsets[0].shape[0]
        plan = slab_plan(rows, n, chunk_rows_of(dsets[0]), max_slab_rows)
        mine = plan[len(plan) * part // parts: len(plan) * (part + 1) // parts]
        if not mine:
            return 0
        longest = max(hi - lo for lo, hi, _, _ in mine)
        bufs = [np.empty((longest,) + d.shape[1:], d.dtype) for d in dsets]
        delivered = 0
        while True:
            for lo, hi, start, stop in mine:
                for d, buf in zip(dsets, bufs):
                    d.read_direct(buf, np.s_[lo:hi], np.s_[0:hi - lo])
                    if rows is not None:
                        buf.take(rows[start:stop] - lo, axis=0)  # the selected rows, as a new array
                delivered += stop - start
                if deadline is not None and time.perf_counter() > deadline:
                    return delivered
            if time.perf_counter() - t0 >= min_seconds:
                return delivered


def _timed_share(path: str, names: Sequence[str], rows: Optional[np.ndarray], part: int, parts: int,
                 max_slab_rows: int, seconds: Optional[float], min_seconds: float) -> Tuple[float, float, int]:
    """One part of :func:`limit_read`: ``(t0, t1, rows)``, times from ``time.monotonic()``
    (one clock for every process of the machine, so the parent can span all parts)."""
    t0 = time.monotonic()
    deadline = None if seconds is None else time.perf_counter() + seconds
    got = read_slabs(path, names, rows, max_slab_rows=max_slab_rows, part=part, parts=parts,
                     deadline=deadline, min_seconds=min(min_seconds, seconds or min_seconds))
    return t0, time.monotonic(), got


def limit_read(path: str, names: Sequence[str], rows: Optional[np.ndarray], *, procs: int = 1,
               max_slab_rows: int = 2048, seconds: Optional[float] = None,
               min_seconds: float = 0.2) -> Tuple[int, float]:
    """(rows, seconds) for reading ``rows`` (any order; read sorted) in ``procs`` processes:
    at least one pass and ``min_seconds``, at most ``seconds``.

    ``procs > 1``: each process reads its share of the slabs.  They are fresh interpreters
    (never a fork of this process), released together once all have started; seconds run
    from the earliest start to the latest finish.  A reader's exception is raised here as
    a ``RuntimeError`` with its message."""
    srt = None if rows is None else np.sort(rows)
    if procs <= 1:
        t0, t1, got = _timed_share(path, names, srt, 0, 1, max_slab_rows, seconds, min_seconds)
        return got, t1 - t0
    shares = [(path, list(names), srt, k, procs, max_slab_rows, seconds, min_seconds) for k in range(procs)]
    reports = _run_readers(shares)
    errors = [f"part {k}: {err}" for k, (_, err) in enumerate(reports) if err is not None]
    if errors:
        raise RuntimeError("limit_read: " + "; ".join(errors))
    spans = [span for span, _ in reports]
    return sum(s[2] for s in spans), max(s[1] for s in spans) - min(s[0] for s in spans)


# A reader is ``python -c _READER``: a fresh interpreter, as multiprocessing's "spawn" would
# start, but without spawn's resource-tracker process, which outlives the call.
_READER = "from queuepipe.tools.limits import _reader_main; _reader_main()"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_Report = Tuple[Optional[List[float]], Optional[str]]


def _run_readers(shares: List[tuple]) -> List[_Report]:
    """One reader process per share (the arguments of :func:`_timed_share`); their reports
    ``([t0, t1, rows], None)`` or ``(None, error)``, in share order.

    Each reader gets its share on stdin, imports h5py and says it is ready; only once all
    are ready does each get the byte that starts it.  If one fails before that, none is
    started: their stdin closes and they exit.  No reader outlives this call."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(  # the readers import this very queuepipe
        p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p))
    readers: List[subprocess.Popen] = []
    try:
        for _ in shares:
            readers.append(subprocess.Popen([sys.executable, "-c", _READER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, bufsize=0, env=env))
        for p, share in zip(readers, shares):
            try:
                p.stdin.write(pickle.dumps(share, protocol=pickle.HIGHEST_PROTOCOL))
            except BrokenPipeError:
                pass  # it died at start: its report below says how
        reports: List[Optional[_Report]] = [None] * len(readers)
        deadline = time.monotonic() + START_TIMEOUT_S
        for k, p in enumerate(readers):  # the start barrier
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                reports[k] = (None, f"reader not ready within {START_TIMEOUT_S:.0f} s")
                continue
            first = p.stdout.read(1)
            if first != b"R":
                reports[k] = _report(p, first + p.stdout.read())
        if all(r is None for r in reports):
            for p in readers:
                try:
                    p.stdin.write(b"g")
                    p.stdin.close()
                except BrokenPipeError:
                    pass  # it died since it was ready: its report below says how
            reports = [_report(p, p.stdout.read()) for p in readers]
        return [r if r is not None else (None, "not started: another reader failed first") for r in reports]
    finally:
        for p in readers:  # a reader not started sees its stdin close and exits
            for stream in (p.stdin, p.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        grace_until = time.monotonic() + 5.0
        for p in readers:
            try:
                p.wait(timeout=max(0.0, grace_until - time.monotonic()))
            except subprocess.TimeoutExpired:  # stuck (e.g. in an import): no reader outlives the call
                p.kill()
                p.wait()


def _report(proc: subprocess.Popen, data: bytes) -> _Report:
    """A reader's report (its JSON output after the ready byte) as ``(span, error)``."""
    try:
        out = json.loads(data)
    except ValueError:
        return None, f"reader process ended without a result (exit status {proc.wait()})"
    if isinstance(out, dict):
        return None, str(out.get("error"))
    return out, None


def _reader_main() -> None:
    """In a reader process: load the pickled share from stdin, import h5py, write ``R``, wait
    for the start byte, read, write ``[t0, t1, rows]`` or ``{"error": "Type: message"}`` as JSON."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        share = pickle.load(stdin)
        import h5py  # noqa: F401 - before the start, so the timed share does not import it
        stdout.write(b"R")
        stdout.flush()
        if stdin.read(1) != b"g":
            return  # not started: the parent gave up on the run
        report: Any = list(_timed_share(*share))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        report = {"error": f"{type(exc).__name__}: {exc}"}
    stdout.write(json.dumps(report).encode())
    stdout.flush()


# --------------------------------------------------------------------------------------
# The consumer, and limit-consumer
# --------------------------------------------------------------------------------------


def consumer_op(tensors: Sequence[Any]) -> Any:
    """An op that depends on every tensor of a batch: the sum of all numeric values as
    float32 (string tensors count by their total length)."""
    import tensorflow as tf
    total = None
    for t in tensors:
        if t.dtype == tf.string:
            part = tf.cast(tf.reduce_sum(tf.strings.length(t)), tf.float32)
        elif t.dtype == tf.bool:
            part = tf.cast(tf.reduce_sum(tf.cast(t, tf.int32)), tf.float32)
        else:
            part = tf.cast(tf.reduce_sum(t), tf.float32)
        total = part if total is None else total + part
    return total


@contextlib.contextmanager
def resident_batch(batch: Sequence[np.ndarray], *, make_consumer: Callable = consumer_op,
                   also_fetch: Sequence[int] = ()) -> Iterator[Tuple[Any, Any]]:
    """``(session, fetch)`` for the consumer on ``batch`` held in ``tf.Variable`` s (initialised),
    in a graph of its own; the session closes on exit.

    ``also_fetch``: indices of batch tensors fetched with the consumer op, when the loop
    being compared fetches them too (the harness reads ``y`` back to check delivery)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf1.Variable(b, trainable=False) for b in batch]
        values = [v.read_value() for v in variables]
        fetch = make_consumer(values)
        if also_fetch:
            fetch = [fetch] + [values[i] for i in also_fetch]
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            yield sess, fetch


def timed_steps(step: Callable[[], Any], *, seconds: float = 1.0, warmup: int = 20) -> Tuple[int, float]:
    """(steps, seconds): call ``step`` ``warmup`` times, then time it for ``seconds`` and at least
    5 calls -- the stop rule every limit-consumer-style row shares."""
    for _ in range(warmup):
        step()
    steps = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        step()
        steps += 1
        now = time.perf_counter()
        if now > deadline and steps >= 5:
            return steps, now - t0


def session_step(sess, fetch, driver: str = "sess.run") -> Callable[[], Any]:
    """One step of a training loop: ``sess.run(fetch)`` or, with ``driver="make_callable"``,
    a callable made once by ``sess.make_callable(fetch)`` (skips most of ``sess.run``'s
    per-call Python: the loop a tuned TF1 program runs)."""
    if driver == "make_callable":
        return sess.make_callable(fetch)
    if driver != "sess.run":
        raise ValueError(f"driver must be 'sess.run' or 'make_callable', got {driver!r}")
    return lambda: sess.run(fetch)


def limit_consumer(batch: Sequence[np.ndarray], *, seconds: float = 1.0, warmup: int = 20,
                   make_consumer: Callable = consumer_op, also_fetch: Sequence[int] = (),
                   driver: str = "sess.run") -> Tuple[int, float]:
    """(rows, seconds): the consumer on one batch held in ``tf.Variable`` s, run by ``driver``
    (:func:`session_step`), after ``warmup`` steps, for ``seconds`` and at least 5 steps (see
    :func:`resident_batch`)."""
    with resident_batch(batch, make_consumer=make_consumer, also_fetch=also_fetch) as (sess, fetch):
        steps, elapsed = timed_steps(session_step(sess, fetch, driver), seconds=seconds, warmup=warmup)
    return steps * len(batch[0]), elapsed


def limit_queue(batches: Sequence[Sequence[np.ndarray]], *, seconds: float = 1.0, warmup: int = 20,
                make_consumer: Callable = consumer_op, also_fetch: Sequence[int] = (),
                driver: str = "sess.run") -> Tuple[int, float]:
    """(rows, seconds): the consumer fed by a circulating TF1 ``FIFOQueue``
    (:func:`circulating_queue`), run by ``driver``: what the queue hand-over itself costs the
    step, with no producer and no Python besides the loop."""
    with circulating_queue(batches, make_consumer=make_consumer, also_fetch=also_fetch) as (sess, fetch):
        steps, elapsed = timed_steps(session_step(sess, fetch, driver), seconds=seconds, warmup=warmup)
    return steps * len(batches[0][0]), elapsed


@contextlib.contextmanager
def circulating_queue(batches: Sequence[Sequence[np.ndarray]], *, make_consumer: Callable = consumer_op,
                      also_fetch: Sequence[int] = (), config: Any = None) -> Iterator[Tuple[Any, Any]]:
    """``(session, fetch)`` for the consumer fed by a TF1 ``FIFOQueue`` filled once with
    ``batches``, in a graph of its own; each step dequeues a batch and puts it back before the
    consumer runs.  ``batches`` are distinct, so a step reads memory another step wrote, not one
    cache-hot buffer.  ``also_fetch`` as in :func:`resident_batch`; ``config``: the session's
    ``ConfigProto``.  The session closes on exit."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    first = batches[0]
    graph = tf.Graph()
    with graph.as_default():
        queue = tf1.FIFOQueue(len(batches), [tf.as_dtype(b.dtype) for b in first],
                              shapes=[b.shape for b in first])
        slots = [tf1.placeholder(tf.as_dtype(b.dtype), b.shape) for b in first]
        fill = queue.enqueue(slots)
        values = queue.dequeue()
        with tf.control_dependencies([queue.enqueue(values)]):
            values = [tf.identity(v) for v in values]
            fetch = make_consumer(values)
        if also_fetch:
            fetch = [fetch] + [values[i] for i in also_fetch]
        with tf1.Session(graph=graph, config=config) as sess:
            for b in batches:
                sess.run(fill, dict(zip(slots, b)))
            yield sess, fetch


# --------------------------------------------------------------------------------------
# from_hdf5, built the way the measurers build it
# --------------------------------------------------------------------------------------


def build_hdf5_pipeline(path: str, names: Sequence[str], rows: Optional[np.ndarray], *, batch_size: int,
                        workers: int, mode: str, shuffle: bool = False, num_epochs: int = 1,
                        seed: Optional[int] = None,
                        allow_smaller_final_batch: bool = True) -> Tuple[Any, List[Any]]:
    """``queuepipe.from_hdf5`` over ``names`` in the default graph; returns
    (pipeline, [tensors in ``names`` order])."""
    import queuepipe
    pipe = queuepipe.from_hdf5(path, list(names), rows=rows, batch_size=batch_size, workers=workers,
                               mode=mode, shuffle=shuffle, num_epochs=num_epochs, seed=seed,
                               allow_smaller_final_batch=allow_smaller_final_batch)
    return pipe, batch_tensors(pipe.batch, names)


def batch_tensors(batch: Any, names: Sequence[str]) -> List[Any]:
    """A pipeline's ``.batch`` (dict by dataset name, tuple/list, or one tensor) as a list."""
    if isinstance(batch, dict):
        return [batch[k] for k in names] if all(k in batch for k in names) else list(batch.values())
    if isinstance(batch, (tuple, list)):
        return list(batch)
    return [batch]
