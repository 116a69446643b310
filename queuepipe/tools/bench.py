"""``queuepipe bench FILE.h5 --datasets X,y``: how fast your file flows through ``from_hdf5``.

Measures, for the same rows of the same datasets, ``from_hdf5`` with 1..N workers (a tqdm
bar per trial), samples/s and MB/s, against the two reference limits of
:mod:`queuepipe.tools.limits`:

* **limit-read** -- plain h5py reading the covering chunk-aligned slabs into numpy, no
  TensorFlow: what the disk/decompression allows (and with N processes in process mode);
* **limit-consumer** -- the session running the consumer op on one batch already resident
  in ``tf.Variable`` s: the most any input pipeline can deliver to it;

then prints a one-line verdict (input-bound or compute-bound, and how many workers it takes
to saturate) and advice derived from the same numbers (:func:`advice`: which ``workers=`` /
``mode=`` to use, or that the step is the bottleneck).  ``--plot FILE`` draws the measured
rates as a bar chart (:mod:`queuepipe.tools.plot`).

Every measurement is timed for ``--seconds`` (at least 1 s): a trial repeats the selection's
epochs for as long as that takes, and its start-up (session start to the first batch, and a
few warm-up batches) is reported apart from the rate, so a small file measures the pipeline's
rate rather than its start-up.  This module is the command only (arguments, trials, verdict,
advice, printing); the limits live in :mod:`queuepipe.tools.limits`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .limits import build_hdf5_pipeline, consumer_op, limit_consumer, limit_read, row_nbytes
from .plot import PlotError, check_plot_path, write_bar_chart
from .quiet import quiet_tensorflow_import

#: The shortest timed window of a measurement: below ~1 s, start-up costs dominate the ratios.
MIN_SECONDS = 1.0

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
    """The selection through from_hdf5, its epochs repeated, for a timed window of ``seconds``.

    The window opens after the first batch (start-up: session, workers, first reads) and
    ``warmup_batches`` more, and closes at the first batch after ``seconds``; samples/s is
    the rows in the window over its length.  Start-up is reported apart (``startup_s``,
    ``warmup_s``), never in the rate: on a small file it would otherwise be most of it."""
    import tensorflow as tf
    import queuepipe
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        pipe, tensors = build_hdf5_pipeline(path, names, rows, batch_size=batch_size, workers=workers,
                                            mode=mode, num_epochs=None)  # type: ignore[arg-type]
        op = consumer_op(tensors)
        fetch = [op, tf.shape(tensors[0])[0]]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(unit="rows", unit_scale=True, leave=False, file=sys.stderr, desc=f"{mode} x{workers}")
        with tf1.Session(graph=graph) as sess, queuepipe.running(sess):
            try:
                window = _timed_window(lambda: int(sess.run(fetch)[1]), seconds, warmup_batches, bar)
            finally:
                if bar is not None:
                    bar.close()
    delivered = window["warmup_rows"] + window["timed_rows"]
    rate = window["timed_rows"] / max(window["timed_s"], 1e-9)
    return {"workers": workers, "mode": mode, "samples_per_s": rate, "timed_s": window["timed_s"],
            "timed_rows": window["timed_rows"], "rows": delivered, "epochs": delivered / max(1, n_sel),
            "startup_s": window["startup_s"], "warmup_s": window["warmup_s"],
            "first_batch_s": window["startup_s"]}


def _timed_window(next_batch: Callable[[], int], seconds: float, warmup_batches: int,
                  bar: Any = None) -> Dict[str, Any]:
    """Call ``next_batch()`` (rows of the batch it fetched) through start-up, ``warmup_batches``
    warm-up batches, then a window of at least ``seconds``; the times and rows of each part."""
    t_start = time.perf_counter()
    startup_s = warmup_s = None
    warm_rows = timed_rows = batches = 0
    window_start = t_start
    while True:
        got = next_batch()
        now = time.perf_counter()
        if bar is not None:
            bar.update(got)
        if startup_s is None:
            startup_s = now - t_start
        if warmup_s is None:
            warm_rows += got
            batches += 1
            if batches > warmup_batches:
                warmup_s, window_start = now - t_start - startup_s, now
            continue
        timed_rows += got
        if now - window_start >= seconds:
            return {"startup_s": startup_s, "warmup_s": warmup_s, "warmup_rows": warm_rows,
                    "timed_rows": timed_rows, "timed_s": now - window_start}


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


def advice(trials: Sequence[Dict[str, Any]], *, consumer: float, read: float, mode: str, cores: int,
           compressed: bool = False, batch_size: Optional[int] = None, tolerance: float = 0.10) -> List[str]:
    """What to do, derived from the measured rates: the configuration to use (the fewest
    ``mode`` workers within 5 % of the best trial), then why more workers would or would not
    help, and what would.

    ``trials`` are :func:`run_trial` results (1..N workers, in order); ``consumer`` and
    ``read`` the limit-consumer and limit-read rates (with N processes in process mode);
    ``batch_size`` the one measured.  Gains below ``tolerance`` count as none: these rates
    move by ~10 % run to run."""
    best = max(trials, key=lambda t: t["samples_per_s"])
    rate = best["samples_per_s"]
    sat = next(t for t in trials if t["samples_per_s"] >= 0.95 * rate)
    lines = [f"use workers={sat['workers']}, mode={mode!r} ({_fmt_rate(sat['samples_per_s'])}samples/s, "
             f"{sat['samples_per_s'] / consumer:.2f}x limit-consumer)"]
    if rate >= 0.85 * consumer:
        lines.append(f"your step is the bottleneck: the input already keeps up with the fastest possible step "
                     f"({rate / consumer:.2f}x limit-consumer), so more workers will not help; a real model's "
                     f"step is slower still -- make each step cheaper instead (a larger batch_size, "
                     f"step = sess.make_callable(fetches))")
        return lines
    lines += _scaling_advice(trials, mode, cores, tolerance)
    if rate >= 0.8 * read:
        lines.append(f"reading is the limit ({rate / read:.2f}x limit-read): larger chunks"
                     f"{', lighter compression' if compressed else ''} or faster storage raise it; "
                     f"more workers of the same kind do not")
    else:
        more = f"try --batch-size {2 * batch_size}" if batch_size else "try a larger --batch-size"
        lines.append(f"the file could give more ({rate / read:.2f}x limit-read, {rate / consumer:.2f}x "
                     f"limit-consumer): the pipeline's per-batch hand-over is the limit, so larger batches "
                     f"raise the rate ({more})")
    return lines


def _scaling_advice(trials: Sequence[Dict[str, Any]], mode: str, cores: int, tolerance: float) -> List[str]:
    """Whether the trials say more workers (or the other mode) could help."""
    lines: List[str] = []
    rates = [t["samples_per_s"] for t in trials]
    top = trials[-1]["workers"]
    if len(trials) > 1 and rates[-1] == max(rates) and rates[-1] >= (1 + tolerance) * rates[-2]:
        gain = rates[-1] / rates[-2]
        if top < cores:
            lines.append(f"the rate still rose from {top - 1} to {top} workers ({gain:.2f}x): "
                         f"try --workers {top + 1}")
        else:
            lines.append(f"the rate still rose from {top - 1} to {top} workers ({gain:.2f}x), but {top} is "
                         f"already one per core ({cores}): more would compete with the training step")
    if mode == "thread" and (len(trials) == 1 or max(rates[1:]) < (1 + tolerance) * rates[0]):
        said = (f"more threads did not help ({max(rates[1:]) / rates[0]:.2f}x one thread)" if len(trials) > 1
                else "only one thread was measured")
        lines.append(f"{said}: measure --mode process, where each worker reads and decodes on its own core")
    return lines


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
    p.add_argument("--seconds", type=float, default=2.0,
                   help="timed window of every measurement, start-up excluded (default 2, at least 1): "
                        "a trial repeats the selection's epochs until it has run that long")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="also draw the measured rates as a bar chart: FILE.svg (no extra package) "
                        "or FILE.png (needs matplotlib)")
    return p


def read_paths(file: str, names: List[str]) -> str:
    """How from_hdf5's workers will read each dataset of ``file`` (the fast paths or h5py)."""
    from ..sources.hdf5.inspect import inspect_files, read_path_names
    try:
        paths = read_path_names(inspect_files([file], names), 0)
        return "; ".join(f"{k}: {how}" for k, how in zip(names, paths))
    except Exception as exc:  # noqa: BLE001 - the figures below still mean something
        return f"unknown ({type(exc).__name__}: {exc})"


