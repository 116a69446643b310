"""The campaign's judges reject what they must (no TensorFlow, no subprocess: a second or so).

A trial can only be trusted to catch a defect if its judge says no to a wrong observation; these
feed the judges made-up observations with exactly one thing wrong each.
"""
from __future__ import annotations

import numpy as np
import pytest

from reliability import files
from reliability.core import summarize_stacks
from reliability.kinds import mutant
from reliability.supervisor import _generic

PATH = "/data/file.h5"
N = 12


def _plan():
    return {**mutant.plan(0), "format": "vector_1d", "rows": N, "mutation": "bitflip"}


def _prep(unreadable=()):
    x = list(files.expected_rows("vector_1d", N))
    for i in unreadable:
        x[i] = None
    ds = {files.DATA: {"full": not unreadable, "error": None, "rows": N, "values": x,
                       "row_errors": {i: "OSError: bad chunk" for i in unreadable}},
          files.IDS: {"full": True, "error": None, "rows": N, "values": list(np.arange(N)), "row_errors": {}}}
    return {"path": PATH, "oracle": {"status": "ok", "result": {"open_error": None, "datasets": ds}}}


def _batch(ids, x=None):
    ids = np.asarray(ids, np.int64)
    exp = files.expected_rows("vector_1d", N)
    return {"x": exp[ids] if x is None else np.asarray(x), "id": ids, "row_id": ids}


def _obs(batches, end="OutOfRange", **kw):
    return {"batches": batches, "end": end, "max_call_s": 0.1, **kw}


def _error(message, blocked=0.5):
    return {"run_error": {"type": "UnknownError", "module": "tf", "message": message, "mro": []},
            "run_error_blocked_s": blocked, "run_error_t": 1.0}


def judge(obs, prep=None):
    return mutant.judge(_plan(), prep or _prep(), obs, {})


def test_all_rows_once_with_h5pys_values_pass():
    assert judge(_obs([_batch(range(0, 6)), _batch(range(6, N))])) == []


def test_an_error_naming_the_file_after_correct_rows_passes():
    assert judge(_obs([_batch(range(4))], end="error", **_error(f"HDF5ReadError: {PATH}: bad"))) == []


@pytest.mark.parametrize("obs,expected", [
    (_obs([_batch(range(N), x=files.expected_rows("vector_1d", N) + (np.arange(N) == 3))]), "wrong values"),
    (_obs([_batch(range(N)), _batch([5])]), "duplicated rows"),
    (_obs([_batch(range(N - 2))]), "missing rows"),
    (_obs([_batch(range(4))], end="error", **_error("OSError: bad chunk")), "does not name the file"),
    (_obs([_batch(range(4))], end="error", **_error(f"{PATH}: bad", blocked=12.0)), "error took 12.0 s"),
    (_obs([_batch(range(4))], end="error", after_failure=[{"what": "batch", "rows": 4}],
          **_error(f"{PATH}: bad")), "batches after a failure"),
    (_obs([_batch(range(N))], max_call_s=11.0), "blocked 11.0 s"),
])
def test_one_wrong_thing_fails(obs, expected):
    reasons = judge(obs)
    assert any(expected in r for r in reasons), reasons


def test_rows_h5py_cannot_read_must_not_be_delivered():
    reasons = judge(_obs([_batch(range(N))]), prep=_prep(unreadable=[7]))
    assert any("rows h5py cannot read were delivered" in r for r in reasons), reasons


def test_a_build_error_must_name_the_file_within_10_s():
    ok = {"build_error": {"type": "HDF5InputError", "message": f"{PATH}: truncated", "mro": []}, "build_s": 0.2}
    assert judge(ok) == []
    assert "does not name the file" in judge({**ok, "build_error": {**ok["build_error"], "message": "truncated"}})[0]
    assert "after 11.0 s" in judge({**ok, "build_s": 11.0})[0]


class _Kind:
    @staticmethod
    def signals(plan):
        return ("SIGTERM",)


