"""Child-side helpers that drive a real TF1 session: drain a pipeline, run under
``queuepipe.running``, probe for batches after a failure.  Imports TensorFlow (trial process only)."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import numpy as np
import tensorflow as tf

import queuepipe

from .core import HANG_S, TrialContext, describe_exc

tf1 = tf.compat.v1


def batch_of(pipe: Any, p: Dict[str, Any]) -> Any:
    """The trial's batch: ``pipe.staged("/cpu:0")`` when the plan says ``staged`` (staging's
    stager, tokens and tickets under the same faults), else ``pipe.batch``."""
    return pipe.staged("/cpu:0") if p.get("staged") else pipe.batch


def drain(ctx: TrialContext, sess: Any, fetch: Any, *, limit_batches: int = 10 ** 9,
          probe_after_failure: bool = True, stop: Callable[[], bool] = lambda: False) -> None:
    """Run ``fetch`` until OutOfRangeError, an error, ``limit_batches`` or ``stop()``.

    Records in ``ctx.obs``: ``batches`` (each fetched value), ``end`` ("OutOfRange", "limit",
    "stopped" or "error"), and for an error ``run_error`` (its record), ``run_error_blocked_s`` (how
    long the failing call waited), ``run_error_t`` (monotonic time) and ``after_failure`` (what the
    next calls gave: a batch there is a defect)."""
    obs = ctx.obs
    obs.setdefault("batches", [])
    obs.setdefault("batch_t", [])
    while len(obs["batches"]) < limit_batches:
        if stop():
            obs["end"] = "stopped"
            return
        t = time.monotonic()
        try:
            b = ctx.run(sess, fetch)
        except tf.errors.OutOfRangeError:
            obs["end"] = "OutOfRange"
            obs["end_blocked_s"] = round(time.monotonic() - t, 3)
            return
        except Exception as exc:  # noqa: BLE001 - every other error is the observation
            now = time.monotonic()
            obs["end"] = "error"
            obs["run_error"] = describe_exc(exc)
            obs["run_error_blocked_s"] = round(now - t, 3)
            obs["run_error_t"] = now
            if probe_after_failure:
                obs["after_failure"] = probe(ctx, sess, fetch)
            return
        obs["batches"].append(b)
        obs["batch_t"].append(time.monotonic())
    obs["end"] = "limit"


def probe(ctx: TrialContext, sess: Any, fetch: Any, tries: int = 2) -> List[Dict[str, Any]]:
    """After a failure: what do the next ``tries`` calls give?  (each waits at most 3 s)."""
    out: List[Dict[str, Any]] = []
    opts = tf1.RunOptions(timeout_in_ms=3000)
    for _ in range(tries):
        try:
            b = ctx.run(sess, fetch, label="sess.run after a failure", options=opts)
            out.append({"what": "batch", "rows": _nrows(b)})
        except tf.errors.DeadlineExceededError:
            out.append({"what": "blocked 3 s (DeadlineExceededError)"})
            break
        except Exception as exc:  # noqa: BLE001
            out.append({"what": "error", "error": describe_exc(exc)})
    return out


def _nrows(b: Any) -> int:
    if isinstance(b, dict):
        b = next(iter(b.values()))
    elif isinstance(b, (tuple, list)):
        b = b[0]
    return int(np.shape(b)[0]) if np.ndim(b) else 1


def under_running(ctx: TrialContext, sess: Any, body: Callable[[], None]) -> None:
    """``with queuepipe.running(sess): body()`` -- recording what running()'s exit raised
    (``running_exit``), how long the exit took (``running_exit_s``), under the watchdog."""
    cm = queuepipe.running(sess)
    cm.__enter__()
    ctx.event("running")
    exc_info: Any = (None, None, None)
    try:
        body()
    except BaseException as exc:  # noqa: BLE001 - handed to running()'s exit, as `with` would
        exc_info = (type(exc), exc, exc.__traceback__)
        ctx.obs["body_raised"] = describe_exc(exc)
    t = time.monotonic()
    with ctx.blocking("queuepipe.running() exit", HANG_S):
        try:
            if not cm.__exit__(*exc_info) and exc_info[1] is not None:
                raise exc_info[1]
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            rec = describe_exc(exc)
            rec["same_as_body"] = exc is exc_info[1]
            ctx.obs["running_exit"] = rec
    ctx.obs["running_exit_s"] = round(time.monotonic() - t, 3)


def close_session(ctx: TrialContext, sess: Any) -> float:
    """``sess.close()`` under the watchdog; returns the monotonic time it was called."""
    t = time.monotonic()
    with ctx.blocking("sess.close()", HANG_S):
        sess.close()
    ctx.obs["close_s"] = round(time.monotonic() - t, 3)
    return t
