"""Smoke tests of the benchmark harness and of ``queuepipe bench`` (numbers are not checked).

``python -m benchmarks.run --quick`` on tiny cached-in-tmp data must produce the JSON, the
markdown table and the plot with every expected row; queuepipe rows may say "not
available" (a pipeline that fails before its first batch), the reference rows must have run.
``queuepipe bench`` runs as a user runs it (a subprocess, quiet stderr) and writes its
``--plot`` SVG with one bar per measured row; its advice, its timed window and the plot
writer are checked as functions on made-up numbers (those tests are not ``slow``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_harness_produces_every_row(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, QUEUEPIPE_BENCH_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--no-peers", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=270)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "summary (targets: PASS/MISS)" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    for key in ("machine", "versions", "rows", "summary", "command", "date"):
        assert key in results
    assert results["machine"]["cores"] >= 1 and results["versions"].get("tensorflow")
    labels = {(r["workload"], r["label"]): r for r in results["rows"]}
    for wid, api in (("W1", "from_hdf5"), ("W2", "from_generator"), ("W3", "from_hdf5"),
                     ("W4", "from_generator"), ("W5", "from_hdf5")):
        for way in ("limit-read", "limit-read (2 proc)", "limit-consumer", "limit-queue", "feed_dict", "tf.data",
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
    # W1 again with sess.make_callable as the loop: its limits and queuepipe rows, judged apart
    for way in ("limit-consumer", "limit-queue", "queuepipe from_hdf5 thread x1", "queuepipe from_hdf5 process x2"):
        row = labels[("W1", f"{way} [make_callable]")]
        assert row["status"] == "ok" and row["samples_per_s"] > 0, row
    assert labels[("W1", "queuepipe from_hdf5 thread x1")]["x_queue"] > 0
    assert "W1 [make_callable]" in results["summary"]
    assert any(line.startswith("thread x2") for line in results["summary"]["W1"]["scaling"])
    assert labels[("W4", "feed_dict")].get("overlap") is not None

    table = (out / "results.md").read_text()
    for wid in ("W1", "W2", "W3", "W4", "W5"):
        assert f"### {wid}:" in table
    assert "x limit-consumer" in table and "x limit-queue" in table and "samples/s" in table
    assert (out / "scaling.png").stat().st_size > 1000


def _small_file(path: Path, n: int = 3000) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32),
                         chunks=(100, 16))
        f.create_dataset("y", data=np.arange(n, dtype=np.int64), chunks=(500,))
    return path


def _bars(svg_path: Path):
    """The ``<rect class="bar">`` elements of an SVG file (parsing it: it must be valid XML)."""
    root = ET.parse(svg_path).getroot()
    assert root.tag == f"{SVG}svg"
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_cli_on_a_small_file(tmp_path):
    """The command as a user runs it: exit 0, no TF noise on stderr, verdict and advice, the JSON,
    and a valid SVG with one bar per measured row (two limits, two trials)."""
    path = _small_file(tmp_path / "small.h5")
    report, plot = tmp_path / "bench.json", tmp_path / "rates.svg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "queuepipe", "bench", str(path), "--datasets", "X,y",
                           "--rows", "::3", "--workers", "2", "--batch-size", "50", "--seconds", "1",
                           "--no-progress", "--json", str(report), "--plot", str(plot)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=220)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "limit-read" in out and "limit-consumer" in out
    assert "read path: X: preadv of plain rows; y: preadv of plain rows" in out
    assert "verdict:" in out and ("input-bound" in out or "compute-bound" in out)
    assert "\nadvice: use workers=" in out and "not in the rate" in out
    assert not re.search(r"rendezvous|^I\d{4} ", proc.stderr, re.IGNORECASE | re.MULTILINE), proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["rows"] == 1000 and [t["workers"] for t in data["trials"]] == [1, 2]
    assert all(t["samples_per_s"] > 0 and t["timed_s"] >= 1.0 for t in data["trials"])
    assert data["advice"][0].startswith("use workers=")
    bars = _bars(plot)
    measured = [data["limit_read"], data["limit_consumer"]] + [t["samples_per_s"] for t in data["trials"]]
    assert len(bars) == len(measured) == 4
    assert [float(b.get("data-value")) for b in bars] == pytest.approx(measured, rel=1e-5)


def _trials(*rates):
    return [{"workers": k + 1, "mode": "x", "samples_per_s": r} for k, r in enumerate(rates)]


def test_bench_advice_when_the_step_is_the_bottleneck():
    from queuepipe.tools.bench import advice
    lines = advice(_trials(95e3, 96e3), consumer=100e3, read=1e6, mode="thread", cores=4)
    assert lines[0].startswith("use workers=1, mode='thread'")
    assert "your step is the bottleneck" in lines[1] and "more workers will not help" in lines[1]
    assert len(lines) == 2


def test_bench_advice_when_processes_still_scale():
    from queuepipe.tools.bench import advice
    lines = advice(_trials(50e3, 90e3), consumer=500e3, read=200e3, mode="process", cores=4, batch_size=128)
    assert lines[0].startswith("use workers=2, mode='process'")
    assert any("try --workers 3" in line for line in lines), lines
    assert any("try --batch-size 256" in line for line in lines), lines  # 0.45x limit-read: not the file
    assert not any("--mode process" in line for line in lines)


def test_bench_advice_when_threads_do_not_scale_and_reading_is_the_limit():
    from queuepipe.tools.bench import advice
    lines = advice(_trials(100e3, 98e3), consumer=1e6, read=120e3, mode="thread", cores=2, compressed=True)
    assert lines[0].startswith("use workers=1, mode='thread'")
    assert any("0.98x one thread" in line and "measure --mode process" in line for line in lines), lines
    assert any(line.startswith("reading is the limit") and "lighter compression" in line for line in lines)
    assert not any("try --workers" in line for line in lines)


def test_timed_window_keeps_start_up_out_of_the_rate():
    """A source slow to start, then steady: the window opens after start-up and warm-up, lasts
    at least ``seconds``, and counts only the rows inside it."""
    from queuepipe.tools.bench import _timed_window
    calls = []

    def next_batch():
        calls.append(1)
        time.sleep(0.3 if len(calls) == 1 else 0.002)
        return 10

    window = _timed_window(next_batch, 0.2, warmup_batches=3)
    assert window["startup_s"] >= 0.3 and window["timed_s"] >= 0.2
    assert window["warmup_rows"] == 40  # the first batch and three warm-up batches
    assert window["timed_rows"] == 10 * (len(calls) - 4)


def test_svg_bar_chart_has_one_bar_per_row_and_escapes_labels(tmp_path):
    from queuepipe.tools.plot import write_bar_chart
    bars = [("limit-read", 3.0e6, "limit"), ("limit-consumer <batch & co>", 4.0e5, "limit"),
            ("from_hdf5 thread x1", 1.5e5, "trial")]
    path = tmp_path / "chart.svg"
    write_bar_chart(str(path), bars, title="rates", unit="samples/s")
    drawn = _bars(path)
    assert [float(r.get("data-value")) for r in drawn] == [3.0e6, 4.0e5, 1.5e5]
    widths = [float(r.get("width")) for r in drawn]
    assert widths[0] == max(widths) and widths[0] > widths[1] > widths[2] > 0
    texts = [t.text for t in ET.parse(path).getroot().iter(f"{SVG}text")]
    assert "limit-consumer <batch & co>" in texts  # escaped in the file, so the SVG parses


def test_plot_file_must_be_svg_or_png_and_png_names_the_fix(monkeypatch):
    from queuepipe.tools.plot import PlotError, check_plot_path
    check_plot_path("rates.svg")
    with pytest.raises(PlotError, match=r"\.svg.*\.png"):
        check_plot_path("rates.pdf")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(PlotError, match=r"pip install matplotlib.*\.svg"):
        check_plot_path("rates.png")


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_limits_import_without_tensorflow():
    """limit_read's reader processes, the bench command and the harness import it before (or
    without) TensorFlow."""
    from helpers import describe, run_python
    proc = run_python(LIMITS_WITHOUT_TF, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout, describe(proc)
