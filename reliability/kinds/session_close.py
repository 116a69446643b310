"""The session closed under a running pipeline, at a random step:

* ``no_coord`` -- ``start_queue_runners(sess)`` without a Coordinator, then ``sess.close()``;
* ``coord`` -- ``start_queue_runners(sess, coord)`` with a Coordinator that is never stopped;
* ``running`` -- ``sess.close()`` inside ``with queuepipe.running(sess):``.

Acceptable: ``sess.close()`` and ``running()``'s exit return promptly, and within 10 s of the
close no queuepipe thread and no worker process is left (nor /dev/shm segment), and the rows
fetched before were correct and not duplicated.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List


from .. import files
from ..core import PROMPT_S
from ..judging import pick, rng_for
from .signal import _judge_rows

TIMEOUT_S = 120
VARIANTS = ("no_coord", "coord", "running")


def plan(seed: int, quick: bool = False) -> Dict[str, Any]:
    rng = rng_for("session_close", seed)
    return {
        "variant": pick(rng, VARIANTS),
        "source": pick(rng, ["generator", "slow", "hdf5"], p=[0.4, 0.2, 0.4]),
        "mode": pick(rng, ["thread", "process"]),
        "workers": pick(rng, [1, 2]),
        "batch_size": pick(rng, [4, 16, 64]),
        "capacity_batches": pick(rng, [1, 2, 8]),
        "steps": int(rng.integers(0, 41)),
        "format": pick(rng, ["contiguous", "gzip", "lzf", "string_vlen", "compound"]),
        "file_seed": int(rng.integers(2 ** 31)),
        "staged": bool(rng.random() < 0.3),  # drawn last: earlier seeds keep their other draws
    }


def prepare(p: Dict[str, Any], workdir: str, oracle) -> Dict[str, Any]:
    return files.prepare_plain(p, workdir, "close")


def observe(p: Dict[str, Any], prep: Dict[str, Any], ctx) -> None:
    import tensorflow as tf

    import queuepipe

    from ..payloads import CounterRows
    from ..tfrun import batch_of, close_session, drain, under_running
    tf1 = tf.compat.v1
    obs = ctx.obs
    cap = p["batch_size"] * p["capacity_batches"]
    with tf.Graph().as_default():
        if p["source"] == "hdf5":
            pipe = queuepipe.from_hdf5(prep["path"], files.DATASETS, batch_size=p["batch_size"], mode=p["mode"],
                                       workers=p["workers"], num_epochs=None, with_row_ids=True, capacity=cap)
        else:
            gen = CounterRows(delay=0.002 if p["source"] == "slow" else 0.0)
            pipe = queuepipe.from_generator(gen, tf.int64, (3,), batch_size=p["batch_size"], mode=p["mode"],
                                            workers=p["workers"], num_epochs=None, capacity=cap)
        batch = batch_of(pipe, p)
        sess = tf1.Session()
        if p["variant"] == "running":
            def body():
                drain(ctx, sess, batch, limit_batches=p["steps"])
                obs["close_t"] = close_session(ctx, sess)
            under_running(ctx, sess, body)
        else:
            coord = tf1.train.Coordinator() if p["variant"] == "coord" else None
            threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
            ctx.event("runners started", threads=[t.name for t in threads])
            drain(ctx, sess, batch, limit_batches=p["steps"])
            obs["close_t"] = close_session(ctx, sess)
            deadline = obs["close_t"] + PROMPT_S
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            obs["runner_threads_alive"] = [t.name for t in threads if t.is_alive()]
            # the coordinator is deliberately never stopped (``coord`` variant)
        obs["since_close_s"] = round(time.monotonic() - obs["close_t"], 3)
        ctx.wait_no_leaks(deadline=obs["close_t"] + PROMPT_S, label="10 s after sess.close()")
        obs["other_threads"] = [t.name for t in threading.enumerate()
                                if t is not threading.main_thread() and not t.name.startswith("reliability")]


def judge(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    out = _judge_rows(p, obs)
    if obs.get("close_s", 0) > PROMPT_S:
        out.append(f"sess.close() took {obs['close_s']:.1f} s (> {PROMPT_S:.0f} s)")
    if obs.get("running_exit_s", 0) > PROMPT_S:
        out.append(f"running() exit took {obs['running_exit_s']:.1f} s after sess.close() (> {PROMPT_S:.0f} s)")
    alive = [n for n in obs.get("runner_threads_alive", []) if not n.startswith("queuepipe")]
    if alive:
        out.append(f"queue-runner threads still alive 10 s after sess.close(): {alive[:4]}")
    if obs.get("end") == "error":
        from ..judging import err_text
        out.append(f"sess.run failed before the close: {err_text(obs['run_error'])}")
    return out
