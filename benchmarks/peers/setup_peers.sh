#!/usr/bin/env bash
# Create the SEPARATE virtualenv in which the peer libraries (tftables, tensorpack) run.
#
#   bash benchmarks/peers/setup_peers.sh [VENV_DIR]      (default: $QUEUEPIPE_PEERS_VENV or /work/peers-venv)
#
# The peers are old (tftables 1.1.2, 2018; tensorpack 0.11, 2021) and are kept out of the
# project's own environment.  The benchmark (python -m benchmarks.run) runs each peer row as a
# subprocess with this venv's python, and reports "not run: <reason>" when it is absent.
# What each peer needed to run on current TensorFlow / NumPy 2 is recorded in
# benchmarks/peers/NOTES.md and applied at run time by benchmarks/peers/compat.py (no
# installed file is patched).
set -euo pipefail
VENV="${1:-${QUEUEPIPE_PEERS_VENV:-/work/peers-venv}}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# The same TensorFlow / NumPy generation as the main environment.
"${PIP[@]}" tensorflow-cpu h5py numpy
# tensorpack: its runtime deps are pure-Python or have wheels (msgpack, pyzmq, psutil, tabulate...).
"${PIP[@]}" tensorpack
# tftables: its dependency multitables pulls in PyTables ("tables"), which has wheels for cp311.
"${PIP[@]}" tftables
"$VENV/bin/python" - <<'PY'
import importlib
for name in ("tensorflow", "h5py", "numpy", "tensorpack", "tftables"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:12s} {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # recorded, not fatal: the benchmark reports it per row
        print(f"{name:12s} import failed: {type(exc).__name__}: {exc}")
PY
echo "peers venv ready: $VENV"