def _check_args(args: argparse.Namespace) -> List[str]:
    """The dataset names; exits with a message on arguments that cannot work -- before anything
    is measured, a ``--plot`` file that could not be written included."""
    names = [s for s in args.datasets.split(",") if s]
    if not names:
        raise SystemExit("queuepipe bench: --datasets needs at least one name")
    if args.workers < 1 or args.batch_size < 1:
        raise SystemExit("queuepipe bench: --workers and --batch-size must be >= 1")
    if not args.seconds >= MIN_SECONDS:
        raise SystemExit(f"queuepipe bench: --seconds must be at least {MIN_SECONDS:g} "
                         f"(shorter measurements time start-up, not the rate)")
    if args.plot:
        try:
            check_plot_path(args.plot)
        except PlotError as exc:
            raise SystemExit(f"queuepipe bench: {exc}")
    return names


def _measure_limits(args: argparse.Namespace, names: List[str], rows: Optional[np.ndarray]) -> Dict[str, Any]:
    """limit-read (1 process, and N processes in process mode) and limit-consumer, each timed
    for ``--seconds``, in samples/s.

    limit-read runs first, while this process has not imported TensorFlow: plain h5py, nothing
    else running (the N-process variant in N fresh interpreters)."""
    lr_rows, lr_s = limit_read(args.file, names, rows, procs=1, seconds=args.seconds, min_seconds=args.seconds)
    read_procs = None
    if args.mode == "process" and args.workers > 1:
        pr_rows, pr_s = limit_read(args.file, names, rows, procs=args.workers, seconds=args.seconds,
                                   min_seconds=args.seconds)
        read_procs = pr_rows / max(pr_s, 1e-9)
    batch = _first_batch(args.file, names, rows, args.batch_size)
    with quiet_tensorflow_import():  # TF's loading notices, filtered by TF_CPP_MIN_LOG_LEVEL
        import tensorflow  # noqa: F401
    lc_rows, lc_s = limit_consumer(batch, seconds=args.seconds)
    return {"read": lr_rows / max(lr_s, 1e-9), "read_procs": read_procs, "consumer": lc_rows / max(lc_s, 1e-9)}


