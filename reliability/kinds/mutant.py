"""Mutants of real-format HDF5 files: a valid file (see :mod:`reliability.files`), damaged by a seeded
mutation (bit flips anywhere, truncation, zeroed 4 KiB pages, flips next to HDF5 structure
signatures), drained by ``queuepipe.from_hdf5`` and compared with h5py's reading of the same bytes.

Acceptable: every row delivered exactly once with h5py's values, or a clear error naming the file
(at build time or from ``sess.run``, within 10 s) after correct rows only.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np

from .. import files
from ..core import PROMPT_S, one_line
from ..judging import (after_failure_reasons, duplicated, err_text, ids_text, pick, rng_for, run_error_reasons,
                       same_value, slow_call_reasons)

TIMEOUT_S = 120
# A worker stuck inside HDF5 on a damaged file (h5py alone hangs on some) is reported as stalled
# after this long: "never a hang past the stall timeout".
STALL_TIMEOUT = 5.0


def plan(seed: int, quick: bool = False) -> Dict[str, Any]:
    rng = rng_for("mutant", seed)
    return {
        "format": pick(rng, files.FORMATS),
        "mutation": pick(rng, files.MUTATIONS, p=[0.3, 0.2, 0.2, 0.3]),
        "rows": int(rng.integers(200, 501)),
        "batch_size": pick(rng, [7, 16, 32, 64]),
        "batches_per_block": pick(rng, [1, 2, None]),
        "mode": pick(rng, ["thread", "process"]),
        "workers": pick(rng, [1, 2]),
        "file_seed": int(rng.integers(2 ** 31)),
        # also read the plain /id dataset (whose own checks may catch damage first), or /g/data alone
        "with_id_dataset": bool(rng.random() < 0.6),
    }


def datasets(p: Dict[str, Any]) -> Dict[str, str]:
    return files.DATASETS if p.get("with_id_dataset", True) else {"x": files.DATA}


def prepare(p: Dict[str, Any], workdir: str, oracle) -> Dict[str, Any]:
    path = os.path.join(workdir, f"mutant-{p['format']}.h5")
    rng = np.random.default_rng(p["file_seed"])
    info = files.write_file(path, p["format"], p["rows"], rng)
    damage = files.mutate(path, p["mutation"], rng)
    return {"path": path, "file": info, "damage": damage, "oracle": oracle(path, [files.DATA, files.IDS])}


def observe(p: Dict[str, Any], prep: Dict[str, Any], ctx) -> None:
    hdf5_drain(ctx, prep["path"], p)


def hdf5_drain(ctx, path: str, p: Dict[str, Any], between=None) -> None:
    """Build ``from_hdf5`` on ``path`` and drain it under ``queuepipe.running`` (shared with file_change);
    ``between(n_batches)`` is called after each batch (file_change damages the file there)."""
    import tensorflow as tf

    import queuepipe

    from ..core import describe_exc
    from ..tfrun import close_session, drain, under_running
    obs = ctx.obs
    with tf.Graph().as_default():
        t = ctx.event("build")
        try:
            with ctx.blocking("queuepipe.from_hdf5 (build)"):
                pipe = queuepipe.from_hdf5(path, datasets(p), batch_size=p["batch_size"], mode=p["mode"],
                                           workers=p["workers"], allow_smaller_final_batch=True,
                                           with_row_ids=True, batches_per_block=p["batches_per_block"],
                                           capacity=p.get("capacity"), stall_timeout=STALL_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a build-time refusal is an observation
            import time
            obs["build_error"] = describe_exc(exc)
            obs["build_s"] = round(time.monotonic() - t, 3)
            return
        sess = tf.compat.v1.Session()
        if between is None:
            under_running(ctx, sess, lambda: drain(ctx, sess, pipe.batch))
        else:
            def body():
                n = 0
                while obs.get("end") in (None, "limit"):
                    drain(ctx, sess, pipe.batch, limit_batches=n + 1)
                    n = len(obs["batches"])
                    if obs.get("end") == "limit":
                        between(n)
            under_running(ctx, sess, body)
        close_session(ctx, sess)
    ctx.wait_no_leaks()


# ---------------------------------------------------------------------------------------------
# judging
# ---------------------------------------------------------------------------------------------

def reference(p: Dict[str, Any], prep: Dict[str, Any]):
    """Per dataset, h5py's values by row (None: h5py cannot read that row), the row count, whether
    fixed-length strings are compared, and a note when h5py itself could not be run to the end."""
    orc = prep["oracle"]
    ref: Dict[str, Any] = {}
    note = ""
    if orc["status"] != "ok":
        # h5py itself crashed or hung on this file: no reference; judge against what was written
        note = f"h5py alone {orc['status']} on this file"
        exp = files.expected_rows(p["format"], p["rows"])
        ref[files.DATA] = list(exp)
        ref[files.IDS] = list(np.arange(p["rows"]))
        return ref, p["rows"], {}, note
    res = orc["result"]
    if res["open_error"]:
        return {files.DATA: [], files.IDS: []}, 0, {"open": res["open_error"]}, note
    errors: Dict[str, Any] = {}
    rows = None
    for ds in (files.DATA, files.IDS):
        rec = res["datasets"][ds]
        ref[ds] = rec["values"] or []
        if rec["error"]:
            errors[ds] = rec["error"]
        if rec["rows"] is not None:
            rows = rec["rows"] if rows is None else min(rows, rec["rows"])
        for i, e in rec["row_errors"].items():
            errors.setdefault(f"{ds}[{i}]", e)
    return ref, rows or 0, errors, note


def compare_rows(p: Dict[str, Any], cols: Dict[str, np.ndarray], ref: Dict[str, List[Any]],
                 h5_errors: Dict[str, Any]) -> List[str]:
    """Each delivered row (by row_id) against h5py's value of it."""
    fixed = p["format"] in ("string_fixed", "compound")
    wrong, unreadable = [], []
    ids = cols["row_id"]
    for j, rid in enumerate(ids):
        rid = int(rid)
        for key, ds in (("x", files.DATA), ("id", files.IDS)):
            if key == "id" and "id" not in cols:
                continue
            vals = ref[ds]
            if rid >= len(vals) or vals[rid] is None:
                unreadable.append(rid)
                continue
            rv = vals[rid]
            if key == "x" and p["format"] == "compound":
                ok = all(same_value(cols[f"x.{f}"][j], rv[f], fixed_string=True) for f in ("a", "b", "c"))
            else:
                ok = same_value(cols[key][j], rv, fixed_string=fixed and key == "x")
            if not ok:
                wrong.append(rid)
    out = []
    if wrong:
        out.append(f"wrong values: rows {ids_text(set(wrong))} differ from h5py's reading")
    if unreadable:
        first = next(iter(h5_errors.values()), "h5py cannot read them")
        out.append(f"rows h5py cannot read were delivered: {ids_text(set(unreadable))} (h5py: {one_line(first, 100)})")
    return out


