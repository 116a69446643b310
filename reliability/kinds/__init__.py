"""The trial kinds.  Each module defines, for a trial ``(kind, seed)``:

* ``plan(seed, quick) -> dict`` -- every choice of the trial, drawn from :func:`judging.rng_for`
  (pure: the same seed gives the same trial); ``quick`` only scales sizes (churn, soak);
* ``prepare(plan, workdir, oracle) -> dict`` -- supervisor side, before the trial process starts:
  write (and damage) files, read them with h5py in a separate process (``oracle``);
* ``observe(plan, prep, ctx)`` -- in the trial process: real TF session, real queuepipe; fills
  ``ctx.obs`` with what happened (no judging there);
* ``judge(plan, prep, obs, proc) -> [reason, ...]`` -- supervisor side: empty when acceptable.

``TIMEOUT_S`` is the hard limit of one trial process (``QUICK_TIMEOUT_S`` with ``--quick``);
``signals(plan)`` (signal trials only) names the signals that may legitimately end it, and
``JUDGE_ALWAYS`` lets ``judge`` see trials that left no result (a process killed by SIGTERM).
"""
from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Dict

ORDER = ("mutant", "file_change", "signal", "session_close", "map_fn", "churn", "soak")
# trials per kind in the full campaign (python -m reliability): 650 in all
FULL_COUNTS = {"mutant": 380, "file_change": 80, "signal": 80, "session_close": 50, "map_fn": 52,
               "churn": 5, "soak": 3}


def get(kind: str) -> ModuleType:
    if kind not in ORDER:
        raise KeyError(f"unknown kind {kind!r} (kinds: {', '.join(ORDER)})")
    return import_module(f"{__name__}.{kind}")


def all_kinds() -> Dict[str, ModuleType]:
    return {k: get(k) for k in ORDER}
