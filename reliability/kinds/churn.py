"""Churn: build, run and tear down many pipelines (200; 10 with ``--quick``) in one process, each in
a fresh graph and session, with a seeded mix of sources, modes and teardowns (running() to the end
or early, ``coord.request_stop`` + join, ``sess.close()`` without a coordinator).

Acceptable: every drained pipeline delivers its rows exactly once; after each teardown no
queuepipe thread or worker process is left within 10 s; RSS does not keep growing (at most
:data:`RSS_LIMIT_MIB_PER_100` MiB per 100 pipelines, see :func:`rss_growth`; judged from 100 pipelines
on, so not with ``--quick``).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List

import numpy as np

from .. import files
from ..core import PROMPT_S, rss_bytes
from ..judging import pick, rng_for

TIMEOUT_S = 900
QUICK_TIMEOUT_S = 180
RSS_LIMIT_MIB_PER_100 = 40.0
RSS_MIN_PIPELINES = 100
TEARDOWNS = ("running_end", "running_early", "coord_join", "close_no_coord")


def plan(seed: int, quick: bool = False) -> Dict[str, Any]:
    rng = rng_for("churn", seed)
    return {"pipelines": 10 if quick else 200, "process_share": 0.2, "file_seed": int(rng.integers(2 ** 31)),
            "seed": seed}


def prepare(p: Dict[str, Any], workdir: str, oracle) -> Dict[str, Any]:
    rng = np.random.default_rng(p["file_seed"])
    paths = {}
    for fmt in ("contiguous", "gzip", "string_vlen"):
        paths[fmt] = os.path.join(workdir, f"churn-{fmt}.h5")
        files.write_file(paths[fmt], fmt, 120, rng)
    return {"paths": paths}


def observe(p: Dict[str, Any], prep: Dict[str, Any], ctx) -> None:
    import tensorflow as tf

    import queuepipe

    from ..payloads import CounterRows
    from ..tfrun import close_session, drain, under_running
    tf1 = tf.compat.v1
    rng = rng_for("churn/pipelines", p["seed"])
    obs = ctx.obs
    obs["rss"] = []
    obs["pipelines"] = []
    for i in range(p["pipelines"]):
        cfg = {"source": pick(rng, ["generator", "contiguous", "gzip", "string_vlen"]),
               "mode": "process" if rng.random() < p["process_share"] else "thread",
               "workers": pick(rng, [1, 2]), "batch_size": pick(rng, [3, 8, 32]),
               "teardown": pick(rng, TEARDOWNS)}
        rec: Dict[str, Any] = {"i": i, **cfg}
        obs["batches"], obs["end"] = [], None
        obs.pop("run_error", None)
        obs.pop("running_exit", None)
        early = cfg["teardown"] != "running_end"
        with tf.Graph().as_default():
            if cfg["source"] == "generator":
                n = 96
                batch = queuepipe.from_generator(CounterRows(limit=n // cfg["workers"]), tf.int64, (3,),
                                                 batch_size=cfg["batch_size"], mode=cfg["mode"],
                                                 workers=cfg["workers"], allow_smaller_final_batch=True).batch
            else:
                n = 120
                batch = queuepipe.from_hdf5(prep["paths"][cfg["source"]], files.DATASETS,
                                            batch_size=cfg["batch_size"], mode=cfg["mode"], workers=cfg["workers"],
                                            allow_smaller_final_batch=True, with_row_ids=True).batch
            sess = tf1.Session()
            limit = 2 if early else 10 ** 6
            if cfg["teardown"].startswith("running"):
                under_running(ctx, sess, lambda: drain(ctx, sess, batch, limit_batches=limit))
                close_session(ctx, sess)
            else:
                coord = tf1.train.Coordinator() if cfg["teardown"] == "coord_join" else None
                threads = tf1.train.start_queue_runners(sess=sess, coord=coord)
                drain(ctx, sess, batch, limit_batches=limit)
                if coord is not None:
                    coord.request_stop()
                    try:
                        with ctx.blocking("coord.join"):
                            coord.join(threads, stop_grace_period_secs=PROMPT_S)
                    except Exception as exc:  # noqa: BLE001
                        rec["join_error"] = f"{type(exc).__name__}: {exc}"[:200]
                close_session(ctx, sess)
        t = time.monotonic()
        left = ctx.wait_no_leaks(label=f"10 s after pipeline #{i} was torn down")
        obs["leak_checks"].pop()
        rec["teardown_wait_s"] = round(time.monotonic() - t, 3)
        if left["threads"] or left["children"]:
            rec["left"] = {"threads": left["threads"], "children": left["children"]}
        rec["end"] = obs["end"]
        if "run_error" in obs:
            rec["error"] = f"{obs['run_error']['type']}: {obs['run_error']['message'][:200]}"
        if "running_exit" in obs:
            rec["running_exit"] = f"{obs['running_exit']['type']}: {obs['running_exit']['message'][:200]}"
        rec["rows_ok"] = _rows_ok(cfg, obs["batches"], n, complete=not early)
        obs["pipelines"].append(rec)
        obs["rss"].append(rss_bytes())
    obs["batches"] = []
    ctx.wait_no_leaks(label="10 s after the last pipeline")


def _rows_ok(cfg: Dict[str, Any], batches: List[Any], n: int, complete: bool) -> str:
    from ..payloads import check_value
    from ..tfrun_free import columns, stack_rows
    if cfg["source"] == "generator":
        rows = stack_rows(batches)
        keys = rows[:, 0] * 10 ** 6 + rows[:, 1]
        if len(rows) and not np.array_equal(rows[:, 2], check_value(rows[:, 0], rows[:, 1])):
            return "wrong values"
        want = n // cfg["workers"] * cfg["workers"]
    else:
        cols = columns(batches)
        keys = cols["row_id"] if cols else np.zeros(0, np.int64)
        if cols and not np.array_equal(cols["row_id"], cols["id"]):
            return "wrong values"
        want = n
    if len(np.unique(keys)) != len(keys):
        return "duplicated rows"
    if complete and len(keys) != want:
        return f"{len(keys)} rows of {want}"
    return "ok"


def judge(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    out = []
    recs = obs.get("pipelines", [])
    if len(recs) < p["pipelines"]:
        out.append(f"only {len(recs)} of {p['pipelines']} pipelines ran")
    for key, what in (("error", "sess.run failed"), ("running_exit", "running() raised"),
                      ("join_error", "coord.join raised")):
        bad = [r for r in recs if key in r]
        if bad:
            out.append(f"{what} in {len(bad)} pipelines, first #{bad[0]['i']} ({bad[0]['source']}, "
                       f"{bad[0]['mode']}): {bad[0][key][:140]}")
    bad = [r for r in recs if r["rows_ok"] != "ok"]
    if bad:
        out.append(f"rows not exactly once in {len(bad)} pipelines, first #{bad[0]['i']}: {bad[0]['rows_ok']}")
    bad = [r for r in recs if "left" in r]
    if bad:
        out.append(f"threads/processes left 10 s after teardown in {len(bad)} pipelines, first #{bad[0]['i']} "
                   f"({bad[0]['teardown']}, {bad[0]['mode']}): {bad[0]['left']}")
    slow = [r for r in recs if r["teardown_wait_s"] > PROMPT_S]
    if slow:
        out.append(f"teardown took > {PROMPT_S:.0f} s in {len(slow)} pipelines")
    growth = rss_growth(obs)
    if growth is not None and growth > RSS_LIMIT_MIB_PER_100:
        out.append(f"RSS grows {growth:.1f} MiB per 100 pipelines after warm-up (limit {RSS_LIMIT_MIB_PER_100})")
    return out


def rss_growth(obs: Dict[str, Any]):
    """RSS growth in MiB per 100 pipelines: median RSS of the last quarter minus that of the second
    quarter (the first warms TF's caches), over the distance between them.  None below
    :data:`RSS_MIN_PIPELINES` pipelines (too few to tell a trend from the allocator's noise)."""
    rss = obs.get("rss", [])
    n = len(rss)
    if n < RSS_MIN_PIPELINES:
        return None
    q = n // 4
    second, last = np.median(rss[q:2 * q]), np.median(rss[n - q:])
    return (last - second) / 2 ** 20 / (n / 2) * 100


def summary(obs: Dict[str, Any]) -> str:
    rss = obs.get("rss", [])
    if not rss:
        return ""
    g = rss_growth(obs)
    marks = sorted({0, len(rss) // 4, len(rss) // 2, 3 * len(rss) // 4, len(rss) - 1})
    return ("RSS after pipeline " + ", ".join(f"#{i + 1}: {rss[i] / 2**20:.0f}" for i in marks) + " MiB"
            + (f"; trend {g:+.1f} MiB/100 pipelines" if g is not None else ""))