def judge(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    path = prep["path"]
    if "build_error" in obs:
        out = []
        if path not in obs["build_error"]["message"]:
            out.append(f"build error does not name the file: {err_text(obs['build_error'])}")
        if obs["build_s"] > PROMPT_S:
            out.append(f"build error after {obs['build_s']:.1f} s (> {PROMPT_S:.0f} s)")
        return out
    ref, n_ref, h5_errors, note = reference(p, prep)
    from ..tfrun_free import columns
    cols = columns(obs.get("batches", []))
    out: List[str] = []
    ids = cols.get("row_id", np.zeros(0, np.int64))
    dups = duplicated(ids)
    if dups:
        out.append(f"duplicated rows {ids_text(dups)}")
    if len(ids):
        out += compare_rows(p, cols, ref, h5_errors)
    out += slow_call_reasons(obs)
    if obs.get("end") == "error":
        out += run_error_reasons(obs, path)
        out += after_failure_reasons(obs)
    elif obs.get("end") == "OutOfRange":
        missing = set(range(n_ref)) - set(int(i) for i in ids)
        if missing:
            out.append(f"missing rows {ids_text(missing)}: end of data without an error")
        if obs.get("running_exit"):
            rex = obs["running_exit"]
            if path not in rex["message"]:
                out.append(f"running() raised an error not naming the file after a clean end: {err_text(rex)}")
    else:
        out.append(f"drain ended by {obs.get('end')!r}")
    if note and out:
        out = [f"[{note}] {r}" for r in out]
    return out
