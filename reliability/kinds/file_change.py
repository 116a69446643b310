"""Files truncated or deleted while a pipeline reads them (``os.truncate`` / ``os.unlink`` between
two ``sess.run`` calls).  Small blocks and a small queue keep reads going on after the change.

Acceptable: every delivered row has the values written (rows exactly once), then either the end of
data with every row (a deleted file stays readable through open handles on Linux; a truncation
may only cut what was already read), or an error naming the file within 10 s of the change.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List

import numpy as np

from .. import files
from ..core import PROMPT_S
from ..judging import (after_failure_reasons, duplicated, ids_text, pick, rng_for, run_error_reasons, same_value,
                       slow_call_reasons)
from .mutant import hdf5_drain

TIMEOUT_S = 120
CHANGES = ("truncate", "unlink", "truncate_then_unlink")


def plan(seed: int, quick: bool = False) -> Dict[str, Any]:
    rng = rng_for("file_change", seed)
    rows = int(rng.integers(300, 801))
    bs = pick(rng, [4, 8, 16])
    n_batches = -(-rows // bs)
    return {
        "format": pick(rng, files.FORMATS),
        "change": pick(rng, CHANGES, p=[0.6, 0.25, 0.15]),
        "keep_fraction": float(rng.uniform(0.0, 1.0)),
        "after_batches": int(rng.integers(1, max(2, n_batches // 2))),
        "rows": rows,
        "batch_size": bs,
        "batches_per_block": 1,
        "capacity": bs * pick(rng, [1, 2, 4]),
        "mode": pick(rng, ["thread", "process"]),
        "workers": pick(rng, [1, 2]),
        "file_seed": int(rng.integers(2 ** 31)),
        # /g/data alone (its own reader must notice the truncation) or with the plain /id dataset
        "with_id_dataset": bool(rng.random() < 0.5),
    }


def prepare(p: Dict[str, Any], workdir: str, oracle) -> Dict[str, Any]:
    path = os.path.join(workdir, f"change-{p['format']}.h5")
    info = files.write_file(path, p["format"], p["rows"], np.random.default_rng(p["file_seed"]))
    return {"path": path, "file": info}


def observe(p: Dict[str, Any], prep: Dict[str, Any], ctx) -> None:
    path = prep["path"]

    def between(n_batches: int) -> None:
        if n_batches != p["after_batches"]:
            return
        size = os.path.getsize(path)
        keep = int(size * p["keep_fraction"])
        if p["change"] in ("truncate", "truncate_then_unlink"):
            os.truncate(path, keep)
        if p["change"] in ("unlink", "truncate_then_unlink"):
            os.unlink(path)
        ctx.obs["changed_t"] = time.monotonic()
        ctx.obs["change"] = {"what": p["change"], "size": size, "keep": keep, "after_batches": n_batches}

    hdf5_drain(ctx, path, p, between=between)


def judge(p: Dict[str, Any], prep: Dict[str, Any], obs: Dict[str, Any], proc: Dict[str, Any]) -> List[str]:
    from ..tfrun_free import columns
    path = prep["path"]
    if "build_error" in obs:
        return [f"a valid file was refused at build time: {obs['build_error']['type']}: "
                f"{obs['build_error']['message'][:160]}"]
    cols = columns(obs.get("batches", []))
    ids = cols.get("row_id", np.zeros(0, np.int64))
    out: List[str] = []
    dups = duplicated(ids)
    if dups:
        out.append(f"duplicated rows {ids_text(dups)}")
    exp = files.expected_rows(p["format"], p["rows"])
    fixed = p["format"] in ("string_fixed", "compound")
    wrong = []
    for j, rid in enumerate(ids):
        rid = int(rid)
        if rid >= p["rows"]:
            wrong.append(rid)
            continue
        if p["format"] == "compound":
            ok = all(same_value(cols[f"x.{f}"][j], exp[rid][f], fixed_string=True) for f in ("a", "b", "c"))
        else:
            ok = same_value(cols["x"][j], exp[rid], fixed_string=fixed)
        if not ok or ("id" in cols and int(cols["id"][j]) != rid):
            wrong.append(rid)
    if wrong:
        out.append(f"wrong values after the file changed: rows {ids_text(set(wrong))} differ from what was "
                   f"written (silent zeros/garbage)")
    out += slow_call_reasons(obs)
    if "changed_t" not in obs and obs.get("end") != "error":
        out.append("the file was never changed (drain ended first)")
    if obs.get("end") == "error":
        out += run_error_reasons(obs, path)
        if "changed_t" in obs and obs["run_error_t"] - obs["changed_t"] > PROMPT_S:
            out.append(f"error came {obs['run_error_t'] - obs['changed_t']:.1f} s after the change (> {PROMPT_S:.0f} s)")
        out += after_failure_reasons(obs)
    elif obs.get("end") == "OutOfRange":
        missing = set(range(p["rows"])) - set(int(i) for i in ids)
        if missing:
            out.append(f"missing rows {ids_text(missing)}: end of data without an error after the {p['change']}")
    else:
        out.append(f"drain ended by {obs.get('end')!r}")
    return out
