"""queuepipe.errors: every public error is a ``QueuepipeError`` *and* still the built-in type
a caller would catch anyway; errors survive pickling (they cross from worker processes);
``WorkerFailure.to_raise()`` hands back the user's own exception, annotated once with the
worker it came from."""
from __future__ import annotations

import pickle

import pytest

import queuepipe
from queuepipe import errors
from queuepipe.errors import QueuepipeError, WorkerFailure

PUBLIC = [
    ("SpecError", ValueError),
    ("WorkerDiedError", RuntimeError),
    ("HDF5InputError", ValueError),
    ("HDF5FileNotFoundError", FileNotFoundError),
    ("HDF5SelectionError", IndexError),
    ("HDF5TypeError", TypeError),
    ("HDF5ReadError", OSError),
    ("HDF5FilterError", ValueError),
    ("ArgumentError", ValueError),
    ("ArgumentTypeError", TypeError),
    ("GraphModeError", RuntimeError),
    ("MissingDependencyError", ImportError),
]


@pytest.mark.parametrize("name, builtin", PUBLIC)
def test_every_public_error_is_a_queuepipe_error_and_still_its_builtin(name, builtin):
    cls = getattr(errors, name)
    assert issubclass(cls, QueuepipeError) and issubclass(cls, builtin)
    with pytest.raises(builtin):
        raise cls("refused")
    with pytest.raises(QueuepipeError):
        raise cls("refused")
    if name.startswith("HDF5") and name not in ("HDF5TypeError", "HDF5ReadError"):
        assert issubclass(cls, errors.HDF5InputError), "the input is at fault"
    if name in ("SpecError", "WorkerDiedError"):  # re-exported by the top-level package
        assert getattr(queuepipe, name) is cls and queuepipe.QueuepipeError is QueuepipeError


@pytest.mark.parametrize("name", [n for n, _ in PUBLIC] + ["QueuepipeError"])
def test_every_public_error_pickles_round_trip_with_its_message(name):
    exc = getattr(errors, name)(f"{name}: row 17 of data.h5 is out of range")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.args == exc.args


def test_to_raise_returns_the_original_exception_annotated_once_with_the_worker():
    original = KeyError("missing column")
    failure = WorkerFailure(original, worker_index=2, worker_count=4, mode="process")
    first = failure.to_raise()
    second = failure.to_raise()
    assert first is original and second is original
    notes = getattr(original, "__notes__", [])
    assert len(notes) == 1
    assert "worker 2 of 4" in notes[0] and "process" in notes[0]


def test_a_failure_summary_names_the_worker_the_type_and_the_message():
    try:
        raise ValueError("bad sample 7")
    except ValueError as exc:
        failure = WorkerFailure(exc, 0, 3, "thread")
    summary = failure.summary()
    assert "worker 0 of 3" in summary and "ValueError" in summary and "bad sample 7" in summary
    assert "bad sample 7" in failure.traceback_text and "Traceback" in failure.traceback_text


@pytest.mark.parametrize("name", [n for n, _ in PUBLIC] + ["QueuepipeError"])
def test_every_public_error_is_importable_from_the_package(name):
    import queuepipe
    assert getattr(queuepipe, name) is getattr(errors, name)
