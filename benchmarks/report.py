"""Ratios, targets, the markdown table, the console summary and the scaling plot."""
from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from .workloads import ROW_BYTES, WORKLOADS

BEGIN = "<!-- BEGIN GENERATED RESULTS (python -m benchmarks.run) -->"
END = "<!-- END GENERATED RESULTS -->"

# workload -> (what the named ratio is, key of the ratio, target, modes the target applies to, target text)
TARGETS = {
    "W1": ("x limit-queue", "x_queue", 0.85, ("thread", "process"), ">= 0.85 x limit-queue"),
    "W2": ("x limit-read (2 proc)", "x_read2", 0.95, ("process",), "processes >= 0.95 x the two-process limit"),
    "W3": ("x limit-read", "x_read", 0.60, ("thread", "process"), ">= 0.6 x limit-read"),
    "W4": ("overlap efficiency", "overlap", 0.90, ("thread", "process"), "overlap efficiency >= 0.9"),
    "W5": ("x limit-read (2 proc)", "x_read2", 0.90, ("process",),
           "processes >= 0.9 x two-process limit-read"),
}


# workload -> more workers must keep at least this share of one worker's rate (same mode, same loop)
SCALING_TARGETS = {"W1": 0.95}


def driver(row: Dict[str, Any]) -> str:
    """The consumer loop a row ran: "sess.run" (every workload) or "make_callable"."""
    return row.get("driver") or "sess.run"


def _ok(row: Dict[str, Any]) -> bool:
    return row.get("status") == "ok" and bool(row.get("samples_per_s"))


def _limit(rows: List[Dict[str, Any]], way: str, procs: int = 1, loop: str = "sess.run") -> Optional[Dict[str, Any]]:
    for r in rows:
        if (r["way"] == way and (way != "limit-read" or r.get("procs", 1) == procs) and driver(r) == loop
                and _ok(r)):
            return r
    return None


def merge_bracket(rows: List[Dict[str, Any]], again: Dict[str, Any]) -> None:
    """Fold a limit row measured again at the end of its workload into the first measurement."""
    first = next(r for r in rows if r["workload"] == again["workload"] and r["label"] == again["label"])
    if not _ok(again):
        first["bracket_error"] = again.get("reason")
        return
    if not _ok(first):
        first.update({k: v for k, v in again.items()})
        return
    first["bracket_samples_per_s"] = [first["samples_per_s"], again["samples_per_s"]]
    first["repeat_samples_per_s"] = first["repeat_samples_per_s"] + again["repeat_samples_per_s"]
    first["samples_per_s"] = statistics.median(first["repeat_samples_per_s"])
    if again.get("step_ms") is not None:
        first["step_ms"] = 1000.0 * WORKLOADS[first["workload"]].batch / first["samples_per_s"]
    for k in ("rss_mb", "worker_rss_mb"):
        vals = [v for v in (first.get(k), again.get(k)) if v]
        first[k] = max(vals) if vals else None


def parallelism(row: Dict[str, Any]) -> int:
    """How many producers a way runs at once (for W4's ideal step)."""
    if row["group"] == "queuepipe" or row["way"] == "tf1-native":
        return int(row.get("workers") or 1)
    return int(row.get("procs") or 1)


