"""Run one trial ``(kind, seed)`` in a fresh interpreter under a hard timeout, and judge it.

The supervisor (this process) prepares the trial's files, reads them with h5py in a separate
oracle process, starts ``python -m reliability.child`` in a new session with a per-trial token in
its environment, watches its stdout events (READY, SIGNAL_SENT, RESULT), sends external signals,
enforces deadlines (dumping every thread's stack with SIGUSR1 before killing a hung trial), then
checks that no process of the trial and no /dev/shm segment it used outlives it.

A trial passes when every generic check (no crash, no hang, no leak, no harness error) and every
check of its kind holds.  The verdict's reasons are one line each; ``details`` keeps the rest.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import kinds
from .core import (CRASH_SIGNALS, EVENT, EXIT_HANG_S, HANG_EXIT_CODE, PROMPT_S, TOKEN_ENV, one_line,
                   processes_with_token, shm_entries, shm_held_by, shm_held_by_anyone, summarize_stacks)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORACLE_TIMEOUT_S = 20.0
_running_lock = threading.Lock()
_running = [0]          # trials in flight in this supervisor (shm attribution needs to know)
_live: Dict[int, subprocess.Popen] = {}   # trial processes now running (for abort_all)


def abort_all() -> None:
    """Kill every trial process still running (the campaign was interrupted)."""
    for child in list(_live.values()):
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Verdict:
    kind: str
    seed: int
    quick: bool
    passed: bool
    reasons: List[str]
    seconds: float
    plan: Dict[str, Any]
    details: Dict[str, Any] = field(default_factory=dict)

    @property
    def repro(self) -> str:
        return f"python -m reliability --kind {self.kind} --seed {self.seed}{' --quick' if self.quick else ''} -v"

    def line(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "ok"


# ---------------------------------------------------------------------------------------------
# the oracle (h5py alone, in its own process)
# ---------------------------------------------------------------------------------------------

def run_oracle(path: str, datasets: List[str], workdir: str) -> Dict[str, Any]:
    out_path = os.path.join(workdir, "oracle.pkl")
    try:
        proc = subprocess.run([sys.executable, "-m", "reliability.oracle", path, out_path, *datasets],
                              cwd=REPO, capture_output=True, text=True, timeout=ORACLE_TIMEOUT_S,
                              env=dict(os.environ, PYTHONPATH=_pythonpath()))
    except subprocess.TimeoutExpired:
        return {"status": "hung", "detail": f"h5py read did not finish in {ORACLE_TIMEOUT_S:.0f} s"}
    if proc.returncode != 0 or not os.path.exists(out_path):
        how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit {proc.returncode}")
        return {"status": "crashed", "detail": f"{how}: {one_line(proc.stderr[-300:], 160)}"}
    with open(out_path, "rb") as f:
        return {"status": "ok", "result": pickle.load(f)}


def _pythonpath() -> str:
    """REPO (for ``reliability``), after QUEUEPIPE_UNDER_TEST when set: a directory holding another
    ``queuepipe`` package to test (e.g. ``git archive HEAD queuepipe | tar -x -C DIR``)."""
    return os.pathsep.join(p for p in [os.environ.get("QUEUEPIPE_UNDER_TEST", ""), REPO,
                                       os.environ.get("PYTHONPATH", "")] if p)


# ---------------------------------------------------------------------------------------------
# one trial
# ---------------------------------------------------------------------------------------------

class _Stream(threading.Thread):
    """Collects a pipe; for stdout also the ``@@reliability`` events (name -> monotonic time)."""

    def __init__(self, pipe, events: Optional[Dict[str, float]] = None):
        super().__init__(daemon=True, name="reliability-pipe")
        self.pipe, self.events, self.chunks = pipe, events, []
        self.start()

    def run(self) -> None:
        for line in iter(self.pipe.readline, ""):
            if self.events is not None and line.startswith(EVENT):
                parts = line.split(None, 3)
                if len(parts) >= 3:
                    self.events.setdefault(parts[1], float(parts[2]))
                    continue
            self.chunks.append(line)
            if len(self.chunks) > 4000:
                del self.chunks[:2000]

    def text(self) -> str:
        return "".join(self.chunks)


def trial_timeout(kind: str, quick: bool = False) -> float:
    """The hard limit of one trial process (``QUICK_TIMEOUT_S`` of a kind applies with ``--quick``)."""
    mod = kinds.get(kind)
    return getattr(mod, "QUICK_TIMEOUT_S", mod.TIMEOUT_S) if quick else mod.TIMEOUT_S


def run_trial(kind: str, seed: int, quick: bool = False, keep: bool = False) -> Verdict:
    mod = kinds.get(kind)
    plan = mod.plan(seed, quick)
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix=f"qp-reliability-{kind}-{seed}-")
    details: Dict[str, Any] = {"workdir": workdir}
    try:
        prep = mod.prepare(plan, workdir, lambda path, ds: run_oracle(path, ds, workdir))
        proc = _run_child(kind, seed, quick, plan, prep, workdir, timeout=trial_timeout(kind, quick))
        obs = proc.pop("obs")
        reasons = _generic(mod, plan, obs, proc)
        judged = obs is not None and not obs.get("hang") and not obs.get("uncaught") \
            and not proc.get("timed_out")
        if judged or (getattr(mod, "JUDGE_ALWAYS", False) and not proc.get("timed_out")):
            try:
                reasons += mod.judge(plan, prep, obs, proc)
            except Exception as exc:  # noqa: BLE001 - a judging bug is reported as such
                import traceback
                reasons.append(f"harness: judge raised {type(exc).__name__}: {exc}")
                details["judge_traceback"] = traceback.format_exc()
        orc = prep.get("oracle") if isinstance(prep, dict) else None
        if reasons and orc and orc["status"] == "hung" and plan.get("mode") == "thread":
            # RELIABILITY.md, known limits: a thread stuck inside HDF5 cannot be freed.  Still
            # required: the stall reported naming the file, and the process ending (queuepipe
            # ends it at exit rather than hang in finalization on h5py's lock).
            inherited = [r for r in reasons if "stuck inside HDF5" in r or r.startswith("queuepipe threads left")]
            if inherited:
                details["known_limit"] = inherited
                reasons = [r for r in reasons if r not in inherited]
        if reasons and orc and orc["status"] != "ok":
            note = f"[h5py alone {orc['status']} on this file too] "
            reasons = [r if "h5py alone" in r else note + r for r in reasons]
        details.update(proc=proc, prep=_small(prep), obs_summary=_obs_summary(mod, obs))
        if hasattr(mod, "summary") and obs:
            details["summary"] = mod.summary(obs)
    except Exception as exc:  # noqa: BLE001
        import traceback
        reasons = [f"harness: {type(exc).__name__}: {one_line(str(exc), 160)}"]
        details["traceback"] = traceback.format_exc()
    seconds = time.monotonic() - started
    v = Verdict(kind, seed, quick, not reasons, [one_line(r, 300) for r in reasons], round(seconds, 1), plan, details)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return v


def _small(prep: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in prep.items():
        if k == "oracle":
            res = v.get("result") or {}
            out[k] = {"status": v["status"], "detail": v.get("detail"), "open_error": res.get("open_error"),
                      "errors": {ds: r.get("error") for ds, r in (res.get("datasets") or {}).items()},
                      "unreadable_rows": {ds: len(r.get("row_errors") or {}) for ds, r in
                                          (res.get("datasets") or {}).items()}}
        else:
            out[k] = v
    return out


def _shorten(v: Any) -> Any:
    """Long error messages (TF's carry whole tracebacks) cut to their head and tail."""
    if isinstance(v, str) and len(v) > 1500:
        return v[:700] + " [...] " + v[-700:]
    if isinstance(v, dict):
        return {k: _shorten(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_shorten(x) for x in v]
    return v


def _obs_summary(mod, obs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if not obs:
        return {}
    keep = ("end", "run_error", "run_error_blocked_s", "running_exit", "running_exit_s", "build_error", "build_s",
            "after_failure", "close_s", "leak_checks", "change", "killed_pid", "interrupted", "hang", "uncaught",
            "calls", "max_call_s", "body_raised", "runner_threads_alive", "n_batches", "seconds", "threads_left")
    out = {k: _shorten(obs[k]) for k in keep if k in obs}
    if "hang" in out:
        out["hang"] = {k: v for k, v in out["hang"].items() if k != "stacks"}
        out["hang_stacks"] = obs["hang"].get("stacks", "")[-6000:]
    out["batches"] = len(obs.get("batches", []))
    return out


def _run_child(kind: str, seed: int, quick: bool, plan: Dict[str, Any], prep: Dict[str, Any], workdir: str,
               timeout: float) -> Dict[str, Any]:
    token = uuid.uuid4().hex
    result_path = os.path.join(workdir, "result.pkl")
    trial_path = os.path.join(workdir, "trial.pkl")
    with open(trial_path, "wb") as f:
        pickle.dump({"kind": kind, "seed": seed, "quick": quick, "plan": plan, "prep": prep,
                     "result_path": result_path, "workdir": workdir}, f)
    env = dict(os.environ, PYTHONPATH=_pythonpath(), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               **{TOKEN_ENV: token})
    shm_before = shm_entries()
    touched: set = set()
    events: Dict[str, float] = {}
    with _running_lock:
        _running[0] += 1
        alone = _running[0] == 1
    t0 = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "reliability.child", trial_path], cwd=workdir, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             start_new_session=True)
    _live[child.pid] = child
    out, err = _Stream(child.stdout, events), _Stream(child.stderr)
    info: Dict[str, Any] = {"pid": child.pid}
    deadline, why = t0 + timeout, f"trial still running after {timeout:.0f} s"
    external = plan.get("external")
    last_scan = 0.0
    try:
        while child.poll() is None:
            now = time.monotonic()
            if now - last_scan > 0.3:
                last_scan = now
                for pid, _ in processes_with_token(token):
                    touched |= shm_held_by(pid)
            if external and "READY" in events and "signal_t" not in info and now >= events["READY"] + external["delay_s"]:
                sig = getattr(signal, external["signal"])
                try:
                    if external["target"] == "group":
                        os.killpg(child.pid, sig)
                    else:
                        os.kill(child.pid, sig)
                    info["signal_t"] = time.monotonic()
                except ProcessLookupError:
                    pass
            sent = info.get("signal_t") or events.get("SIGNAL_SENT")
            if sent and sent + PROMPT_S < deadline:
                deadline, why = sent + PROMPT_S, f"still running {PROMPT_S:.0f} s after {_signame(plan)}"
            if "RESULT" in events and events["RESULT"] + EXIT_HANG_S + 3 < deadline:
                deadline = events["RESULT"] + EXIT_HANG_S + 3
                why = f"interpreter did not exit {EXIT_HANG_S + 3:.0f} s after the trial wrote its result"
            if now > deadline:
                info["timed_out"] = True
                info["timeout_reason"] = why
                _dump_and_kill(child, token)
                break
            time.sleep(0.05)
        child.wait()
    finally:
        if child.poll() is None:
            _dump_and_kill(child, token)
            child.wait()
        info["exit_t"] = time.monotonic()
        _live.pop(child.pid, None)
        out.join(5)
        err.join(5)
        with _running_lock:
            _running[0] -= 1
    info["rc"] = child.returncode
    if "SIGNAL_SENT" in events and "signal_t" not in info:
        info["signal_t"] = events["SIGNAL_SENT"]
    info["seconds"] = round(info["exit_t"] - t0, 2)
    info["events"] = {k: round(v - t0, 3) for k, v in events.items()}
    stderr = err.text()
    info["stderr_tail"] = "\n".join(l for l in stderr.splitlines()
                                    if not l.startswith(("WARNING: All log", "I0000", "W0000")))[-6000:]
    info["stdout_tail"] = out.text()[-2000:]
    # processes of the trial (the token is in their environment) must be gone soon after it exits
    end = time.monotonic() + PROMPT_S
    left = processes_with_token(token)
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = processes_with_token(token)
    if left:
        info["leaked_processes"] = left
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    time.sleep(0.05)
    still = shm_entries()
    leaked = touched & still
    if alone:
        new = (still - shm_before) - shm_held_by_anyone()
        leaked |= new
    if leaked:
        info["leaked_shm"] = sorted(leaked)
    obs = None
    if os.path.exists(result_path):
        with open(result_path, "rb") as f:
            obs = pickle.load(f)
    info["obs"] = obs
    return info


def _signame(plan: Dict[str, Any]) -> str:
    return {"sigint": "SIGINT", "sigterm": "SIGTERM"}.get(plan.get("variant", ""), "the signal")


def _dump_and_kill(child: subprocess.Popen, token: str) -> None:
    try:
        os.kill(child.pid, signal.SIGUSR1)      # faulthandler: every thread's stack to stderr
        time.sleep(1.5)
    except ProcessLookupError:
        pass
    for sig_target in (lambda: os.killpg(child.pid, signal.SIGKILL), lambda: os.kill(child.pid, signal.SIGKILL)):
        try:
            sig_target()
        except (ProcessLookupError, PermissionError):
            pass


def _generic(mod, plan: Dict[str, Any], obs: Optional[Dict[str, Any]], proc: Dict[str, Any]) -> List[str]:
    """Crash, hang, harness and leak checks common to every kind."""
    out: List[str] = []
    rc = proc["rc"]
    stderr = proc["stderr_tail"]
    allowed = set(mod.signals(plan)) if hasattr(mod, "signals") else set()
    if proc.get("timed_out"):
        stacks = summarize_stacks(stderr)
        out.append(f"hang: {proc['timeout_reason']}" + (f"; {stacks}" if stacks else ""))
    elif obs is not None and obs.get("hang"):
        h = obs["hang"]
        out.append(f"hang: {h['label']} blocked > {h['after_s']:.0f} s; {h['summary']}")
    elif "Timeout (0:00:" in stderr and rc == 1:
        out.append(f"hang at interpreter exit (> {EXIT_HANG_S:.0f} s after the result); "
                   f"{summarize_stacks(stderr.split('Timeout (0:00:', 1)[1])}")
    elif rc is not None and rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        if name in CRASH_SIGNALS or name not in allowed:
            fatal = [l for l in stderr.splitlines() if l.startswith("Fatal Python error")]
            stacks = summarize_stacks(stderr)
            out.append(f"crash: killed by {name}" + (f" ({fatal[0]})" if fatal else "")
                       + (f"; {stacks}" if stacks else ""))
    elif rc not in (0, None, HANG_EXIT_CODE) and not allowed:
        last = [l for l in stderr.splitlines() if l.strip()]
        out.append(f"crash: exit code {rc}: {one_line(last[-1] if last else '', 200)}")
    if obs is None and not proc.get("timed_out") and not out and not allowed:
        out.append("no result written by the trial process")
    if obs is not None and obs.get("uncaught"):
        u = obs["uncaught"]
        if not (u["type"] == "KeyboardInterrupt" and "SIGINT" in allowed):
            where = [l.strip() for l in u.get("traceback", "").splitlines() if l.strip().startswith("File")]
            out.append(f"harness: the trial raised {u['type']}: {one_line(u['message'], 160)}"
                       + (f" at {one_line(where[-1], 120)}" if where else ""))
    for chk in (obs or {}).get("leak_checks", []):
        if chk["threads"]:
            out.append(f"queuepipe threads left {chk['label']}: {chk['threads'][:4]}")
        if chk["children"]:
            out.append(f"worker processes left {chk['label']}: "
                       f"{[(pid, one_line(cmd, 60)) for pid, cmd in chk['children'][:3]]}")
    if proc.get("leaked_processes"):
        out.append(f"leaked processes alive {PROMPT_S:.0f} s after the trial exited: "
                   f"{[(pid, one_line(cmd, 60)) for pid, cmd in proc['leaked_processes'][:3]]}")
    if proc.get("leaked_shm"):
        out.append(f"leaked /dev/shm segments: {proc['leaked_shm'][:4]}")
    return out
