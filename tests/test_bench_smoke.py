"""Smoke tests of the benchmark harness and of ``queuepipe bench`` (numbers are not checked).

``python -m benchmarks.run --quick`` on tiny cached-in-tmp data must produce the JSON, the
markdown table and the plot with every expected row; queuepipe rows may say "not
available" (a pipeline that fails before its first batch), the reference rows must have run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quick_harness_produces_every_row(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, QUEUEPIPE_BENCH_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--no-peers", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "summary (targets: PASS/MISS)" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    for key in ("machine", "versions", "rows", "summary", "command", "date"):
        assert key in results
    assert results["machine"]["cores"] >= 1 and results["versions"].get("tensorflow")
    labels = {(r["workload"], r["label"]): r for r in results["rows"]}
    for wid, api in (("W1", "from_hdf5"), ("W2", "from_generator"), ("W3", "from_hdf5"),
                     ("W4", "from_generator"), ("W5", "from_hdf5")):
        for way in ("limit-read", "limit-read (2 proc)", "limit-consumer", "feed_dict", "tf.data",
                    "tf.data (batches)"):
            row = labels[(wid, way)]
            assert row["status"] == "ok" and row["samples_per_s"] > 0, row
        assert any(label.startswith("tf1-native") and r["status"] == "ok"
                   for (w, label), r in labels.items() if w == wid)
        for mode in ("thread", "process"):
            for n in (1, 2):
                row = labels[(wid, f"queuepipe {api} {mode} x{n}")]
                assert row["status"] in ("ok", "not available"), row
                if row["status"] == "ok":
                    assert row["rss_mb"] > 0
                    if row.get("check"):  # every selected row exactly once per epoch
                        assert not row["check"].startswith("FAIL"), row
        for peer in ("tftables", "tensorpack"):
            assert labels[(wid, peer)]["status"] == "not run"
        assert wid in results["summary"]
    assert labels[("W1", "limit-consumer")].get("bracket_samples_per_s")  # measured at both ends
    assert labels[("W4", "feed_dict")].get("overlap") is not None

    table = (out / "results.md").read_text()
    for wid in ("W1", "W2", "W3", "W4", "W5"):
        assert f"### {wid}:" in table
    assert "x limit-consumer" in table and "samples/s" in table
    assert (out / "scaling.png").stat().st_size > 1000


def _small_file(path: Path, n: int = 3000) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32),
                         chunks=(100, 16))
        f.create_dataset("y", data=np.arange(n, dtype=np.int64), chunks=(500,))
    return path


def test_bench_cli_on_a_small_file(tmp_path, capsys):
    from queuepipe.tools import bench
    path = _small_file(tmp_path / "small.h5")
    report = tmp_path / "bench.json"
    code = bench.main([str(path), "--datasets", "X,y", "--rows", "::3", "--workers", "2",
                       "--batch-size", "50", "--seconds", "1", "--no-progress", "--json", str(report)])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    assert "limit-read" in out and "limit-consumer" in out
    assert "read path: X: preadv of plain rows; y: preadv of plain rows" in out
    if code == 0:  # from_hdf5 available
        assert "verdict:" in out and ("input-bound" in out or "compute-bound" in out)
        data = json.loads(report.read_text())
        assert data["rows"] == 1000 and [t["workers"] for t in data["trials"]] == [1, 2]
        assert all(t["samples_per_s"] > 0 for t in data["trials"])


def test_parse_rows_and_slab_plan(tmp_path):
    from queuepipe.tools.bench import parse_rows
    from queuepipe.tools.limits import slab_plan
    assert parse_rows(None, 10) is None
    assert parse_rows("2:5", 10).tolist() == [2, 3, 4]
    assert parse_rows("::4", 10).tolist() == [0, 4, 8]
    idx = tmp_path / "rows.npy"
    np.save(idx, np.array([7, 1, -1]))
    assert parse_rows(str(idx), 10).tolist() == [7, 1, 9]
    mask = tmp_path / "mask.npy"
    np.save(mask, np.arange(10) % 5 == 0)
    assert parse_rows(str(mask), 10).tolist() == [0, 5]
    with pytest.raises(ValueError):
        parse_rows("5", 10)
    with pytest.raises(ValueError):
        parse_rows("8:2", 10)
    # covering slabs: only chunks holding selected rows, merged while consecutive
    rows = np.array([3, 5, 250, 260, 900])
    plan = slab_plan(rows, 1000, 100, 200)
    assert plan == [(0, 100, 0, 2), (200, 300, 2, 4), (900, 1000, 4, 5)]
    assert slab_plan(None, 450, 100, 200) == [(0, 200, 0, 200), (200, 400, 200, 400), (400, 450, 400, 450)]


def test_limit_read_in_fresh_processes_reads_the_same_rows(tmp_path):
    """procs=2 reads each slab once across two fresh interpreters (no fork): the same rows
    as one process; the readers are gone when it returns (the autouse fixture checks)."""
    from queuepipe.tools.limits import limit_read
    path = str(_small_file(tmp_path / "small.h5"))
    rows = np.arange(0, 3000, 3)
    # min_seconds=0: exactly one pass, so the counts are the selection's size
    one, one_s = limit_read(path, ["X", "y"], rows, procs=1, min_seconds=0)
    two, two_s = limit_read(path, ["X", "y"], rows, procs=2, min_seconds=0)
    assert one == two == 1000 and one_s > 0 and two_s > 0
    assert limit_read(path, ["X"], None, procs=2, min_seconds=0)[0] == 3000


def test_limit_read_raises_a_readers_error(tmp_path):
    from queuepipe.tools.limits import limit_read
    path = str(_small_file(tmp_path / "small.h5"))
    with pytest.raises(RuntimeError, match="KeyError.*nope"):
        limit_read(path, ["nope"], None, procs=2, min_seconds=0)


LIMITS_WITHOUT_TF = r"""
import sys
import queuepipe.tools.limits
assert "tensorflow" not in sys.modules, "importing queuepipe.tools.limits imported tensorflow"
print("OK")
"""


def test_limits_import_without_tensorflow():
    """limit_read's reader processes, the bench command and the harness import it before (or
    without) TensorFlow."""
    from helpers import describe, run_python
    proc = run_python(LIMITS_WITHOUT_TF, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout, describe(proc)
