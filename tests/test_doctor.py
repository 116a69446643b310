"""``queuepipe doctor``: on a tree of TF1-era programs it finds every planted pattern and pitfall.

The fixtures (tests/fixtures/doctor/) mark each line where a finding is due with a trailing
``# doctor: CODE [CODE...]``; the expected set is read from those markers, so the comparison with
``scan()`` is exact: nothing missing, nothing extra (the clean program has no marker).  The
fixtures are read, never imported or run.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Set, Tuple

from queuepipe.tools import doctor
from queuepipe.tools.doctor import Finding, scan, scan_file

FIXTURES = Path(__file__).parent / "fixtures" / "doctor"
REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"#\s*doctor:\s*([\w\s,-]+?)\s*$")

ALL_PATTERNS = {"pattern-feed-dict-generator", "pattern-producer", "pattern-reader", "pattern-batch",
                "pattern-py-func", "pattern-queue", "pattern-queue-runner", "pattern-thread-enqueue",
                "pattern-tftables", "pattern-keras", "pattern-slim-prefetch"}
ALL_PITFALLS = {"pitfall-num-epochs", "pitfall-thread-not-daemon", "pitfall-py-func-per-sample",
                "pitfall-feed-dict-generator"}

Key = Tuple[str, int, str]


def planted() -> Set[Key]:
    """(file, line, code) for every ``# doctor: ...`` marker of the fixture tree."""
    expected: Set[Key] = set()
    for path in sorted(FIXTURES.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = MARKER.search(line)
            if match:
                for code in re.split(r"[\s,]+", match.group(1)):
                    expected.add((path.relative_to(FIXTURES).as_posix(), number, code))
    return expected


def found(findings) -> Set[Key]:
    return {(Path(os.path.relpath(f.path, FIXTURES)).as_posix(), f.line, f.code) for f in findings}


def test_the_fixture_tree_plants_every_pattern_and_pitfall():
    codes = {code for _, _, code in planted()}
    assert ALL_PATTERNS <= codes
    assert ALL_PITFALLS <= codes
    assert {"note-not-parsed", "note-python2", "note-tf-contrib"} <= codes


def test_scan_finds_every_planted_finding_and_nothing_else():
    findings = scan(str(FIXTURES))
    expected, actual = planted(), found(findings)
    assert not expected - actual, f"missing: {sorted(expected - actual)}"
    assert not actual - expected, f"not planted: {sorted(actual - expected)}"
    assert all(isinstance(f, Finding) and f.kind in ("pattern", "pitfall", "note") for f in findings)
    assert all(f.kind == f.code.split("-")[0] for f in findings)
    assert all(f.replacement for f in findings if f.kind == "pattern")


def test_the_clean_program_has_no_finding():
    assert scan_file(str(FIXTURES / "clean_train.py")) == []


def test_replacements_fit_the_reader_found():
    by_key = {(Path(f.path).name, f.line, f.code): f for f in scan(str(FIXTURES))}
    cifar = [f for (name, _, code), f in by_key.items() if name == "cifar10_input.py" and code == "pattern-producer"]
    assert cifar and all("queuepipe.fixed_length_records(" in f.replacement for f in cifar)
    py2 = [f for (name, _, code), f in by_key.items() if name == "py2_tfrecord_reader.py" and code == "pattern-batch"]
    assert py2 and all("queuepipe.tfrecords(" in f.replacement and "shuffle=True" in f.replacement for f in py2)
    wavenet = [f for (name, _, code), f in by_key.items() if name == "wavenet_audio_reader.py"]
    assert any("dynamic_pad=True" in f.replacement for f in wavenet if f.code == "pattern-queue")
    tftables_import = [f for (name, _, code), f in by_key.items() if name == "tftables_user.py" and f.line == 3]
    assert tftables_import[0].replacement == "import queuepipe.compat.tftables as tftables"


def test_a_file_that_does_not_parse_is_reported_and_still_searched(tmp_path):
    source = tmp_path / "old.py"
    source.write_text("import tensorflow as tf\nprint 'hello'\nq = tf.FIFOQueue(10, [tf.float32])\n")
    codes = {(f.line, f.code) for f in scan(str(tmp_path))}
    assert (2, "note-not-parsed") in codes
    assert (3, "pattern-queue") in codes


def test_aliases_are_resolved_and_scanned_code_is_never_run(tmp_path):
    (tmp_path / "aliases.py").write_text(
        "raise SystemExit('this file must never run')\n"
        "import tensorflow.compat.v1 as v1\n"
        "from tensorflow.contrib import slim as sl\n"
        "from tensorflow.compat.v1.train import shuffle_batch\n"
        "q = v1.train.string_input_producer(['a'])\n"
        "b = shuffle_batch([q], 4, 100, 10)\n"
        "p = sl.prefetch_queue.prefetch_queue([b])\n"
        "def batch(x):\n    return x\n"
        "c = batch(q)\n")
    codes = {(f.line, f.code) for f in scan(str(tmp_path))}
    assert codes == {(5, "pattern-producer"), (6, "pattern-batch"), (7, "pattern-slim-prefetch"),
                     (3, "note-tf-contrib")}


def test_main_prints_a_report_and_strict_sets_the_status(capsys):
    assert doctor.main([str(FIXTURES)]) == 0
    out = capsys.readouterr().out
    assert "summary: 10 files scanned, 8 with findings, 1 not parsed" in out
    assert doctor.main(["--strict", str(FIXTURES)]) == 1
    assert doctor.main(["--strict", str(FIXTURES / "clean_train.py")]) == 0
    capsys.readouterr()
    assert doctor.main([str(FIXTURES / "no such dir")]) == 2


def test_python_m_queuepipe_doctor():
    done = subprocess.run([sys.executable, "-m", "queuepipe", "doctor", "tests/fixtures/doctor"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    tree = "tests/fixtures/doctor/"
    assert f"{tree}cifar10_input.py  (5 patterns, 1 pitfall, 1 note)" in lines
    assert any(line.startswith(f"  {tree}cifar10_input.py:26: [pattern-reader] ")
               and line.endswith(" -> queuepipe.fixed_length_records(files, record_bytes, ...)") for line in lines)
    assert any(line.startswith(f"  {tree}wavenet_audio_reader.py:64: [pitfall-thread-not-daemon] ") for line in lines)
    assert any(line.startswith(f"  {tree}py2_tfrecord_reader.py:24: [note-not-parsed] not parsed (Python 2?)")
               for line in lines)
    kinds = [code.split("-")[0] for _, _, code in planted()]
    assert (f"summary: 10 files scanned, 8 with findings, 1 not parsed: {kinds.count('pattern')} patterns, "
            f"{kinds.count('pitfall')} pitfalls, {kinds.count('note')} notes") in lines


def test_doctor_never_imports_tensorflow():
    script = ("import sys\nfrom queuepipe.tools.cli import main\n"
              "status = main(['doctor', %r])\n"
              "sys.exit(3 if 'tensorflow' in sys.modules else status)\n") % str(FIXTURES)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
