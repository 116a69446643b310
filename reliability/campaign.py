"""The campaign: many seeded trials of every kind, at most 2 at a time, and the results table.

``python -m reliability`` runs the full campaign (:data:`kinds.FULL_COUNTS`, 650 trials), prints
a table, writes ``reliability/results/latest.{md,json}`` and replaces the results section of
RELIABILITY.md.  ``python -m reliability --kind mutant --seed 17 -v`` reruns one trial and shows
everything about it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, List, Optional, Tuple

from . import kinds
from .supervisor import REPO, Verdict, abort_all, run_trial

RESULTS_DIR = os.path.join(REPO, "reliability", "results")
DOC = os.path.join(REPO, "RELIABILITY.md")
BEGIN, END = "<!-- reliability-results:begin -->", "<!-- reliability-results:end -->"
MAX_JOBS = 2


def counts_for(total: Optional[int], only: Optional[List[str]]) -> Dict[str, int]:
    """Trials per kind: the full campaign's proportions scaled to ``total`` (at least 1 each)."""
    base = {k: v for k, v in kinds.FULL_COUNTS.items() if not only or k in only}
    if total is None:
        return base
    full = sum(base.values())
    out = {k: max(1, round(v * total / full)) for k, v in base.items()}
    # heavy kinds stay few however the total scales
    for k in ("churn", "soak"):
        if k in out:
            out[k] = min(out[k], base[k])
    return out


def schedule(counts: Dict[str, int], base_seed: int) -> List[Tuple[str, int]]:
    """Trials in run order: the long ones (churn, soak) first, then the others interleaved."""
    heavy = [(k, base_seed + i) for k in ("churn", "soak") if k in counts for i in range(counts[k])]
    rest = {k: [base_seed + i for i in range(n)] for k, n in counts.items() if k not in ("churn", "soak")}
    order: List[Tuple[str, int]] = []
    while any(rest.values()):
        for k in kinds.ORDER:
            if rest.get(k):
                order.append((k, rest[k].pop(0)))
    return heavy + order


def run_campaign(trials: List[Tuple[str, int]], jobs: int, quick: bool, keep: bool,
                 echo=print) -> Tuple[List[Verdict], float]:
    started = time.monotonic()
    verdicts: List[Verdict] = []
    width = len(str(len(trials)))
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, MAX_JOBS)))
    futures = {pool.submit(run_trial, k, s, quick, keep): (k, s) for k, s in trials}
    try:
        for fut in as_completed(futures):
            v = fut.result()
            verdicts.append(v)
            status = "PASS" if v.passed else "FAIL"
            echo(f"[{len(verdicts):>{width}}/{len(trials)}] {v.kind:<13} seed={v.seed:<5} {status} "
                 f"{v.seconds:6.1f}s  {'' if v.passed else v.line()[:240]}", flush=True)
    except KeyboardInterrupt:
        for f in futures:
            f.cancel()
        abort_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    verdicts.sort(key=lambda v: (kinds.ORDER.index(v.kind), v.seed))
    return verdicts, time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------

def reason_class(reason: str) -> str:
    head = reason.split(":", 1)[0]
    head = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", head)
    head = re.sub(r"\d+(\.\d+)?", "N", head)
    return " ".join(head.split())[:70]


def machine() -> Dict[str, str]:
    from importlib import metadata

    def ver(*names: str) -> str:
        for n in names:
            try:
                return metadata.version(n)
            except metadata.PackageNotFoundError:
                continue
        return "?"
    try:
        import h5py
        hdf5 = h5py.version.hdf5_version
    except Exception:  # noqa: BLE001
        hdf5 = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "queuepipe"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        commit += " + uncommitted changes under queuepipe/" if dirty else ""
    except Exception:  # noqa: BLE001
        commit = "?"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": str(os.cpu_count()), "python": platform.python_version(),
            "tensorflow": ver("tensorflow", "tensorflow-cpu"), "h5py": ver("h5py"), "hdf5": hdf5,
            "numpy": ver("numpy"), "platform": platform.platform(terse=True), "commit": commit}


def table(verdicts: List[Verdict], seconds: float, args_line: str, facts: Dict[str, str]) -> str:
    by: Dict[str, List[Verdict]] = {}
    for v in verdicts:
        by.setdefault(v.kind, []).append(v)
    lines = [f"Campaign `{args_line}`: {len(verdicts)} trials, {sum(v.passed for v in verdicts)} passed, "
             f"{sum(not v.passed for v in verdicts)} failed, {seconds / 60:.1f} min wall on "
             f"{facts['cores']} cores ({facts['date']}; Python {facts['python']}, TensorFlow {facts['tensorflow']}, "
             f"h5py {facts['h5py']} / HDF5 {facts['hdf5']}, numpy {facts['numpy']}, {facts['platform']}, "
             f"queuepipe at {facts['commit']}).", "",
             "| kind | trials | passed | failed | failed seeds | failure classes |",
             "|---|---:|---:|---:|---|---|"]
    for k in kinds.ORDER:
        vs = by.get(k)
        if not vs:
            continue
        failed = [v for v in vs if not v.passed]
        classes: Dict[str, int] = {}
        for v in failed:
            for c in {reason_class(r) for r in v.reasons}:
                classes[c] = classes.get(c, 0) + 1
        cls = "; ".join(f"{c} ×{n}" for c, n in sorted(classes.items(), key=lambda x: -x[1]))
        lines.append(f"| {k} | {len(vs)} | {len(vs) - len(failed)} | {len(failed)} | "
                     f"{', '.join(str(v.seed) for v in failed) or '-'} | {cls or '-'} |")
    failed = [v for v in verdicts if not v.passed]
    if failed:
        lines += ["", "| kind | seed | reason (one line) | trial |", "|---|---:|---|---|"]
        for v in failed:
            lines.append(f"| {v.kind} | {v.seed} | {v.line().replace('|', '/')} | {_trial_brief(v)} |")
        lines += ["", f"Reproduce one: `{failed[0].repro}` (any kind/seed above)."]
    return "\n".join(lines)