def finish(results: Dict[str, Any]) -> None:
    """Add MB/s, ratios, W4 overlap and PASS/MISS to the rows; a summary per workload."""
    summary = {}
    for wid in dict.fromkeys(r["workload"] for r in results["rows"]):
        w = WORKLOADS[wid]
        rows = [r for r in results["rows"] if r["workload"] == wid]
        lc, lr1 = _limit(rows, "limit-consumer"), _limit(rows, "limit-read", 1)
        lr2 = _limit(rows, "limit-read", results.get("limit_procs", 2))
        for r in rows:
            if not _ok(r):
                continue
            s = r["samples_per_s"]
            r["mb_per_s"] = s * ROW_BYTES / 1e6
            own_lc, own_lq = _limit(rows, "limit-consumer", loop=driver(r)), _limit(rows, "limit-queue", loop=driver(r))
            r["x_consumer"] = s / own_lc["samples_per_s"] if own_lc else None
            r["x_queue"] = s / own_lq["samples_per_s"] if own_lq else None
            r["x_read"] = s / lr1["samples_per_s"] if lr1 else None
            r["x_read2"] = s / lr2["samples_per_s"] if lr2 else None
            if w.sleep_step and r["group"] != "limit" and lc and lr1:
                step = 1000.0 * w.batch / s
                produce = 1000.0 * w.batch / lr1["samples_per_s"]
                ideal = max(lc["step_ms"], produce / parallelism(r))
                r["step_ms"], r["ideal_step_ms"], r["overlap"] = step, ideal, ideal / step
        what, key, target, modes, text = TARGETS[wid]
        for loop in dict.fromkeys(driver(r) for r in rows):
            qp = [r for r in rows if r["group"] == "queuepipe" and driver(r) == loop]
            if not qp:
                continue
            for r in qp:
                if _ok(r) and r.get("mode") in modes and r.get(key) is not None:
                    r["target"] = "PASS" if r[key] >= target else "MISS"
            judged = [r for r in qp if r.get("target")]
            best_target = max(judged, key=lambda r: r[key]) if judged else None
            refs = [r for r in rows if r["group"] in ("reference", "peer") and _ok(r)]
            best_qp = max((r for r in qp if _ok(r)), key=lambda r: r["samples_per_s"], default=None)
            beaten_by = [r["label"] for r in refs if best_qp and r["samples_per_s"] > best_qp["samples_per_s"]]
            summary[wid if loop == "sess.run" else f"{wid} [{loop}]"] = {
                "workload": wid,
                "target": text,
                "target_status": (best_target["target"] if best_target else "not measured"),
                "target_value": best_target[key] if best_target else None,
                "target_row": best_target["label"] if best_target else None,
                "beats_references": (None if best_qp is None or not refs or loop != "sess.run" else not beaten_by),
                "beaten_by": beaten_by,
                "best_queuepipe": best_qp["label"] if best_qp else None,
                "not_available": sorted({r.get("reason", "") for r in qp if r.get("status") == "not available"}),
                "scaling": _scaling(qp, SCALING_TARGETS.get(wid)),
            }
    results["summary"] = summary


def _scaling(qp: List[Dict[str, Any]], target: Optional[float]) -> List[str]:
    """For each mode: every multi-worker row's rate over the one-worker row's (same loop), with
    PASS/MISS against ``target`` (more workers must not be slower)."""
    if target is None:
        return []
    out = []
    for mode in ("thread", "process"):
        one = next((r for r in qp if r.get("mode") == mode and r.get("workers") == 1 and _ok(r)), None)
        if one is None:
            continue
        for r in qp:
            if r.get("mode") == mode and (r.get("workers") or 1) > 1 and _ok(r):
                ratio = r["samples_per_s"] / one["samples_per_s"]
                r["x_one_worker"] = ratio
                out.append(f"{mode} x{r['workers']} {ratio:.2f} x x1 {'PASS' if ratio >= target else 'MISS'}")
    return out


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


def _rate(x: Optional[float]) -> str:
    if not x:
        return ""
    return f"{x / 1e6:.2f} M" if x >= 1e6 else (f"{x / 1e3:.1f} k" if x >= 1e3 else f"{x:.0f}")


def _x(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}"


def _rss(r: Dict[str, Any]) -> str:
    a, b = r.get("rss_mb"), r.get("worker_rss_mb")
    if not a:
        return ""
    return f"{a:.0f}" + (f" / {b:.0f}" if b else "")


def _status(r: Dict[str, Any]) -> str:
    reason = (r.get("reason") or "").replace("|", "/").replace("\n", " ")
    return f"{r.get('status')}: {reason}" if reason else str(r.get("status"))


