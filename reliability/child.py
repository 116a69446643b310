"""The trial process: ``python -m reliability.child TRIAL.pkl``.

Loads the trial (kind, seed, plan, what the supervisor prepared), runs the kind's ``observe``
with a :class:`~reliability.core.TrialContext`, writes the observation, announces it on stdout
and exits -- under a faulthandler timer, so a hang at interpreter exit is reported with stacks.
"""
from __future__ import annotations

import faulthandler
import os
import pickle
import sys
import traceback

from .core import EXIT_HANG_S, TrialContext, child_setup, describe_exc, emit


def main(trial_path: str) -> int:
    child_setup()
    with open(trial_path, "rb") as f:
        trial = pickle.load(f)
    from . import kinds
    mod = kinds.get(trial["kind"])
    ctx = TrialContext(trial["result_path"], trial["workdir"])
    emit("START", f"{trial['kind']} {trial['seed']}")
    try:
        mod.observe(trial["plan"], trial["prep"], ctx)
    except BaseException as exc:  # noqa: BLE001 - anything escaping observe is reported, not hidden
        ctx.obs["uncaught"] = describe_exc(exc)
        ctx.obs["uncaught"]["traceback"] = traceback.format_exc()[-4000:]
    ctx.obs["pid"] = os.getpid()
    ctx.write()
    emit("RESULT")
    # from here on only interpreter exit is left: it must not hang
    faulthandler.dump_traceback_later(EXIT_HANG_S, exit=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
