"""One measurement of a probe in a fresh interpreter: ``python -m <probe> --child ARGS...``.

A fresh interpreter per measurement keeps one way's threads, memory and TensorFlow state out
of the next one's numbers.  The child prints its result as one JSON line (the last line of
its output that starts with ``{``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

REPO = Path(__file__).resolve().parents[2]


def run_child(module: str, *args: str, timeout: float = 300, first_on_path: str = "",
              tf_log_level: str = "3") -> Dict[str, Any]:
    """The JSON result of ``python -m module --child *args``, run from the repository with it
    (after ``first_on_path``, if given) on ``PYTHONPATH``; RuntimeError with the child's stderr
    if it fails or prints no result."""
    path = [p for p in (first_on_path, str(REPO), os.environ.get("PYTHONPATH", "")) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), TF_CPP_MIN_LOG_LEVEL=tf_log_level)
    out = subprocess.run([sys.executable, "-m", module, "--child", *args], capture_output=True, text=True,
                         env=env, cwd=str(REPO), timeout=timeout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {' '.join(args)} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])
