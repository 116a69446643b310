"""A probe's measurements, each in a fresh interpreter (``python -m <probe> --child ARGS...``),
in interleaved rounds.

A fresh interpreter per measurement keeps one way's threads, memory and TensorFlow state out
of the next one's numbers; interleaving spreads the machine's drift over every way alike.  The
child prints its result as one JSON line (the last line of its output that starts with ``{``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

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


def interleaved_rounds(ways: Sequence[str], rounds: int,
                       measure: Callable[[str], Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """Every way's results, ``measure(way)`` once per round, each round in the opposite order
    to the one before."""
    results: Dict[str, List[Dict[str, Any]]] = {w: [] for w in ways}
    for r in range(rounds):
        for way in (ways if r % 2 == 0 else list(ways)[::-1]):
            results[way].append(measure(way))
    return results
