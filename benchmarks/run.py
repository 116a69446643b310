"""``python -m benchmarks.run [--quick] [--out DIR] [--only W1,W3]``: every workload, every way, one run.

See BENCHMARKS.md for what is measured and how to read it.  Rows run in fresh processes
forked from a fork server (benchmarks.zygote) that has imported TensorFlow once; peer
rows run the same way under the peers' own virtualenv (benchmarks/peers/setup_peers.sh).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import data, report
from .workloads import WORKLOADS, Workload, calibrate_loops
from .zygote import REPO, Runner

LIMIT_PROCS = 2
CALLABLE_WORKLOADS = ("W1",)  # workloads whose rows run again with sess.make_callable as the loop

PROFILES = {
    # max_seconds caps each timed repeat; check_seconds caps the first repeat of a queuepipe row on a
    # workload with a delivery check, so that its check runs on the whole data.
    "full": dict(repeats=3, max_seconds=1.5, check_seconds=60, warmup_batches=4, w2_samples=3072,
                 w4_batches=60, timeout=240),
    "quick": dict(repeats=1, max_seconds=0.3, check_seconds=30, warmup_batches=2, w2_samples=192,
                  w4_batches=6, timeout=90),
}


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


def row_plan(w: Workload, workers: List[int], peers: bool) -> List[Dict[str, Any]]:
    """Every row of one workload, in run order."""
    rows: List[Dict[str, Any]] = [
        dict(way="limit-read", group="limit", procs=1),
        dict(way="limit-read", group="limit", procs=LIMIT_PROCS),
        dict(way="limit-consumer", group="limit"),
        dict(way="limit-queue", group="limit"),
        dict(way="feed_dict", group="reference"),
        dict(way="tf.data", group="reference"),
        dict(way="tf.data (batches)", group="reference"),
        dict(way="tf1-native", group="reference", workers=None),
    ]
    if peers:
        rows.append(dict(way="tftables", group="peer"))
        rows.append(dict(way="tensorpack", group="peer"))
        if w.kind == "generator":
            rows.append(dict(way="tensorpack", group="peer", procs=LIMIT_PROCS))
    api = "from_hdf5" if w.kind == "hdf5" else "from_generator"
    for mode in ("thread", "process"):
        for n in workers:
            rows.append(dict(way=f"queuepipe {api}", group="queuepipe", mode=mode, workers=n))
    if w.id in CALLABLE_WORKLOADS:
        # the same consumer loop with sess.make_callable: the limits and every queuepipe row again
        rows += [dict(r, driver="make_callable") for r in rows
                 if r["way"] in ("limit-consumer", "limit-queue") or r["group"] == "queuepipe"]
    if w.file == "F2":
        # how much of the compressed-read speed is ISA-L's inflate, and how much is decoding
        # outside h5py's lock: the same rows with stock zlib (not judged, not plotted)
        for mode in ("thread", "process"):
            rows.append(dict(way=f"queuepipe {api} (zlib inflate)", group="variant", mode=mode,
                             workers=max(workers), inflate="zlib"))
    return rows


def row_func(row: Dict[str, Any]) -> tuple:
    if row["group"] in ("queuepipe", "variant"):
        return "main", "benchmarks.queuepipe_rows:run"
    if row["group"] == "peer":
        return "peers", "benchmarks.peers.rows:run"
    return "main", "benchmarks.references:run"


def row_label(row: Dict[str, Any]) -> str:
    label = row["way"]
    if row.get("mode"):
        label += f" {row['mode']} x{row['workers']}"
    elif row.get("procs", 1) > 1:
        label += f" ({row['procs']} proc)"
    elif row["way"] == "tf1-native" and row.get("workers", 1) > 1:
        label += f" ({row['workers']} threads)"
    if row.get("driver") == "make_callable":
        label += " [make_callable]"
    return label


# --------------------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------------------


def machine_facts() -> Dict[str, Any]:
    model = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory_gib": mem, "python": platform.python_version(), "platform": platform.platform(),
            "queuepipe_commit": commit, "worktree_dirty": dirty, "loadavg_start": os.getloadavg()}


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def default_peers_venv() -> str:
    """$QUEUEPIPE_PEERS_VENV, else ``peers-venv`` in the folder that holds the repository
    (where benchmarks/peers/setup_peers.sh puts it by default)."""
    return os.environ.get("QUEUEPIPE_PEERS_VENV") or str(REPO.parent / "peers-venv")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny files, one short repeat: checks the harness in < 1 min, numbers mean nothing")
    p.add_argument("--out", default=None,
                   help="where results.json, results.md, scaling.png and the logs go "
                        "(default: benchmarks/results/, or a temporary folder with --quick)")
    p.add_argument("--only", default=None, help="comma-separated workloads, e.g. W1,W3 (default: all)")
    p.add_argument("--max-workers", type=int, default=None,
                   help="queuepipe rows try 1..N workers (default: the number of cores, at least 2)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per row (median reported)")
    p.add_argument("--peers-venv", default=default_peers_venv(),
                   help="virtualenv with the peers, made by benchmarks/peers/setup_peers.sh (default: "
                        "$QUEUEPIPE_PEERS_VENV, else peers-venv beside the repository; here "
                        f"{default_peers_venv()})")
    p.add_argument("--no-peers", action="store_true", help="skip the peer rows")
    p.add_argument("--isolation", choices=("fork", "spawn"), default="fork",
                   help="fork: rows fork from a server that imported TF once (default); "
                        "spawn: a fresh interpreter per row (slow, for debugging)")
    p.add_argument("--markdown", default=None,
                   help="markdown file whose generated section gets the table "
                        "(default: BENCHMARKS.md for full runs, none with --quick)")
    p.add_argument("--plot", default=None,
                   help="scaling plot path (default: benchmarks/scaling.png for full runs, OUT/scaling.png "
                        "with --quick)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    profile_name = "quick" if args.quick else "full"
    prof = dict(PROFILES[profile_name])
    if args.repeats:
        prof["repeats"] = args.repeats
    only = [s.strip().upper() for s in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = [s for s in only if s not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)} (known: {', '.join(WORKLOADS)})", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="queuepipe-bench-quick-")) if args.quick
                                           else REPO / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    # per-row logs and result files: beside the results, except for the default full-run folder
    # in the repository, whose logs go to the cache
    logs = (data.cache_dir() / "logs" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            if out.resolve() == (REPO / "benchmarks" / "results").resolve() else out / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    md_path = Path(args.markdown) if args.markdown else (None if args.quick else REPO / "BENCHMARKS.md")
    plot_path = Path(args.plot) if args.plot else (out / "scaling.png" if args.quick
                                                   else REPO / "benchmarks" / "scaling.png")
    cores = os.cpu_count() or 1
    max_workers = args.max_workers or max(2, cores)
    workers = list(range(1, max_workers + 1))
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                               else sys.argv[1:]))

    peers_python = str(Path(args.peers_venv) / "bin" / "python")
    peers_problem = None
    if args.no_peers:
        peers_problem = "skipped (--no-peers)"
    elif not os.access(peers_python, os.X_OK):
        peers_problem = (f"not run: no peers virtualenv at {args.peers_venv} "
                         f"(create it with: bash benchmarks/peers/setup_peers.sh {args.peers_venv})")

    t_begin = time.monotonic()
    print(f"queuepipe benchmarks ({profile_name}): workloads {', '.join(only)}; out {out}", flush=True)
    sizes = data.SIZES[profile_name]
    files = {}
    for name in sorted({WORKLOADS[k].file for k in only}):
        files[name] = data.ensure_file(name, sizes[name], log=lambda m: print(m, flush=True))
    loops = calibrate_loops()
    print(f"W2 work: {loops} loop iterations = ~0.5 ms per sample (calibrated now)", flush=True)

    runner = Runner(logs, args.isolation, None if peers_problem else peers_python)
    results: Dict[str, Any] = {"command": command, "profile": profile_name, "config": prof,
                               "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                               "machine": machine_facts(), "workers": workers, "limit_procs": LIMIT_PROCS,
                               "work_loops": loops, "files": {k: str(v) for k, v in files.items()},
                               "peers": {"python": peers_python, "problem": peers_problem}, "rows": []}
    try:
        results["versions"] = runner.versions("main")
        if not peers_problem:
            try:
                results["peers"]["versions"] = runner.versions("peers")
                broken = runner.servers["peers"].ready.get("errors")
                if broken:
                    peers_problem = "not run: the peers virtualenv cannot import " + "; ".join(
                        f"{k} ({v})" for k, v in broken.items())
            except Exception as exc:  # noqa: BLE001
                peers_problem = f"not run: the peers virtualenv does not start: {exc}"
            results["peers"]["problem"] = peers_problem
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        for wid in only:
            run_workload(WORKLOADS[wid], results, runner, prof, files, loops, workers, cores, peers_problem)
    except BaseException:
        runner.close(abort=True)
        raise
    finally:
        runner.close()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - t_begin, 1)
    report.finish(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot_ok = report.plot(results, plot_path)
    shown = plot_path if plot_ok else None
    (out / "results.md").write_text(report.markdown(results, plot_path=shown, md_dir=out))
    if md_path is not None:
        report.update_markdown_file(md_path, report.markdown(results, plot_path=shown, md_dir=md_path.parent))
    print()
    print(report.console(results))
    print(f"\nraw JSON: {out / 'results.json'}\ntable:    {out / 'results.md'}\nlogs:     {logs}"
          + (f"\nupdated:  {md_path}" if md_path else "")
          + (f"\nplot:     {plot_path}" if plot_ok else "\nplot:     (no W2/W5 scaling data)")
          + f"\nelapsed:  {results['elapsed_s']} s")
    return 0


def run_workload(w: Workload, results: Dict[str, Any], runner: Runner, prof: Dict[str, Any],
                 files: Dict[str, Path], loops: int, workers: List[int], cores: int,
                 peers_problem: Optional[str]) -> None:
    path = files[w.file]
    data.warm_page_cache(path)
    n_rows = data.SIZES[results["profile"]][w.file]
    base = dict(workload=w.id, kind=w.kind, batch=w.batch, epochs=w.epochs, shuffle=w.shuffle,
                sleep_step=w.sleep_step, check=w.check, path=str(path), n_rows=n_rows, seed=0,
                rows_path=str(data.ensure_selection(n_rows)) if w.selection else None,
                work_loops=loops, repeats=prof["repeats"], max_seconds=prof["max_seconds"],
                check_seconds=prof["check_seconds"],
                warmup_batches=prof["warmup_batches"], cores=cores,
                gen_samples=(prof["w2_samples"] if w.id == "W2" else prof["w4_batches"] * w.batch))
    if w.sleep_step:
        base["warmup_batches"] = max(2, prof["warmup_batches"] // 2)
        base["max_seconds"] = max(prof["max_seconds"], 0.5)
    print(f"\n{w.id}: {w.title} (batch {w.batch}; {path.name})", flush=True)
    plan = row_plan(w, workers, peers=True)
    # the limits again at the end: CPU speed drifts, so they are medians over both ends
    plan_rows = plan + [dict(r, again=True) for r in plan if r["group"] == "limit"]
    for row in plan_rows:
        ctx = dict(base, **{k: v for k, v in row.items() if k != "again"})
        ctx.setdefault("mode", None)
        ctx.setdefault("procs", 1 if row["way"] == "limit-read" else 0)
        if ctx.get("workers") is None:
            ctx["workers"] = cores if row["way"] == "tf1-native" and w.kind == "generator" else 1
        label = row_label(ctx)
        if row["group"] == "peer" and peers_problem:
            res = {"status": "not run", "reason": peers_problem}
        else:
            side, func = row_func(row)
            tag = f"{w.id}-{label}" + ("-again" if row.get("again") else "")
            res = runner.run(side, func, ctx, prof["timeout"], tag)
        entry = {"workload": w.id, "way": row["way"], "label": label, "group": row["group"],
                 "mode": ctx["mode"], "workers": ctx["workers"], "procs": ctx["procs"],
                 "driver": ctx.get("driver") or "sess.run", **res}
        print("  " + report.progress_line(entry) + ("  (again)" if row.get("again") else ""), flush=True)
        if row.get("again"):
            report.merge_bracket(results["rows"], entry)
        else:
            results["rows"].append(entry)


if __name__ == "__main__":
    sys.exit(main())
