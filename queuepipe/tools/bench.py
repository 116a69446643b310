"""``queuepipe bench FILE.h5 --datasets X,y``: how fast your file flows through ``from_hdf5``.

Measures, for the same rows of the same datasets, ``from_hdf5`` with 1..N workers (a tqdm
bar per trial), samples/s and MB/s, against the two reference limits of
:mod:`queuepipe.tools.limits`:

* **limit-read** -- plain h5py reading the covering chunk-aligned slabs into numpy, no
  TensorFlow: what the disk/decompression allows (and with N processes in process mode);
* **limit-consumer** -- the session running the consumer op on one batch already resident
  in ``tf.Variable`` s: the most any input pipeline can deliver to it;

then prints a one-line verdict: input-bound or compute-bound, and how many workers it
takes to saturate.  This module is the command only (arguments, trials, verdict,
printing); the limits live in :mod:`queuepipe.tools.limits`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .limits import build_hdf5_pipeline, consumer_op, limit_consumer, limit_read, row_nbytes

# --------------------------------------------------------------------------------------
# Row selections
# --------------------------------------------------------------------------------------


def parse_rows(spec: Optional[str], n: int) -> Optional[np.ndarray]:
    """``None``/"" -> all rows; ``"a:b"``, ``"::10"``, ``"a:b:c"`` -> Python slice of
    ``range(n)``; ``"file.npy"`` -> integer indices (or a boolean mask) stored with numpy."""
    if spec is None or spec == "" or spec == ":":
        return None
    if spec.endswith(".npy"):
        arr = np.load(spec)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise ValueError(f"--rows {spec}: boolean mask of shape {arr.shape}, dataset has {n} rows")
            return np.flatnonzero(arr).astype(np.int64)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"--rows {spec}: expected a 1-D integer index array, got {arr.dtype} {arr.shape}")
        arr = arr.astype(np.int64)
        arr = np.where(arr < 0, arr + n, arr)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"--rows {spec}: indices outside 0..{n - 1}")
        return arr
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--rows {spec!r}: expected START:STOP[:STEP] (e.g. 0:1000, ::10) or a .npy file")
    try:
        bounds = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"--rows {spec!r}: slice bounds must be integers") from None
    rows = np.arange(n, dtype=np.int64)[slice(*bounds)]
    if rows.size == 0:
        raise ValueError(f"--rows {spec!r} selects no rows of {n}")
    return rows


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else (f"{x / 1e3:.1f} k" if x >= 1e3 else f"{x:.0f} ")


def run_trial(path: str, names: Sequence[str], rows: Optional[np.ndarray], n_sel: int, *, batch_size: int,
               workers: int, mode: str, seconds: float, progress: bool = True,
               warmup_batches: int = 4) -> Dict[str, Any]:
    """The selection through from_hdf5 -- one epoch, or as many as make 64 batches per worker
    (a small selection is otherwise all warm-up) -- capped at ``seconds``; samples/s after
    ``warmup_batches``."""
    import tensorflow as tf
    import queuepipe
    tf1 = tf.compat.v1
    epochs = max(1, math.ceil(64 * batch_size * workers / max(1, n_sel)))
    total_rows = epochs * n_sel
    graph = tf.Graph()
    with graph.as_default():
        pipe, tensors = build_hdf5_pipeline(path, names, rows, batch_size=batch_size, workers=workers,
                                            mode=mode, num_epochs=epochs)
        op = consumer_op(tensors)
        fetch = [op, tf.shape(tensors[0])[0]]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total_rows, unit="rows", unit_scale=True, leave=False, file=sys.stderr,
                       desc=f"{mode} x{workers}")
        with tf1.Session(graph=graph) as sess, queuepipe.running(sess):
            t_start = time.perf_counter()
            done = timed = 0
            t0 = t_last = None
            first = None
            try:
                while True:
                    _, got = sess.run(fetch)
                    now = time.perf_counter()
                    if first is None:
                        first = now - t_start
                    done += int(got)
                    if bar is not None:
                        bar.update(int(got))
                    if done >= warmup_batches * batch_size and t0 is None:
                        t0 = now
                    elif t0 is not None:
                        timed += int(got)
                        t_last = now
                    if now - t_start > seconds:
                        break
            except tf.errors.OutOfRangeError:
                pass
            finally:
                if bar is not None:
                    bar.close()
    if timed and t_last and t_last > t0:
        rate = timed / (t_last - t0)
    else:  # too little data for a warm-up: count everything after the first batch
        rate = done / max(1e-9, time.perf_counter() - t_start)
    return {"workers": workers, "mode": mode, "rows": done, "epochs": epochs, "samples_per_s": rate,
            "first_batch_s": first}


def _open_info(path: str, names: Sequence[str]):
    import h5py
    with h5py.File(path, "r") as f:
        missing = [k for k in names if k not in f]
        if missing:
            raise SystemExit(f"queuepipe bench: {path} has no dataset(s) {', '.join(missing)} "
                             f"(has: {', '.join(sorted(f.keys()))})")
        dsets = [f[k] for k in names]
        n = dsets[0].shape[0]
        bad = [k for k, d in zip(names, dsets) if d.shape[0] != n]
        if bad:
            raise SystemExit("queuepipe bench: datasets differ in length: "
                             + ", ".join(f"{k}={f[k].shape[0]}" for k in names))
        return n, row_nbytes(dsets), [(d.shape, d.dtype, d.chunks, d.compression) for d in dsets]


def _first_batch(path: str, names: Sequence[str], rows: Optional[np.ndarray], batch_size: int):
    import h5py
    with h5py.File(path, "r") as f:
        if rows is None:
            return [f[k][:batch_size] for k in names]
        idx = np.unique(np.sort(rows[:batch_size]))
        out = [f[k][idx] for k in names]
        reps = math.ceil(batch_size / len(idx))
        return [np.concatenate([o] * reps)[:batch_size] for o in out]


def verdict(best: Dict[str, Any], trials: List[Dict[str, Any]], consumer: float, read: float,
            compressed: bool = False) -> str:
    """The one-line verdict: compute-bound, input-bound by reading or by the pipeline, and
    the fewest workers within 5 % of the best trial."""
    rate = best["samples_per_s"]
    sat = next(t for t in trials if t["samples_per_s"] >= 0.95 * rate)
    if rate >= 0.85 * consumer:
        kind = ("compute-bound: the input keeps up with the session "
                f"({rate / consumer:.2f}x limit-consumer); your model's step is the bottleneck")
    elif rate >= 0.8 * read:
        hint = ("try --mode process: h5py serialises reads across threads" if best["mode"] == "thread"
                else "more processes, larger chunks" + (" or lighter compression" if compressed else ""))
        kind = (f"input-bound by reading{' and decompression' if compressed else ''}: from_hdf5 at "
                f"{rate / read:.2f}x limit-read, {rate / consumer:.2f}x limit-consumer ({hint})")
    else:
        kind = (f"input-bound by the pipeline: from_hdf5 at {rate / read:.2f}x limit-read and "
                f"{rate / consumer:.2f}x limit-consumer")
    tried = ", ".join(str(t["workers"]) for t in trials)
    return (f"verdict: {kind}; {sat['workers']} {sat['mode']} worker(s) saturate it "
            f"({_fmt_rate(sat['samples_per_s'])}samples/s; tried {tried})")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="queuepipe bench",
                                description="Measure an HDF5 file through queuepipe.from_hdf5 against "
                                            "plain h5py reading and the session's own ceiling.")
    p.add_argument("file", help="the HDF5 file")
    p.add_argument("--datasets", required=True, help="comma-separated dataset paths, e.g. X,y")
    p.add_argument("--rows", default=None,
                   help="rows to read: START:STOP[:STEP] (e.g. 0:1000, ::10) or a .npy index/mask file")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="try 1..N workers (default: the number of CPU cores)")
    p.add_argument("--mode", choices=("thread", "process"), default="thread")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=10.0,
                   help="cap on each trial's pass over the rows (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p


def read_paths(file: str, names: List[str]) -> str:
    """How from_hdf5's workers will read each dataset of ``file`` (the fast paths or h5py)."""
    from ..sources.hdf5.inspect import inspect_files, read_path_names
    try:
        paths = read_path_names(inspect_files([file], names), 0)
        return "; ".join(f"{k}: {how}" for k, how in zip(names, paths))
    except Exception as exc:  # noqa: BLE001 - the figures below still mean something
        return f"unknown ({type(exc).__name__}: {exc})"


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    names = [s for s in args.datasets.split(",") if s]
    if not names:
        raise SystemExit("queuepipe bench: --datasets needs at least one name")
    if args.workers < 1 or args.batch_size < 1:
        raise SystemExit("queuepipe bench: --workers and --batch-size must be >= 1")
    n, row_bytes, info = _open_info(args.file, names)
    try:
        rows = parse_rows(args.rows, n)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"queuepipe bench: {exc}")
    n_sel = n if rows is None else len(rows)
    print(f"{args.file}: {n_sel} of {n} rows, {row_bytes} bytes/row "
          f"({n_sel * row_bytes / 2**20:.1f} MiB), datasets "
          + "; ".join(f"{k} {s[1:] or '()'} {d} chunks={c} {comp or ''}".rstrip()
                      for k, (s, d, c, comp) in zip(names, info)))
    print("read path: " + read_paths(args.file, names))

    # limit-read first, while this process has not imported TensorFlow: plain h5py, nothing
    # else running (with --workers N in process mode also in N fresh interpreters)
    lr_rows, lr_s = limit_read(args.file, names, rows, procs=1, seconds=args.seconds)
    read = lr_rows / max(lr_s, 1e-9)
    read_procs = None
    if args.mode == "process" and args.workers > 1:
        pr_rows, pr_s = limit_read(args.file, names, rows, procs=args.workers, seconds=args.seconds)
        read_procs = pr_rows / max(pr_s, 1e-9)
    batch = _first_batch(args.file, names, rows, args.batch_size)
    lc_rows, lc_s = limit_consumer(batch, seconds=min(2.0, args.seconds))
    consumer = lc_rows / max(lc_s, 1e-9)
    mb = row_bytes / 1e6
    print(f"limit-read      (plain h5py, 1 process): {_fmt_rate(read)}samples/s  {read * mb:8.1f} MB/s")
    if read_procs is not None:
        print(f"limit-read      (plain h5py, {args.workers} processes): {_fmt_rate(read_procs)}samples/s  "
              f"{read_procs * mb:8.1f} MB/s")
    print(f"limit-consumer  (batch resident in the session): {_fmt_rate(consumer)}samples/s  "
          f"{consumer * mb:8.1f} MB/s")

    trials = []
    for w in range(1, args.workers + 1):
        try:
            t = run_trial(args.file, names, rows, n_sel, batch_size=args.batch_size, workers=w, mode=args.mode,
                          seconds=args.seconds, progress=not args.no_progress)
        except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump a traceback
            print(f"from_hdf5 {args.mode} x{w}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        trials.append(t)
        r = t["samples_per_s"]
        print(f"from_hdf5 {args.mode:7s} x{w}: {_fmt_rate(r)}samples/s  {r * mb:8.1f} MB/s  "
              f"{r / consumer:.2f}x limit-consumer  {r / read:.2f}x limit-read")
    best = max(trials, key=lambda t: t["samples_per_s"])
    line = verdict(best, trials, consumer, max(read, read_procs or 0.0),
                   compressed=any(comp for _, _, _, comp in info))
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"file": args.file, "datasets": names, "rows": n_sel, "row_bytes": row_bytes,
                       "limit_read": read, "limit_read_procs": read_procs, "limit_consumer": consumer,
                       "trials": trials, "verdict": line}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
