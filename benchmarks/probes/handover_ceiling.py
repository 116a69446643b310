"""The ceiling of any pipeline that hands blocks to a TF1 queue through Python (issue 13).

``python -m benchmarks.probes.handover_ceiling [--rounds 5] [--seconds 3] [--driver make_callable]``:
each way in a fresh interpreter, rounds interleaved, W1's step (the harness's consumer op +
``y``, batch 128 x 4 KiB rows of F1, in the page cache), reported as ratios to limit-queue
of the same round:

- ``limit-queue``: the circulating ``FIFOQueue`` of 32 distinct batches (no producer);
- ``hand-over, no read``: the least pipeline of queuepipe's shape -- one runner thread runs,
  inline (``RunOptions(inter_op_thread_pool=-1)``), an enqueue op whose ``numpy_function``
  returns a whole block of 16 batches and 16 chained zero-copy dim-0 slice enqueues into a
  ``FIFOQueue`` of 32 batches; the dequeue passes an error gate (``Switch``/``Merge``) --
  fed from 8 blocks read beforehand: the hand-over alone, no planning, batching or bookkeeping;
- ``hand-over + preadv``: the same, each block's ``X`` read with one ``preadv`` into a fresh
  64-byte-aligned buffer (``y`` computed): what copying the data out of the page cache adds;
- ``hand-over + mmap, 1st pass``: each block's ``X`` a view of one read-only mapping of the
  whole file (F1's chunks are 64-byte aligned, so TF takes the view without a copy), timed
  over the file's first pass only: the page tables fill as the consumer touches the pages;
- ``hand-over + mmap populated, 1st pass``: the same, the runner filling each block's page
  tables first (``MADV_POPULATE_READ``), as a reader must for data not in the page cache;
- ``hand-over + mmap, later passes``: the same mapping over many passes, page tables already
  filled: a zero-copy reader from the second epoch on;
- ``queuepipe thread x1``: ``from_hdf5`` over F1, in order, repeated epochs.

For the hand-over ways it also reports the runner thread's CPU per block, split into making
the block (the read) and running the enqueue op.  A side probe for BENCHMARKS.md ("W1
against limit-queue"), not a harness row: nothing of it is queuepipe's code path except the
last way.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .fresh import interleaved_rounds, run_child

B, PER_BLOCK, WIDTH = 128, 16, 1024
BLOCK_ROWS = B * PER_BLOCK
WARMUP = 100
WAYS = ("limit-queue", "hand-over, no read", "hand-over + preadv", "hand-over + mmap, 1st pass",
        "hand-over + mmap populated, 1st pass", "hand-over + mmap, later passes", "queuepipe thread x1")
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14


class Blocks:
    """The hand-over ways' block source: (X, y) of block k of F1, made the way ``way`` says."""

    def __init__(self, way: str, path: str):
        import h5py
        from queuepipe.workers.buffers import aligned_empty
        self.way, self.aligned_empty = way, aligned_empty
        with h5py.File(path, "r") as f:
            x = f["X"]
            self.n_blocks = x.shape[0] // BLOCK_ROWS
            self.x_offset = x.id.get_chunk_info(0).byte_offset  # the benchmark writes the chunks in order
        self.fd = os.open(path, os.O_RDONLY)
        self.map = mmap.mmap(self.fd, 0, prot=mmap.PROT_READ) if "mmap" in way else None
        self.ready: List[Tuple[np.ndarray, np.ndarray]] = []
        if way == "hand-over, no read":
            self.ready = [self._read(k) for k in range(8)]
        self.k = 0

    def _read(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        x = self.aligned_empty((BLOCK_ROWS, WIDTH), np.float32)
        os.preadv(self.fd, [x], self.x_offset + k * x.nbytes)
        return x, self._y(k)

    def _y(self, k: int) -> np.ndarray:
        y = self.aligned_empty((BLOCK_ROWS,), np.int64)
        y[:] = np.arange(k * BLOCK_ROWS, (k + 1) * BLOCK_ROWS)
        return y

    def next(self) -> Tuple[np.ndarray, np.ndarray]:
        k = self.k % self.n_blocks
        self.k += 1
        if self.ready:
            return self.ready[k % len(self.ready)]
        if self.map is None:
            return self._read(k)
        offset = self.x_offset + k * BLOCK_ROWS * WIDTH * 4
        if "populated" in self.way:
            start = offset - offset % mmap.PAGESIZE
            self.map.madvise(MADV_POPULATE_READ, start, offset + BLOCK_ROWS * WIDTH * 4 - start)
        x = np.frombuffer(self.map, np.float32, count=BLOCK_ROWS * WIDTH, offset=offset)
        return x.reshape(BLOCK_ROWS, WIDTH), self._y(k)

    def close(self) -> None:
        self.ready = []
        os.close(self.fd)


def hand_over(way: str, path: str, driver: str, seconds: float) -> dict:
    """A hand-over way's rows/s and its runner's CPU per block."""
    import tensorflow as tf
    from queuepipe.tools.limits import consumer_op, session_step
    tf1 = tf.compat.v1
    blocks = Blocks(way, path)
    pending: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    errors = np.full(PER_BLOCK, b"", dtype=object)
    cpu = {"make": 0.0, "enqueue": 0.0, "blocks": 0}

    def pull():
        x, y = pending.pop("block")
        return x, y, errors

    with tf.Graph().as_default():
        queue = tf1.FIFOQueue(2 * PER_BLOCK, [tf.float32, tf.int64, tf.string])
        xb, yb, eb = tf1.numpy_function(pull, [], [tf.float32, tf.int64, tf.string])
        enqueue = None
        for j in range(PER_BLOCK):
            rows = slice(j * B, (j + 1) * B)
            with tf.control_dependencies([enqueue] if enqueue is not None else []):
                enqueue = queue.enqueue([xb[rows], yb[rows], eb[j]])
        x, y, error = queue.dequeue()
        on_error, on_ok = tf.raw_ops.Switch(data=error, pred=tf.equal(error, ""))
        raised = tf1.numpy_function(lambda message: message, [on_error], tf.string, stateful=True)
        gate, _ = tf.raw_ops.Merge(inputs=[on_ok, raised])
        with tf.control_dependencies([gate]):
            x, y = tf.identity(x), tf.identity(y)
        with tf1.Session() as sess:
            run_enqueue = sess.make_callable(enqueue, accept_options=True)
            inline = tf1.RunOptions(inter_op_thread_pool=-1)
            stop = threading.Event()

            def runner() -> None:
                try:
                    while not stop.is_set():
                        t0 = time.thread_time()
                        pending["block"] = blocks.next()
                        t1 = time.thread_time()
                        run_enqueue(options=inline)
                        cpu["make"] += t1 - t0
                        cpu["enqueue"] += time.thread_time() - t1
                        cpu["blocks"] += 1
                except (tf.errors.CancelledError, tf.errors.OutOfRangeError):
                    pass

            thread = threading.Thread(target=runner, daemon=True)
            thread.start()
            try:
                step = session_step(sess, [consumer_op([x, y]), y], driver)
                steps = blocks.n_blocks * PER_BLOCK - WARMUP if way.endswith("1st pass") else None
                rate = _rate(step, seconds, steps)
            finally:
                stop.set()
                sess.run(queue.close(cancel_pending_enqueues=True))
                thread.join()
                blocks.close()
    n = max(1, cpu["blocks"])
    return {"rows_s": rate, "make_us": cpu["make"] / n * 1e6, "enqueue_us": cpu["enqueue"] / n * 1e6}


def _rate(step: Callable[[], object], seconds: float, steps: Optional[int] = None) -> float:
    """Rows/s of ``step`` after the warm-up: for ``seconds``, or for exactly ``steps`` steps."""
    for _ in range(WARMUP):
        step()
    n, t0 = 0, time.perf_counter()
    while (n < steps) if steps is not None else (time.perf_counter() - t0 < seconds):
        step()
        n += 1
    return n * B / (time.perf_counter() - t0)


def child(way: str, driver: str, seconds: float) -> dict:
    from benchmarks.data import SIZES, ensure_file
    from benchmarks.probes.w1_cpu import child as w1_child
    path = str(ensure_file("F1", SIZES["full"]["F1"], log=lambda m: None))
    if way == "limit-queue":
        return {"rows_s": w1_child("limit-queue", driver, seconds)["rows_s"]}
    if way == "queuepipe thread x1":
        return {"rows_s": w1_child("queuepipe thread x1", driver, seconds)["rows_s"]}
    return hand_over(way, path, driver, seconds)


def measure(way: str, driver: str, seconds: float) -> dict:
    return run_child("benchmarks.probes.handover_ceiling", way, driver, str(seconds))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--driver", choices=("sess.run", "make_callable"), default="make_callable")
    args = parser.parse_args()
    from benchmarks.data import SIZES, ensure_file, warm_page_cache
    warm_page_cache(ensure_file("F1", SIZES["full"]["F1"]))
    results = interleaved_rounds(WAYS, args.rounds, lambda way: measure(way, args.driver, args.seconds))
    print(f"driver {args.driver}, {args.rounds} interleaved rounds, {os.cpu_count()} cores; "
          f"ratio = rows/s / limit-queue's in the same round: median [quartiles]")
    base = [r["rows_s"] for r in results["limit-queue"]]
    for way in WAYS:
        rs = results[way]
        ratios = [r["rows_s"] / b for r, b in zip(rs, base)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        line = (f"{way:38s} {statistics.median(r['rows_s'] for r in rs) / 1e3:6.0f} k rows/s  "
                f"{statistics.median(ratios):.2f} [{q[0]:.2f}-{q[2]:.2f}]")
        if "make_us" in rs[0]:
            line += (f"  runner CPU per block: making it {statistics.median(r['make_us'] for r in rs):.0f} us, "
                     f"enqueue op {statistics.median(r['enqueue_us'] for r in rs):.0f} us")
        print(line)


if __name__ == "__main__":
    main()