def _proc(**kw):
    return {"rc": 0, "stderr_tail": "", **kw}


@pytest.mark.parametrize("proc,obs,expected", [
    (_proc(rc=-11, stderr_tail="Fatal Python error: Segmentation fault\n"), None, "crash: killed by SIGSEGV"),
    (_proc(rc=-9), {}, "crash: killed by SIGKILL"),
    (_proc(rc=3, stderr_tail="boom\n"), {}, "crash: exit code 3"),
    (_proc(timed_out=True, timeout_reason="trial still running after 120 s"), None, "hang: trial still running"),
    (_proc(rc=1, stderr_tail="Timeout (0:00:10)!\nThread 0x1 (most recent call first):\n"
                             '  File "/x/threading.py", line 1 in join\n'), {}, "hang at interpreter exit"),
    (_proc(leaked_processes=[(42, "python -m queuepipe.workers.process.child")]), {}, "leaked processes"),
    (_proc(leaked_shm=["psm_1234"]), {}, "leaked /dev/shm"),
    (_proc(), {"leak_checks": [{"label": "10 s after the session closed", "threads": ["queuepipe-x-enqueue-0"],
                                "children": []}]}, "queuepipe threads left"),
    (_proc(), {"hang": {"label": "sess.run", "after_s": 30.1, "summary": "main thread in tensorflow"}}, "hang: sess.run"),
    (_proc(), {"uncaught": {"type": "KeyError", "message": "x", "traceback": ""}}, "harness: the trial raised KeyError"),
    (_proc(), None, "no result"),
])
def test_generic_checks(proc, obs, expected):
    reasons = _generic(object(), {}, obs, proc)
    assert any(expected in r for r in reasons), reasons


def test_an_expected_signal_is_not_a_crash_but_a_crash_signal_is():
    assert _generic(_Kind, {}, None, _proc(rc=-15)) == []
    assert "SIGSEGV" in _generic(_Kind, {}, None, _proc(rc=-11))[0]


def test_stack_summary_names_the_main_thread_and_queuepipe_threads():
    dump = ("Thread 0x0000000000000002 (most recent call first):\n"
            '  File "/v/h5py/_hl/dataset.py", line 903 in __getitem__\n'
            '  File "/w/queuepipe/sources/hdf5/reader.py", line 266 in _records\n'
            "\n"
            "Current thread 0x0000000000000001 (most recent call first):\n"
            '  File "/v/tensorflow/python/client/session.py", line 1483 in _call_tf_sessionrun\n'
            '  File "/w/reliability/tfrun.py", line 37 in drain\n'
            '  File "/w/reliability/child.py", line 40 in <module>\n')
    s = summarize_stacks(dump)
    assert s.startswith("main thread in tensorflow session.py:1483 _call_tf_sessionrun (from tfrun.py:37 drain)"), s
    assert "dataset.py:903 __getitem__ <- reader.py:266 _records" in s, s


def test_file_change_rejects_silent_zeros_after_a_truncation():
    from reliability.kinds import file_change
    p = {**file_change.plan(0), "format": "compound", "rows": N, "with_id_dataset": False}
    exp = files.expected_rows("compound", N)
    ids = np.arange(N)
    zeros = np.zeros(N, exp.dtype)
    got = np.where(ids < 8, exp, zeros)          # rows 8.. read as zeros after the truncation
    batch = {"x.a": got["a"], "x.b": got["b"], "x.c": got["c"], "row_id": ids}
    obs = _obs([batch], changed_t=0.5)
    reasons = file_change.judge(p, {"path": PATH}, obs, {})
    assert any("wrong values after the file changed: rows [8, 9, 10, 11]" in r for r in reasons), reasons
    good = {**batch, "x.a": exp["a"], "x.b": exp["b"], "x.c": exp["c"]}
    assert file_change.judge(p, {"path": PATH}, _obs([good], changed_t=0.5), {}) == []
