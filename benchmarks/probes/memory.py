"""Memory: peak RSS with large samples, and RSS under pipeline churn -- queuepipe beside a plain
``FIFOQueue`` + ``QueueRunner`` pipeline of the same shape.

``python -m benchmarks.probes.memory peak [--shuffle] [--workers 4] [--batch-size 1] [--mode thread]``
    18 MB float32 samples from a generator, ``capacity=4``: the growth of the peak resident set
    (``VmHWM``, reset once the session is up) while 100 batches are drained, in samples, next to
    DESIGN.md's bound ("Memory bounds") and a plain queue of the same capacity whose producers
    (one ``numpy_function`` enqueue per worker) make each sample fresh.  Process mode adds the
    children's ``VmHWM`` (they share the slot memory with the parent, which counts it too).

``python -m benchmarks.probes.memory churn [--iterations 200] [--every 25] [--batches-per-block N]``
    Each iteration: a new ``tf.Graph``, ``from_generator`` and ``from_hdf5`` (a small file) in
    it, 2 workers each, a session, ``running()``, 3 batches, close.  The plain pipeline: the
    same graph shape (two queues, two ``numpy_function`` enqueues each, ``QueueRunner`` s, a
    ``Coordinator``).  Printed every ``--every`` iterations: RSS, RSS after glibc's
    ``malloc_trim(0)`` (memory freed but kept by the allocator goes back to the OS), open
    descriptors, threads, live ``tf.Graph`` and queuepipe runtime objects.

Each pipeline kind runs in a fresh interpreter.  A side probe, not a harness row.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

SHAPE = (4500, 1000)                       # float32: 18 MB a sample
SAMPLE = SHAPE[0] * SHAPE[1] * 4
CAPACITY = 4


def _status(key: str, pid="self") -> int:
    """A ``/proc/<pid>/status`` field in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """``VmHWM := VmRSS`` for this process (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trimmed_rss() -> int:
    """RSS after glibc hands freed heap memory back to the OS (as is, elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _status("VmRSS")


class Samples:
    """A generator factory of ``n`` 18 MB samples (one reused buffer: queuepipe copies each)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self):
        buf = np.zeros(SHAPE, np.float32)
        for i in range(self.n):
            buf[0, 0] = i
            yield buf


class SmallRows:
    """A generator factory of 64 rows of 8 float32 (the churn's generator)."""

    def __call__(self):
        for i in range(64):
            yield np.full(8, i, np.float32)


# -- peak ------------------------------------------------------------------------------------

def design_bound(options, spec) -> int:
    """DESIGN.md's bound for a thread-mode generator pipeline, in bytes:
    ``(capacity_batches + 2) * b + workers * (3K + 3c + S)``."""
    from queuepipe.options import resolved_sizes
    sizes = resolved_sizes(options, spec)
    b = options.batch_size * SAMPLE
    K = sizes.batches_per_block * b
    c = b
    S = (sizes.shuffle_rows + options.batch_size) * SAMPLE if sizes.shuffle_rows else 0
    return (options.capacity_batches(sizes.batches_per_block) + 2) * b + options.workers * (3 * K + 3 * c + S)


class _PeakMeter:
    """Growth of the peak RSS from ``start()`` to ``stop()`` (``VmHWM`` reset at start, or
    sampled every 5 ms where it cannot be), and the peak ``VmHWM`` of ``children()``."""

    def __init__(self, children=lambda: ()):
        self.children = children
        self.kids = {}
        self._stop = threading.Event()
        self._peak = 0

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _status("VmRSS"))
            for pid in self.children():
                self.kids[pid] = max(self.kids.get(pid, 0), _status("VmHWM", pid))
            time.sleep(0.005)

    def start(self):
        self._exact = _reset_peak()
        self.before = self._peak = _status("VmRSS")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        high = _status("VmHWM") if self._exact else self._peak
        return {"growth": high - self.before, "children": sorted(self.kids.values())}


def peak_queuepipe(args) -> dict:
    import tensorflow as tf
    import queuepipe
    from queuepipe.options import PipelineOptions
    from queuepipe.spec import Spec
    tf1 = tf.compat.v1
    steps = 100
    per_worker = steps * args.batch_size // args.workers + 4 * args.batch_size + 16
    with tf.Graph().as_default():
        p = queuepipe.from_generator(Samples(per_worker), tf.float32, SHAPE, batch_size=args.batch_size,
                                     workers=args.workers, capacity=CAPACITY, shuffle=args.shuffle,
                                     mode=args.mode, seed=1)

        def children():
            run = getattr(p.runtime, "_run", None)
            return [b.proc.pid for b in getattr(run, "backends", []) if hasattr(b, "proc")]

        with tf1.Session() as sess:
            sess.run(tf.constant(0.0))
            meter = _PeakMeter(children)
            meter.start()
            with queuepipe.running(sess):
                for _ in range(steps):
                    sess.run(p.batch)
            out = meter.stop()
    options = PipelineOptions(batch_size=args.batch_size, workers=args.workers, shuffle=args.shuffle,
                              capacity=CAPACITY)
    if args.mode == "thread":  # a process worker's terms are in its child, its slots shared
        out["bound"] = design_bound(options, Spec.build(np.float32, SHAPE))
    return out


def peak_plain_queue(args) -> dict:
    """A FIFOQueue of the same capacity (in batches), one numpy_function enqueue per worker."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    shape = (args.batch_size,) + SHAPE
    with tf.Graph().as_default():
        q = tf1.FIFOQueue(-(-CAPACITY // args.batch_size), [tf.float32], shapes=[shape])
        enqueues = []
        for _ in range(args.workers):
            x = tf1.numpy_function(lambda: np.zeros(shape, np.float32) + 1, [], tf.float32)
            x.set_shape(shape)
            enqueues.append(q.enqueue([x]))
        tf1.train.add_queue_runner(tf1.train.QueueRunner(q, enqueues))
        batch = q.dequeue()
        with tf1.Session() as sess:
            sess.run(tf.constant(0.0))
            meter = _PeakMeter()
            meter.start()
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess, coord, daemon=True)
            for _ in range(100):
                sess.run(batch)
            coord.request_stop()
            sess.run(q.close(cancel_pending_enqueues=True))
            coord.join(threads)
            out = meter.stop()
    return out


# -- churn -----------------------------------------------------------------------------------

def _small_file(directory: str) -> str:
    import h5py
    path = os.path.join(directory, "small.h5")
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(256 * 8, dtype=np.float32).reshape(256, 8)
    return path


def _one_queuepipe(path: str, args) -> None:
    import tensorflow as tf
    import queuepipe
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        g = queuepipe.from_generator(SmallRows(), tf.float32, (8,), batch_size=4, workers=2, mode=args.mode,
                                     batches_per_block=args.batches_per_block)
        h = queuepipe.from_hdf5(path, "x", batch_size=4, workers=2, mode=args.mode,
                                batches_per_block=args.batches_per_block)
        with tf1.Session() as sess, queuepipe.running(sess):
            for _ in range(3):
                sess.run([g.batch, h.batch])


def _one_plain(path: str, args) -> None:
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        outs = []
        for _ in range(2):
            q = tf1.FIFOQueue(16, [tf.float32], shapes=[(4, 8)])
            enqueues = []
            for _ in range(2):
                x = tf1.numpy_function(lambda: np.zeros((4, 8), np.float32), [], tf.float32)
                x.set_shape((4, 8))
                enqueues.append(q.enqueue([x]))
            tf1.train.add_queue_runner(tf1.train.QueueRunner(q, enqueues))
            outs.append(q.dequeue())
        with tf1.Session() as sess:
            coord = tf1.train.Coordinator()
            threads = tf1.train.start_queue_runners(sess, coord, daemon=True)
            for _ in range(3):
                sess.run(outs)
            coord.request_stop()
            coord.join(threads)


def churn(kind: str, args) -> list:
    import tensorflow as tf
    rows = []
    one = _one_queuepipe if kind == "queuepipe" else _one_plain
    with tempfile.TemporaryDirectory() as d:
        path = _small_file(d)
        started = time.monotonic()
        for i in range(args.iterations + 1):
            one(path, args)
            if i % args.every == 0:
                gc.collect()
                rss = _status("VmRSS")
                graphs = sum(isinstance(o, tf.Graph) for o in gc.get_objects())
                runtimes = 0
                if "queuepipe.workers.runtime" in sys.modules:
                    cls = sys.modules["queuepipe.workers.runtime"].PipelineRuntime
                    runtimes = sum(isinstance(o, cls) for o in gc.get_objects())
                rows.append({"iteration": i, "rss": rss, "trimmed": _trimmed_rss(),
                             "fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
                             "graphs": graphs, "runtimes": runtimes,
                             "seconds": round(time.monotonic() - started, 1)})
    return rows


# -- driver ----------------------------------------------------------------------------------

def _child(argv) -> None:
    what, kind, args = argv[0], argv[1], argparse.Namespace(**json.loads(argv[2]))
    if what == "peak":
        out = peak_queuepipe(args) if kind == "queuepipe" else peak_plain_queue(args)
    else:
        out = churn(kind, args)
    print("RESULT " + json.dumps(out), flush=True)


def _in_fresh_interpreter(what: str, kind: str, args) -> object:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.probes.memory", "_child", what, kind,
                           json.dumps(vars(args))], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{what} {kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    peak = sub.add_parser("peak", help="peak RSS growth with 18 MB samples")
    peak.add_argument("--shuffle", action="store_true")
    peak.add_argument("--workers", type=int, default=4)
    peak.add_argument("--batch-size", type=int, default=1)
    peak.add_argument("--mode", default="thread", choices=["thread", "process"])
    ch = sub.add_parser("churn", help="RSS while pipelines are built and torn down")
    ch.add_argument("--iterations", type=int, default=200)
    ch.add_argument("--every", type=int, default=25)
    ch.add_argument("--batches-per-block", type=int, default=None)
    ch.add_argument("--mode", default="thread", choices=["thread", "process"])
    args = parser.parse_args(argv)
    mib = 1 << 20
    if args.what == "peak":
        print(f"18 MB samples, batch_size={args.batch_size}, capacity={CAPACITY}, {args.workers} {args.mode} "
              f"workers, shuffle={args.shuffle}: growth of the peak RSS while 100 batches are drained")
        for kind in ("plain", "queuepipe"):
            out = _in_fresh_interpreter("peak", kind, args)
            line = f"  {kind:10s} {out['growth'] / mib:7.0f} MiB = {out['growth'] / SAMPLE:5.1f} samples"
            if "bound" in out:
                line += f"   (DESIGN.md bound {out['bound'] / mib:.0f} MiB = {out['bound'] / SAMPLE:.1f} samples)"
            if out.get("children"):
                line += "   children VmHWM: " + ", ".join(f"{v / SAMPLE:.1f}" for v in out["children"]) + " samples"
            print(line, flush=True)
        return
    print(f"churn: {args.iterations} pipelines built, run for 3 batches and closed, one per iteration "
          f"({args.mode} workers, batches_per_block={args.batches_per_block or 'default'})")
    for kind in ("plain", "queuepipe"):
        rows = _in_fresh_interpreter("churn", kind, args)
        print(f"  {kind}:")
        for r in rows:
            print(f"    {r['iteration']:4d}: RSS {r['rss'] / mib:6.0f} MiB, after malloc_trim {r['trimmed'] / mib:6.0f} MiB, "
                  f"fds {r['fds']:3d}, threads {r['threads']:2d}, graphs {r['graphs']}, runtimes {r['runtimes']}, "
                  f"{r['seconds']:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
