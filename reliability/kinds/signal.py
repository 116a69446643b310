"""Signals during a running pipeline:

* ``kill_worker`` -- SIGKILL one worker process (a child of the trial process, ``mode="process"``)
  at a random time: the next ``sess.run`` calls raise within 10 s and ``running()`` raises
  ``queuepipe.WorkerDiedError`` -- never a hang, no duplicated or wrong rows before it;
* ``sigint`` / ``sigterm`` -- sent to the trial process itself at a random time, from a timer
  thread inside it (``timer``) or by the supervisor (``external``, to the process or, like a
  terminal's Ctrl-C, to its whole process group): the process exits within 10 s
  (KeyboardInterrupt / terminated), leaving no process or /dev/shm segment behind.

Sources: an infinite fast generator, a starved one (``sess.run`` waits on an empty queue for
seconds: Ctrl-C must still work), or an HDF5 file read for ever (``num_epochs=None``).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Dict, List

import numpy as np

from .. import files
from ..core import PROMPT_S, describe_exc, emit, worker_children
from ..judging import after_failure_reasons, duplicated, err_text, pick, rng_for

TIMEOUT_S = 120
JUDGE_ALWAYS = True     # SIGTERM leaves no result: the exit itself is judged
VARIANTS = ("kill_worker", "sigint", "sigterm")


def plan(seed: int, quick: bool = False) -> Dict[str, Any]:
    rng = rng_for("signal", seed)
    variant = pick(rng, VARIANTS, p=[0.4, 0.35, 0.25])
    p = {
        "variant": variant,
        "source": pick(rng, ["generator", "starved", "hdf5"], p=[0.45, 0.25, 0.3]),
        "mode": "process" if variant == "kill_worker" else pick(rng, ["thread", "process"]),
        "workers": pick(rng, [1, 2]),
        "batch_size": pick(rng, [4, 16, 64]),
        "delay_s": round(float(rng.uniform(0.0, 1.5)), 3),
        "sender": "child" if variant == "kill_worker" else pick(rng, ["timer", "external"]),
        "target": pick(rng, ["process", "group"]),
        "victim": int(rng.integers(0, 2)),
        "format": pick(rng, ["contiguous", "gzip", "string_vlen", "compound"]),
        "file_seed": int(rng.integers(2 ** 31)),
    }
    if variant == "kill_worker" and p["source"] == "starved":
        p["source"] = "generator"
    if p["source"] == "starved":
        p["batch_size"] = 64
    p["staged"] = bool(rng.random() < 0.3)  # drawn last: earlier seeds keep their other draws
    if p["sender"] == "external":
        p["external"] = {"signal": "SIGINT" if variant == "sigint" else "SIGTERM",
                         "delay_s": p["delay_s"], "target": p["target"]}
    return p


def signals(p: Dict[str, Any]) -> tuple:
    return {"sigint": ("SIGINT",), "sigterm": ("SIGTERM",)}.get(p["variant"], ())


def prepare(p: Dict[str, Any], workdir: str, oracle) -> Dict[str, Any]:
    return files.prepare_plain(p, workdir, "signal")


def _pipeline(p: Dict[str, Any], prep: Dict[str, Any]):
    import tensorflow as tf

    import queuepipe

    from ..payloads import CounterRows
    from ..tfrun import batch_of
    if p["source"] == "hdf5":
        return batch_of(queuepipe.from_hdf5(prep["path"], files.DATASETS, batch_size=p["batch_size"],
                                            mode=p["mode"], workers=p["workers"], num_epochs=None,
                                            with_row_ids=True), p)
    # starved: the first batch at once, then a row every 0.25 s: sess.run waits ~16 s per batch of 64
    gen = CounterRows() if p["source"] == "generator" else CounterRows(delay=0.25, fast_rows=p["batch_size"])
    return batch_of(queuepipe.from_generator(gen, tf.int64, (3,), batch_size=p["batch_size"],
                                             mode=p["mode"], workers=p["workers"], num_epochs=None), p)


def observe(p: Dict[str, Any], prep: Dict[str, Any], ctx) -> None:
    import tensorflow as tf

    from ..tfrun import close_session, drain, under_running
    obs = ctx.obs
    try:
        with tf.Graph().as_default():
            batch = _pipeline(p, prep)
            sess = tf.compat.v1.Session()

            def body():
                drain(ctx, sess, batch, limit_batches=1)
                emit("READY")
                if p["variant"] == "kill_worker":
                    threading.Thread(target=_kill_worker, args=(ctx, p), daemon=True,
                                     name="reliability-killer").start()
                    # until an error, or PROMPT_S after the kill with batches still coming
                    drain(ctx, sess, batch, stop=lambda: "killed_t" in obs
                          and time.monotonic() - obs["killed_t"] > PROMPT_S + 1)
                else:
                    if p["sender"] == "timer":
                        sig = signal.SIGINT if p["variant"] == "sigint" else signal.SIGTERM
                        threading.Timer(p["delay_s"], _send, args=(ctx, sig)).start()
                    while True:      # a training loop: only the signal ends it
                        drain(ctx, sess, batch, limit_batches=len(obs["batches"]) + 1000)
                        if obs.get("end") != "limit":
                            break
                        obs["batches"] = obs["batches"][-100:]
                        obs["batch_t"] = obs["batch_t"][-100:]

            under_running(ctx, sess, body)
            close_session(ctx, sess)
        if p["variant"] == "kill_worker":
            ctx.wait_no_leaks()
    except KeyboardInterrupt as exc:
        obs["interrupted_t"] = time.monotonic()
        obs["interrupted"] = describe_exc(exc)
        obs["threads_left"] = [t.name for t in threading.enumerate() if t.name.startswith("queuepipe")]


def _send(ctx, sig: int) -> None:
    ctx.obs["signal_sent_t"] = emit("SIGNAL_SENT", signal.Signals(sig).name)
    os.kill(os.getpid(), sig)


def _kill_worker(ctx, p: Dict[str, Any]) -> None:
    time.sleep(p["delay_s"])
    pids = sorted(worker_children())
    if not pids:
        ctx.obs["kill_failed"] = "no worker process found"
        return
    victim = pids[p["victim"] % len(pids)]
    try:
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        ctx.obs["kill_failed"] = f"worker {victim} was already gone"
        return
    ctx.obs["killed_t"] = time.monotonic()
    ctx.obs["killed_pid"] = victim


def judge(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    if p["variant"] == "kill_worker":
        return _judge_kill(p, prep, obs)
    return _judge_signal(p, obs, proc)


def _judge_rows(p: Dict[str, Any], obs: Dict[str, Any]) -> List[str]:
    from ..payloads import check_value
    from ..tfrun_free import columns, stack_rows
    out = []
    if p["source"] == "hdf5":
        cols = columns(obs.get("batches", []))
        if cols:
            bad = [int(r) for r, i in zip(cols["row_id"], cols["id"]) if int(r) != int(i)]
            if bad:
                out.append(f"wrong values: row ids and /id disagree for {len(bad)} rows")
        return out
    rows = stack_rows(obs.get("batches", []))
    if len(rows):
        if not np.array_equal(rows[:, 2], check_value(rows[:, 0], rows[:, 1])):
            out.append("wrong values: generator rows whose check column does not match")
        dups = duplicated(rows[:, 0] * 10 ** 9 + rows[:, 1])
        if dups:
            out.append(f"duplicated rows: {len(dups)} (worker, k) pairs delivered twice")
    return out


def _judge_kill(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any]) -> List[str]:
    if "kill_failed" in obs:
        return [f"harness: could not kill a worker ({obs['kill_failed']})"]
    if "killed_t" not in obs:
        return [f"the worker was never killed (drain ended by {obs.get('end')!r}: "
                f"{err_text(obs['run_error']) if 'run_error' in obs else ''})"]
    out = _judge_rows(p, obs)
    if obs.get("end") != "error":
        out.append(f"no error within {PROMPT_S:.0f} s of SIGKILL to worker pid {obs['killed_pid']} "
                   f"(batches kept coming; drain ended by {obs.get('end')!r})")
    else:
        late = obs["run_error_t"] - obs["killed_t"]
        if late > PROMPT_S:
            out.append(f"the error came {late:.1f} s after the kill (> {PROMPT_S:.0f} s)")
        out += after_failure_reasons(obs)
    rex = obs.get("running_exit")
    if not rex:
        out.append("queuepipe.running() raised nothing after a worker was killed (expected WorkerDiedError)")
    elif "WorkerDiedError" not in rex["mro"]:
        out.append(f"running() raised {err_text(rex)} instead of WorkerDiedError")
    return out


def _judge_signal(p: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    out = []
    sent = proc.get("signal_t") or (obs or {}).get("signal_sent_t")
    name = "SIGINT" if p["variant"] == "sigint" else "SIGTERM"
    if sent is None:
        return [f"harness: {name} was never sent (the trial ended first: exit {proc.get('rc')})"]
    exited = proc["exit_t"] - sent
    if exited > PROMPT_S:
        out.append(f"exited {exited:.1f} s after {name} (> {PROMPT_S:.0f} s)")
    if name == "SIGINT":
        rc = proc.get("rc")
        interrupted = bool(obs and obs.get("interrupted")) or rc in (-2, 130) or "KeyboardInterrupt" in proc.get(
            "stderr_tail", "")
        if not interrupted:
            out.append(f"no KeyboardInterrupt after SIGINT (exit {rc})")
    if obs:
        out += _judge_rows(p, obs)
    return out
