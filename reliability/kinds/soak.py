"""Soak: 10^5 batches (10^4 with ``--quick``) from a generator pipeline (sharded row ids in blocks).

Acceptable: every id delivered exactly once with its value, end of data then OutOfRangeError, no
leak, and RSS stable (growth from 10 % of the batches to the end at most :data:`RSS_LIMIT_MIB`).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from ..core import HANG_S, rss_bytes
from ..judging import ids_text, pick, rng_for

TIMEOUT_S = 900
QUICK_TIMEOUT_S = 180
RSS_LIMIT_MIB = 64.0


def plan(seed: int, quick: bool = False) -> Dict[str, Any]:
    rng = rng_for("soak", seed)
    bs = pick(rng, [1, 2, 4])
    return {"batches": 10 ** 4 if quick else 10 ** 5, "batch_size": bs, "mode": pick(rng, ["thread", "process"]),
            "workers": pick(rng, [1, 2]), "block": pick(rng, [64, 256, 1000]),
            "shuffle": bool(rng.integers(2)), "seed": seed}


def prepare(p: Dict[str, Any], workdir: str, oracle) -> Dict[str, Any]:
    return {}


def observe(p: Dict[str, Any], prep: Dict[str, Any], ctx) -> None:
    import tensorflow as tf

    import queuepipe

    from ..core import describe_exc
    from ..payloads import ShardedIds
    from ..tfrun import close_session, under_running
    total = p["batches"] * p["batch_size"]
    obs = ctx.obs
    seen = np.zeros(total, np.int32)
    bad_values = [0]
    obs["rss"] = []
    with tf.Graph().as_default():
        batch = queuepipe.from_generator(ShardedIds(total, p["block"]), tf.int64, (2,), yields="blocks",
                                         batch_size=p["batch_size"], mode=p["mode"], workers=p["workers"],
                                         shuffle=p["shuffle"], seed=p["seed"]).batch
        sess = tf.compat.v1.Session()
        step = sess.make_callable(batch)

        def body():
            n = 0
            t0 = time.monotonic()
            while True:
                try:
                    with ctx.blocking("soak step", HANG_S):
                        b = step()
                except tf.errors.OutOfRangeError:
                    obs["end"] = "OutOfRange"
                    break
                except Exception as exc:  # noqa: BLE001
                    obs["end"] = "error"
                    obs["run_error"] = describe_exc(exc)
                    break
                ids = b[:, 0]
                ok = (ids >= 0) & (ids < total)
                np.add.at(seen, ids[ok], 1)
                bad_values[0] += int((~ok).sum()) + int((b[ok, 1] != ids[ok] * 3 + 1).sum())
                n += 1
                if n % (p["batches"] // 10) == 0:
                    obs["rss"].append((n, rss_bytes()))
            obs["n_batches"] = n
            obs["seconds"] = round(time.monotonic() - t0, 2)

        under_running(ctx, sess, body)
        close_session(ctx, sess)
    obs["bad_values"] = bad_values[0]
    obs["missing"] = np.flatnonzero(seen == 0)[:1000].tolist()
    obs["n_missing"] = int((seen == 0).sum())
    obs["duplicated"] = np.flatnonzero(seen > 1)[:1000].tolist()
    obs["n_duplicated"] = int((seen > 1).sum())
    ctx.wait_no_leaks()


def judge(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    out = []
    if obs.get("end") != "OutOfRange":
        out.append(f"ended by {obs.get('end')!r}: {obs.get('run_error', {}).get('message', '')[:160]}")
    if obs.get("running_exit"):
        out.append(f"running() raised {obs['running_exit']['type']}: {obs['running_exit']['message'][:120]}")
    if obs.get("n_missing"):
        out.append(f"missing ids {ids_text(obs['missing'])[:-1]} of {obs['n_missing']})")
    if obs.get("n_duplicated"):
        out.append(f"duplicated ids {ids_text(obs['duplicated'])[:-1]} of {obs['n_duplicated']})")
    if obs.get("bad_values"):
        out.append(f"{obs['bad_values']} rows with wrong values")
    g = rss_growth(obs)
    if g is not None and g > RSS_LIMIT_MIB:
        out.append(f"RSS grew {g:.0f} MiB from 10 % of the batches to the end (limit {RSS_LIMIT_MIB:.0f})")
    return out


def rss_growth(obs: Dict[str, Any]):
    rss = obs.get("rss", [])
    if len(rss) < 2:
        return None
    return (rss[-1][1] - rss[0][1]) / 2 ** 20


def summary(obs: Dict[str, Any]) -> str:
    g = rss_growth(obs)
    return (f"{obs.get('n_batches', 0)} batches in {obs.get('seconds', 0)} s"
            + (f", RSS +{g:.1f} MiB after 10 %" if g is not None else ""))
