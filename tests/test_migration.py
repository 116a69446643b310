"""MIGRATION.md's before/after pairs run: every ``compat/*_before.py`` and ``compat/*_after.py``.

Each program makes small synthetic data in the old program's format (MNIST's IDX files,
CIFAR-10's binary records, TFRecords, HDF5...) in a temporary folder and trains on it.  Here
each runs in a fresh interpreter (this venv, ``TF_CPP_MIN_LOG_LEVEL=2``, a ``TMPDIR`` of its
own that must be empty again at exit); it must exit 0, and the before and the after of a pair
must print the same result -- the same ``result:`` fields (epochs, rows, steps...), each
loss going down -- see compat/README.md for the convention.  A ``_before`` whose library is
not installed (tftables; Keras 2's ``HDF5Matrix``) is not run: the reason is the skip
message, and it is still compiled and checked with ``queuepipe doctor`` for the old API it
stands for.  Pairs are found on disk, so a new pair is tested as soon as it lands.

This module imports neither TensorFlow nor the programs: everything heavy is a subprocess.
"""
from __future__ import annotations

import ast
import glob
import json
import math
import os
import py_compile
import re
import subprocess
import sys
import tempfile
import time

import pytest

from queuepipe.tools import doctor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPAT = os.path.join(REPO, "compat")
MIGRATION = os.path.join(REPO, "MIGRATION.md")
RUN_TIMEOUT = 90  # seconds per program; each takes a few seconds on a 2-core machine

BEFORES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(COMPAT, "*_before.py")))
AFTERS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(COMPAT, "*_after.py")))
PAIRS = sorted({name.rsplit("_", 1)[0] for name in BEFORES + AFTERS})
PROGRAMS = sorted(BEFORES + AFTERS)

#: The old patterns the migration kit covers (issue 16, item 6): the pair of each, and the words
#: MIGRATION.md must use for them.
EXPECTED_PAIRS = ["feed_dict", "cifar10_input", "tfrecord_input", "pyfunc_queue", "wavenet_reader", "tftables",
                  "keras_hdf5matrix", "slim_prefetch"]
PATTERN_WORDS = ["feed_dict", "string_input_producer", "shuffle_batch", "FixedLengthRecordReader",
                 "TFRecordReader", "tf.train.batch", "py_func", "FIFOQueue", "QueueRunner", "add_queue_runner",
                 "placeholder", "enqueue", "tftables", "HDF5Matrix", "fit_generator", "prefetch_queue"]
OUTSIDE_WORDS = ["tf.contrib", "tf_slim", "Python 2", "xrange", "iteritems", "cPickle", "2to3",
                 "tensorflow.examples", "tf.keras.datasets.mnist", "disable_eager_execution",
                 "disable_v2_behavior", "tf.contrib.data", "Estimator", "queuepipe doctor"]

#: Parts of a pair's output that vary from run to run, masked before the before and the after are
#: compared (pairs that print an ``OK:`` line rather than ``result:`` fields).
VARIES = {
    # which clips the two reader threads / workers put into the 20 batches depends on their
    # interleaving, so the total of the clips' lengths moves a little from run to run
    "wavenet_reader": [re.compile(r"\b\d+ frames of audio")],
}

RESULT_LINE = re.compile(r"^result(?:\[(?P<label>[\w.-]+)\])?: (?P<fields>.+)$", re.MULTILINE)
DECIMAL = re.compile(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?")

_runs: dict = {}  # program name -> (CompletedProcess, seconds, files left in its TMPDIR)
_unrunnable: dict = {}  # program name -> reason (filled once, for every _before)


def path_of(name: str) -> str:
    return os.path.join(COMPAT, name)


def describe(proc: subprocess.CompletedProcess) -> str:
    return (f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}"
            f"\n--- stderr ---\n{proc.stderr[-4000:]}")