def _trial_line(t: Dict[str, Any], consumer: float, read: float, mb: float) -> str:
    """One printed trial: the rate against both limits, then the start-up kept out of it."""
    r = t["samples_per_s"]
    return (f"from_hdf5 {t['mode']:7s} x{t['workers']}: {_fmt_rate(r)}samples/s  {r * mb:8.1f} MB/s  "
            f"{r / consumer:.2f}x limit-consumer  {r / read:.2f}x limit-read  "
            f"(timed {t['timed_s']:.1f} s over {t['epochs']:.1f} epochs; start-up {t['startup_s']:.2f} s "
            f"to the first batch, not in the rate)")


def plot_bars(limits: Dict[str, Any], trials: Sequence[Dict[str, Any]], workers: int) -> List[Any]:
    """The bars of ``--plot``: one per measured row, in the order they are printed."""
    bars = [("limit-read (plain h5py, 1 process)", limits["read"], "limit")]
    if limits.get("read_procs") is not None:
        bars.append((f"limit-read (plain h5py, {workers} processes)", limits["read_procs"], "limit"))
    bars.append(("limit-consumer (batch in the session)", limits["consumer"], "limit"))
    bars += [(f"from_hdf5 {t['mode']} x{t['workers']}", t["samples_per_s"], "trial") for t in trials]
    return bars


def main(argv: Optional[List[str]] = None) -> int:
    """``queuepipe bench``: measure, print the rates, the verdict and the advice; optionally write
    them as JSON (``--json``) and a bar chart (``--plot``).  Returns the exit status."""
    args = make_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    names = _check_args(args)
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
    print(f"each measurement timed for {args.seconds:g} s, start-up excluded; batch {args.batch_size}; "
          f"{os.cpu_count() or 1} CPU cores")

    limits = _measure_limits(args, names, rows)
    read, read_procs, consumer = limits["read"], limits["read_procs"], limits["consumer"]
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
        print(_trial_line(t, consumer, read, mb), flush=True)
    best = max(trials, key=lambda t: t["samples_per_s"])
    compressed = any(comp for _, _, _, comp in info)
    read_limit = max(read, read_procs or 0.0)
    line = verdict(best, trials, consumer, read_limit, compressed=compressed)
    print(line)
    tips = advice(trials, consumer=consumer, read=read_limit, mode=args.mode, cores=os.cpu_count() or 1,
                  compressed=compressed, batch_size=args.batch_size)
    print("advice: " + tips[0])
    for tip in tips[1:]:
        print("        " + tip)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"file": args.file, "datasets": names, "rows": n_sel, "row_bytes": row_bytes,
                       "seconds": args.seconds, "limit_read": read, "limit_read_procs": read_procs,
                       "limit_consumer": consumer, "trials": trials, "verdict": line, "advice": tips}, f, indent=2)
    if args.plot:
        title = f"queuepipe bench: {os.path.basename(args.file)}, {n_sel} rows, batch {args.batch_size}"
        write_bar_chart(args.plot, plot_bars(limits, trials, args.workers), title=title, unit="samples/s")
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    from .quiet import quiet_tensorflow_logs
    quiet_tensorflow_logs()
    sys.exit(main())
