#!/usr/bin/env bash
# Create the SEPARATE virtualenv in which the peer libraries (tftables, tensorpack) run.
#
#   bash benchmarks/peers/setup_peers.sh [VENV_DIR]
#
# VENV_DIR defaults to $QUEUEPIPE_PEERS_VENV, else peers-venv beside the repository (a sibling of
# its folder) -- where python -m benchmarks.run looks for it by default.
#
# The peers are old (tftables 1.1.2, 2018; tensorpack 0.11, 2021) and are kept out of the
# project's own environment.  The benchmark (python -m benchmarks.run) runs each peer row as a
# subprocess with this venv's python, and reports "not run: <reason>" when it is absent.
# What each peer needed to run on current TensorFlow / NumPy 2 is recorded in
# benchmarks/peers/NOTES.md and applied at run time by benchmarks/peers/compat.py (no
# installed file is patched).
set -euo pipefail
REPO_PARENT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
VENV="${1:-${QUEUEPIPE_PEERS_VENV:-$REPO_PARENT/peers-venv}}"
PY="${PYTHON:-python3}"

if [ -e "$VENV" ] && [ "${REBUILD:-0}" = 1 ]; then rm -rf "$VENV"; fi
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# The same TensorFlow / NumPy generation as the main environment.
"${PIP[@]}" tensorflow-cpu h5py numpy
# tensorpack: its runtime deps are pure-Python or have wheels (msgpack, pyzmq, psutil, tabulate...).
"${PIP[@]}" tensorpack
# tftables: it declares a dependency on the full "tensorflow" wheel, which would install a second
# TensorFlow over tensorflow-cpu; install it without dependencies and bring its real ones
# (multitables -> PyTables "tables", msgpack, wrapt) explicitly.
"${PIP[@]}" multitables
"${PIP[@]}" --no-deps tftables
# Check that both import with the run-time shims of benchmarks/peers/compat.py (what they needed).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHONPATH="$REPO" TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" - <<'PY'
import importlib
from benchmarks.peers import compat
for name, load in (("tensorpack", compat.import_tensorpack), ("tftables", compat.import_tftables)):
    try:
        load()
        print(f"{name:12s} ok")
    except Exception as exc:  # recorded, not fatal: the benchmark reports it per row
        print(f"{name:12s} import failed: {type(exc).__name__}: {exc}")
for name in ("tensorflow", "numpy", "h5py", "tables", "tensorpack", "wrapt"):
    print(f"{name:12s} {getattr(importlib.import_module(name), '__version__', '?')}")
print("shims:", *compat.APPLIED, sep="\n  ")
PY
echo "peers venv ready: $VENV"