def run_program(name: str):
    """Run ``compat/<name>`` once per test session; (process, seconds, leftovers in TMPDIR)."""
    if name not in _runs:
        with tempfile.TemporaryDirectory(prefix="qp-migration-") as scratch:
            tmpdir = os.path.join(scratch, "tmp")
            os.mkdir(tmpdir)
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=tmpdir)
            start = time.monotonic()
            proc = subprocess.run([sys.executable, path_of(name)], capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT, env=env, cwd=scratch)
            _runs[name] = (proc, time.monotonic() - start, sorted(os.listdir(tmpdir)))
    return _runs[name]


# -- which befores cannot run here -----------------------------------------------------------------

_IMPORT_PROBE = r"""
import json, sys
out = {}
for name, statements in json.loads(sys.argv[1]).items():
    out[name] = None
    for statement in statements:
        try:
            exec(statement, {})
        except ImportError as exc:  # ModuleNotFoundError too
            out[name] = [statement, str(exc)]
            break
print(json.dumps(out))
"""


def module_imports(name: str):
    """The module-level import statements of a program (what it is written against)."""
    with open(path_of(name), encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=name)
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def unrunnable_reason(name: str):
    """Why a ``_before`` cannot run here (a library it imports at module level is not installed),
    or None.  Every ``_before``'s imports are tried once, together, in one fresh interpreter."""
    if not _unrunnable:
        probe = {b: module_imports(b) for b in BEFORES}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, json.dumps(probe)], capture_output=True,
                              text=True, timeout=RUN_TIMEOUT, env=env, cwd=REPO)
        assert proc.returncode == 0, describe(proc)
        _unrunnable.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    failed = _unrunnable.get(name)
    if failed is None:
        return None
    statement, error = failed
    return f"{name} is kept for reference and not run: its library is not installed ({statement}: {error})"


def missing_names(name: str):
    """The names of the import that fails in a ``_before`` (``import tftables`` -> tftables,
    ``from keras.utils import HDF5Matrix`` -> HDF5Matrix)."""
    unrunnable_reason(name)
    statement = ast.parse(_unrunnable[name][0]).body[0]
    if isinstance(statement, ast.ImportFrom):
        return [alias.name for alias in statement.names]
    return [alias.name.split(".")[0] for alias in statement.names]


# -- what a program prints -------------------------------------------------------------------------

def results(stdout: str):
    """``[(label, {field: value})]`` of the ``result:`` lines."""
    found = []
    for match in RESULT_LINE.finditer(stdout):
        fields = {}
        for item in match.group("fields").split():
            key, sep, value = item.partition("=")
            assert sep, f"result field {item!r} is not key=value in line {match.group(0)!r}"
            fields[key] = value
        found.append((match.group("label") or "", fields))
    return found


def comparable(stem: str, stdout: str):
    """What a before and an after must share: the result fields but the loss; without result
    lines, the last line of output with decimal numbers (and what ``VARIES`` names) masked."""
    found = results(stdout)
    if found:
        return [(label, {k: v for k, v in fields.items() if k != "loss"}) for label, fields in found]
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1]
    for pattern in VARIES.get(stem, []):
        line = pattern.sub("<varies>", line)
    return DECIMAL.sub("<decimal>", line)


def check_losses(name: str, stdout: str) -> None:
    for label, fields in results(stdout):
        if "loss" not in fields:
            continue
        values = [float(v) for v in fields["loss"].split("->")]
        assert all(math.isfinite(v) for v in values), f"{name} {label}: loss {fields['loss']} is not finite"
        if len(values) == 2:
            assert values[1] < values[0], f"{name} {label}: the loss did not go down ({fields['loss']})"


# -- the tests -------------------------------------------------------------------------------------

def test_the_pairs_are_found():
    assert set(EXPECTED_PAIRS) <= set(PAIRS), f"missing pairs: {sorted(set(EXPECTED_PAIRS) - set(PAIRS))}"


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_runs(name):
    if name.endswith("_before.py"):
        reason = unrunnable_reason(name)
        if reason:
            pytest.skip(reason)
    proc, seconds, leftovers = run_program(name)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.strip(), f"{name} printed nothing\n{describe(proc)}"
    check_losses(name, proc.stdout)
    assert not leftovers, f"{name} left files in its TMPDIR: {leftovers}"
    assert seconds < RUN_TIMEOUT