def _trial_brief(v: Verdict) -> str:
    p = v.plan
    keys = ("format", "mutation", "change", "variant", "source", "mode", "workers", "batch_size", "sender",
            "target", "exception", "map_per_sample")
    return ", ".join(f"{k}={p[k]}" for k in keys if k in p)


def update_doc(section: str) -> bool:
    if not os.path.exists(DOC):
        return False
    text = open(DOC).read()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(DOC, "w") as f:
        f.write(f"{head}{BEGIN}\n{section}\n{END}{tail}")
    return True


def show(v: Verdict) -> str:
    """Everything about one trial (``-v``)."""
    d = v.details
    out = [f"{v.kind} seed={v.seed}: {'PASS' if v.passed else 'FAIL'} in {v.seconds}s", f"reproduce: {v.repro}",
           f"plan: {json.dumps(v.plan, default=str)}"]
    if "prep" in d:
        out.append(f"prepared: {json.dumps(d['prep'], default=str)[:3000]}")
    if "proc" in d:
        pr = {k: val for k, val in d["proc"].items() if k not in ("stderr_tail", "stdout_tail")}
        out.append(f"process: {json.dumps(pr, default=str)}")
    if d.get("summary"):
        out.append(f"summary: {d['summary']}")
    if "obs_summary" in d:
        obs = dict(d["obs_summary"])
        stacks = obs.pop("hang_stacks", "")
        out.append(f"observed: {json.dumps(obs, default=str, indent=1)[:6000]}")
        if stacks:
            out.append(f"stacks at the hang:\n{stacks}")
    for r in v.reasons:
        out.append(f"REASON: {r}")
    for key in ("traceback", "judge_traceback"):
        if key in d:
            out.append(d[key])
    if "proc" in d and d["proc"].get("stderr_tail"):
        out.append("--- trial stderr (tail) ---\n" + d["proc"]["stderr_tail"][-4000:])
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reliability", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, help="total trials, spread over the kinds in the full campaign's "
                    "proportions (default: the full campaign, %d)" % sum(kinds.FULL_COUNTS.values()))
    ap.add_argument("--kinds", help=f"comma-separated subset of: {','.join(kinds.ORDER)}")
    ap.add_argument("--kind", help="run one kind (with --seed: one trial)")
    ap.add_argument("--seed", type=int, default=0, help="with --kind: that trial's seed; otherwise the first "
                    "seed of every kind (trial seeds are SEED, SEED+1, ...)")
    ap.add_argument("--count", type=int, help="with --kind: this many trials from --seed (default 1)")
    ap.add_argument("--jobs", type=int, default=2, help="trials at once (at most 2)")
    ap.add_argument("--quick", action="store_true", help="smaller churn/soak (as the pytest subset)")
    ap.add_argument("--keep", action="store_true", help="keep each trial's work directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print everything about each trial")
    ap.add_argument("--no-doc", action="store_true", help="do not update RELIABILITY.md")
    args = ap.parse_args(argv)
    if args.jobs > MAX_JOBS:
        ap.error(f"--jobs is at most {MAX_JOBS} (the machine has 2 cores)")
    if args.kind:
        kinds.get(args.kind)
        trials = [(args.kind, args.seed + i) for i in range(args.count or 1)]
        args_line = f"--kind {args.kind} --seed {args.seed}" + (f" --count {args.count}" if args.count else "")
    else:
        only = args.kinds.split(",") if args.kinds else None
        for k in only or []:
            kinds.get(k)
        trials = schedule(counts_for(args.trials, only), args.seed)
        args_line = "python -m reliability" + (f" --trials {args.trials}" if args.trials else "") + \
            (f" --kinds {args.kinds}" if args.kinds else "") + (f" --seed {args.seed}" if args.seed else "")
    if args.quick:
        args_line += " --quick"
    print(f"{len(trials)} trials, {min(args.jobs, MAX_JOBS)} at a time", flush=True)
    verdicts, seconds = run_campaign(trials, args.jobs, args.quick, args.keep)
    if args.verbose:
        for v in verdicts:
            print("\n" + show(v), flush=True)
    facts = machine()
    text = table(verdicts, seconds, args_line, facts)
    print("\n" + text)
    if not args.kind:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        with open(os.path.join(RESULTS_DIR, "latest.md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(RESULTS_DIR, "latest.json"), "w") as f:
            json.dump({"args": args_line, "machine": facts, "seconds": round(seconds, 1),
                       "trials": [{"kind": v.kind, "seed": v.seed, "quick": v.quick, "passed": v.passed,
                                   "reasons": v.reasons, "seconds": v.seconds, "plan": v.plan,
                                   "repro": v.repro, "details": v.details} for v in verdicts]},
                      f, indent=1, default=str)
        print(f"\nwritten: {os.path.relpath(RESULTS_DIR, REPO)}/latest.md, latest.json")
        if not args.no_doc:
            print("RELIABILITY.md results section updated" if update_doc(text)
                  else "RELIABILITY.md has no results markers: paste latest.md there")
    return 0 if all(v.passed for v in verdicts) else 1