def progress_line(r: Dict[str, Any]) -> str:
    head = f"{r['workload']} {r['label']:<34s}"
    if not _ok(r):
        return f"{head} {_status(r)}"
    reps = ", ".join(_rate(x) for x in r.get("repeat_samples_per_s", []))
    extra = f"  check {r['check']}" if r.get("check") else ""
    rss = f"  rss {_rss(r)} MB" if r.get("rss_mb") else ""
    return f"{head} {_rate(r['samples_per_s']):>8s} samples/s  [{reps}]{extra}{rss}"


def markdown(results: Dict[str, Any], plot_path: Optional[Path] = None, md_dir: Optional[Path] = None) -> str:
    m, v = results["machine"], results.get("versions", {})
    pv = results.get("peers", {})
    lines = [
        f"Command: `{results['command']}` ({results['profile']} profile: {results['config']['repeats']} "
        f"repeat(s) per row, median; each repeat capped at {results['config']['max_seconds']} s after "
        f"{results['config']['warmup_batches']} warm-up batches), {results['date']}, {results['elapsed_s']} s.",
        "",
        f"Machine: {m.get('cores')} cores ({m.get('usable_cores')} usable), {m.get('cpu_model')}, "
        f"{m.get('memory_gib')} GiB; load average {_load(m.get('loadavg_start'))} at the start, "
        f"{_load(m.get('loadavg_end'))} at the end. Python {v.get('python')}, TensorFlow "
        f"{v.get('tensorflow')}, NumPy {v.get('numpy')}, h5py {v.get('h5py')} (HDF5 {v.get('hdf5')}), "
        f"queuepipe {v.get('queuepipe')} at {m.get('queuepipe_commit')}"
        f"{' (uncommitted changes)' if m.get('worktree_dirty') else ''}.",
        "",
        "Peers: " + (pv.get("problem") or ", ".join(f"{k} {x}" for k, x in pv.get("versions", {}).items()
                                                       if k in ("tensorpack", "tftables", "multitables",
                                                                "tables", "wrapt", "tensorflow",
                                                                "numpy", "h5py"))
                     + " in their own virtualenv (shims: benchmarks/peers/NOTES.md)"),
        "",
        f"W2's per-sample work: {results['work_loops']} loop iterations (~0.5 ms, calibrated at the start).",
        "",
    ]
    summary = results.get("summary", {})
    lines += ["| workload | target | best queuepipe row | value | PASS/MISS | queuepipe >= every reference |",
              "|---|---|---|---|---|---|"]
    for wid, s in summary.items():
        beats = {None: "n/a", True: "PASS", False: "MISS (" + ", ".join(s["beaten_by"]) + ")"}[
            s["beats_references"]]
        lines.append(f"| {wid} | {s['target']} | {s['target_row'] or '-'} | {_x(s['target_value'])} | "
                     f"{s['target_status']} | {beats} |")
    lines.append("")
    for wid, s in summary.items():
        if s.get("scaling"):
            lines.append(f"More workers, {wid} (target >= {SCALING_TARGETS[s['workload']]} x one worker): "
                         + "; ".join(s["scaling"]) + ".")
            lines.append("")
    for wid in dict.fromkeys(s["workload"] for s in summary.values()):
        w = WORKLOADS[wid]
        rows = [r for r in results["rows"] if r["workload"] == wid]
        lines += [f"### {wid}: {w.title} (batch {w.batch})", ""]
        overlap = w.sleep_step
        head = ["way", "samples/s", "MB/s", "x limit-consumer", "x limit-queue", "x limit-read",
                "x limit-read (2 proc)"]
        if overlap:
            head += ["step ms", "ideal ms", "overlap"]
        head += ["check", "peak RSS MB (row / worker)", "target"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if _ok(r):
                cells = [r["label"], _rate(r["samples_per_s"]), f"{r.get('mb_per_s', 0):.0f}",
                         _x(r.get("x_consumer")), _x(r.get("x_queue")), _x(r.get("x_read")), _x(r.get("x_read2"))]
                if overlap:
                    cells += [_x(r.get("step_ms")), _x(r.get("ideal_step_ms")), _x(r.get("overlap"))]
                check = (r.get("check") or "") + (" (left processes behind)" if r.get("leftover_processes") else "")
                cells += [check, _rss(r), r.get("target") or ""]
            else:
                cells = [r["label"], _status(r)] + [""] * (len(head) - 2)
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    if plot_path is not None:
        rel = os.path.relpath(plot_path, md_dir) if md_dir else str(plot_path)
        lines += [f"![samples/s against workers, W2 and W5]({rel})", ""]
    return "\n".join(lines)


def _load(x) -> str:
    return "?" if not x else "/".join(f"{v:.1f}" for v in x)


def console(results: Dict[str, Any]) -> str:
    out = ["summary (targets: PASS/MISS):"]
    for wid, s in results.get("summary", {}).items():
        beats = {None: "n/a", True: "PASS", False: "MISS: beaten by " + ", ".join(s["beaten_by"])}[
            s["beats_references"]]
        val = f"{s['target_value']:.2f}" if s["target_value"] is not None else "-"
        out.append(f"  {wid}: {s['target']}: {s['target_status']} ({val}, {s['target_row'] or 'no row'}); "
                   f"queuepipe >= every reference: {beats}")
        for reason in s["not_available"]:
            out.append(f"      not available: {reason}")
        if s.get("scaling"):
            out.append("      more workers: " + "; ".join(s["scaling"]))
    return "\n".join(out)


def update_markdown_file(path: Path, table: str) -> None:
    """Replace the generated section of ``path`` (between the markers), or append one."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{table.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + block + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------


def plot(results: Dict[str, Any], path: Path) -> bool:
    """samples/s against workers (threads, processes) for W2 and W5, limits as dashed lines."""
    panels = [wid for wid in ("W2", "W5") if any(r["workload"] == wid for r in results["rows"])]
    if not panels:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, wid in zip(axes[0], panels):
        rows = [r for r in results["rows"] if r["workload"] == wid]
        top = 0.0
        for mode, style in (("thread", "o-"), ("process", "s-")):
            pts = sorted((r["workers"], r["samples_per_s"]) for r in rows
                         if r["group"] == "queuepipe" and r.get("mode") == mode and _ok(r))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"queuepipe, {mode} workers")
                top = max(top, max(p[1] for p in pts))
        best_ref = max((r for r in rows if r["group"] in ("reference", "peer") and _ok(r)),
                       key=lambda r: r["samples_per_s"], default=None)
        procs = results.get("limit_procs", 2)
        lines = [(f"best reference ({best_ref['label']})", best_ref, "-", "tab:red") if best_ref else None,
                 ("limit-read (1 process)", _limit(rows, "limit-read", 1), ":", "gray"),
                 (f"limit-read ({procs} processes)", _limit(rows, "limit-read", procs), "--", "gray"),
                 ("limit-consumer", _limit(rows, "limit-consumer"), "-.", "black")]
        lines = [x for x in lines if x and x[1]]
        top = max([top] + [r["samples_per_s"] for _, r, _, _ in lines if r["group"] != "limit"]
                  + [r["samples_per_s"] for _, r, _, _ in lines if r["way"] == "limit-read"])
        off = []
        for label, r, ls, color in lines:
            if r["samples_per_s"] > 3 * top:  # e.g. limit-consumer in W2: far above, would flatten the rest
                off.append(f"{label} {_rate(r['samples_per_s'])}/s")
                continue
            ax.axhline(r["samples_per_s"], linestyle=ls, color=color, linewidth=1, label=label)
        ax.set_title(f"{wid}: {WORKLOADS[wid].title}" + (f"\n(off scale: {'; '.join(off)})" if off else ""),
                     fontsize=8)
        ax.set_xlabel("workers")
        ax.set_ylabel("samples/s")
        ax.set_xticks(results.get("workers", [1, 2]))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle(f"queuepipe scaling ({results['profile']} run, {results['date'][:10]}, "
                 f"{results['machine'].get('cores')} cores)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