@pytest.mark.parametrize("stem", PAIRS)
def test_before_and_after_print_the_same_result(stem):
    before, after = f"{stem}_before.py", f"{stem}_after.py"
    present = [name for name in (before, after) if name in BEFORES + AFTERS]
    assert len(present) == 2, f"pair {stem} is incomplete: compat/ has only {present}"
    reason = unrunnable_reason(before)
    if reason:
        pytest.skip(reason + "; its after is run alone by test_program_runs")
    proc_before, _, _ = run_program(before)
    proc_after, _, _ = run_program(after)
    assert proc_before.returncode == 0, describe(proc_before)
    assert proc_after.returncode == 0, describe(proc_after)
    expected = comparable(stem, proc_before.stdout)
    assert expected, f"{before} printed nothing to compare"
    assert comparable(stem, proc_after.stdout) == expected, (
        f"{before} and {after} print different results:\n  before: {proc_before.stdout.strip()}\n"
        f"  after:  {proc_after.stdout.strip()}")


@pytest.mark.parametrize("stem", PAIRS)
def test_before_uses_the_old_api_and_after_does_not(stem, tmp_path):
    """Every before compiles and ``queuepipe doctor`` finds the old input pattern in it; its
    after has fewer such findings.  A before that cannot run here must at least use the names
    of the library that is missing (so the reference program is what it claims to be)."""
    before, after = f"{stem}_before.py", f"{stem}_after.py"
    for name in (before, after):
        if os.path.exists(path_of(name)):
            py_compile.compile(path_of(name), cfile=str(tmp_path / (name + "c")), doraise=True)
    if before not in BEFORES:
        pytest.fail(f"pair {stem} has no {before}")
    patterns_before = [f for f in doctor.scan_file(path_of(before)) if f.kind == doctor.PATTERN]
    assert patterns_before, f"queuepipe doctor finds no TF1 input pattern in {before}"
    if after in AFTERS:
        patterns_after = [f for f in doctor.scan_file(path_of(after)) if f.kind == doctor.PATTERN]
        assert len(patterns_after) < len(patterns_before), [f.format() for f in patterns_after]
    if unrunnable_reason(before):
        text = " ".join(f.format() for f in patterns_before)
        for word in missing_names(before):
            assert word in text, f"{before}: doctor's findings do not mention {word}: {text}"


def test_keras_before_is_the_keras_2_program():
    """The Keras 2 reference program really uses HDF5Matrix and fit_generator (it cannot run:
    Keras 3 has neither, and Keras 2 is not installed)."""
    codes = {(f.code, f.message.split("(")[0].split(".")[-1])
             for f in doctor.scan_file(path_of("keras_hdf5matrix_before.py"))}
    assert ("pattern-keras", "HDF5Matrix") in codes and ("pattern-keras", "fit_generator") in codes, codes


def test_migration_md_covers_every_pair_and_pattern():
    with open(MIGRATION, encoding="utf-8") as f:
        text = f.read()
    for stem in sorted(set(PAIRS) | set(EXPECTED_PAIRS)):
        for name in (f"compat/{stem}_before.py", f"compat/{stem}_after.py"):
            assert name in text, f"MIGRATION.md does not mention {name}"
    for word in PATTERN_WORDS + OUTSIDE_WORDS:
        assert word in text, f"MIGRATION.md does not mention {word!r}"


def test_migration_md_quotes_real_doctor_output():
    """The doctor lines MIGRATION.md shows are what ``queuepipe doctor compat/`` prints now."""
    with open(MIGRATION, encoding="utf-8") as f:
        text = f.read()
    quoted = [line.strip() for line in text.splitlines() if re.match(r"^\s+compat/\w+\.py:\d+: \[", line)]
    assert len(quoted) >= 3, "MIGRATION.md quotes no doctor output"
    real = {f.format() for f in doctor.scan(COMPAT)}
    real = {line.replace(COMPAT, "compat") for line in real}
    for line in quoted:
        assert line in real, f"MIGRATION.md quotes a doctor line that doctor no longer prints: {line}"
