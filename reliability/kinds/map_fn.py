"""``from_hdf5(..., map_fn=...)`` where map_fn raises at a random call (per block or per sample).

Acceptable: the rows before are correct and not duplicated; ``sess.run`` raises within 10 s an
error whose message carries the original exception's type and message; ``running()`` re-raises
the original exception (same type, same message); no batch after the failure; no leak.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np

from .. import files
from ..core import PROMPT_S
from ..judging import (after_failure_reasons, duplicated, err_text, ids_text, pick, rng_for,
                       slow_call_reasons)

TIMEOUT_S = 120
NUMERIC = ("contiguous", "chunked", "gzip", "lzf", "shuffle_gzip", "fletcher32", "bigendian", "bigendian_gzip")


def plan(seed: int, quick: bool = False) -> Dict[str, Any]:
    rng = rng_for("map_fn", seed)
    rows = int(rng.integers(200, 501))
    bs = pick(rng, [4, 16, 32])
    bpb = pick(rng, [1, 2])
    per_sample = bool(rng.integers(2))
    workers = pick(rng, [1, 2])
    calls = rows if per_sample else -(-rows // (bs * bpb))
    calls_per_worker = max(1, calls // workers)
    return {
        "format": pick(rng, NUMERIC),
        "rows": rows,
        "batch_size": bs,
        "batches_per_block": bpb,
        "map_per_sample": per_sample,
        "mode": pick(rng, ["thread", "process"]),
        "workers": workers,
        "fail_at": int(rng.integers(1, max(2, calls_per_worker // 2 + 1))),
        "exception": pick(rng, ["MapFault", "ValueError", "KeyError", "RuntimeError", "ZeroDivisionError",
                                "TypeError"]),
        "message": f"map_fn fault #{seed}: unexpected value {int(rng.integers(10 ** 6))}",
        "file_seed": int(rng.integers(2 ** 31)),
        "staged": bool(rng.random() < 0.3),  # drawn last: earlier seeds keep their other draws
    }


def prepare(p: Dict[str, Any], workdir: str, oracle) -> Dict[str, Any]:
    path = os.path.join(workdir, f"mapfn-{p['format']}.h5")
    files.write_file(path, p["format"], p["rows"], np.random.default_rng(p["file_seed"]))
    return {"path": path}


def observe(p: Dict[str, Any], prep: Dict[str, Any], ctx) -> None:
    import tensorflow as tf

    import queuepipe

    from ..payloads import FailingMap
    from ..tfrun import batch_of, close_session, drain, under_running
    width = files.expected_rows(p["format"], 1).shape[1:]
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(prep["path"], files.DATASETS, batch_size=p["batch_size"], mode=p["mode"],
                                   workers=p["workers"], allow_smaller_final_batch=True, with_row_ids=True,
                                   batches_per_block=p["batches_per_block"],
                                   map_fn=FailingMap(p["fail_at"], p["exception"], p["message"]),
                                   map_per_sample=p["map_per_sample"],
                                   output_types={"y": tf.float64, "row_id": tf.int64},
                                   output_shapes={"y": width, "row_id": ()})
        sess = tf.compat.v1.Session()
        batch = batch_of(pipe, p)
        under_running(ctx, sess, lambda: drain(ctx, sess, batch))
        close_session(ctx, sess)
    ctx.wait_no_leaks()


def judge(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    from ..payloads import transform
    from ..tfrun_free import columns
    out: List[str] = []
    cols = columns(obs.get("batches", []))
    if cols:
        ids = cols["row_id"]
        dups = duplicated(ids)
        if dups:
            out.append(f"duplicated rows {ids_text(dups)}")
        exp = transform(files.expected_rows(p["format"], p["rows"]))
        bad = [int(r) for j, r in enumerate(ids) if r >= p["rows"] or not np.array_equal(cols["y"][j], exp[r])]
        if bad:
            out.append(f"wrong values: rows {ids_text(bad)}")
    out += slow_call_reasons(obs)
    exc, msg = p["exception"], p["message"]
    if obs.get("end") != "error":
        out.append(f"map_fn raised {exc} at call {p['fail_at']} but the drain ended by {obs.get('end')!r}")
        return out
    err = obs["run_error"]
    if exc not in err["message"] or msg not in err["message"]:
        out.append(f"sess.run error lacks the original type/message ({exc}: {msg}): {err_text(err)}")
    if obs["run_error_blocked_s"] > PROMPT_S:
        out.append(f"error took {obs['run_error_blocked_s']:.1f} s (> {PROMPT_S:.0f} s)")
    out += after_failure_reasons(obs)
    rex = obs.get("running_exit")
    if not rex:
        out.append(f"running() did not re-raise the original {exc}")
    elif rex["type"] != exc or msg not in rex["message"]:
        out.append(f"running() raised {err_text(rex)} instead of the original {exc}: {msg}")
    elif exc == "MapFault" and rex["module"] != "reliability.payloads":
        out.append(f"running() raised a MapFault from {rex['module']} instead of the user's class")
    return out
