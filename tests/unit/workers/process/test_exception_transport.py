"""How a worker process's exception reaches the parent (``protocol.pickled_exception``): the same
class, ``args`` and attributes -- also for a class whose constructor takes more than its message,
which pickle's own ``cls(*args)`` cannot rebuild -- or None when it cannot travel at all (the parent
then makes a ``RuntimeError`` of its type and text)."""
from __future__ import annotations

import pickle
import threading

from queuepipe.errors import HDF5ReadError, SpecError
from queuepipe.workers.process.child import _failed
from queuepipe.workers.process.protocol import pickled_exception


class NeedsRecord(Exception):
    """A constructor with a required argument that is not part of ``args``."""

    def __init__(self, message: str, record: int):
        super().__init__(message)
        self.record = record


class KeywordOnly(ValueError):
    def __init__(self, *, code: int):
        super().__init__(f"code {code}")
        self.code = code


class HoldsALock(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()  # no pickle for it


def _round_trip(exc: BaseException) -> BaseException:
    data = pickled_exception(exc)
    assert data is not None
    return pickle.loads(data)


def test_a_constructor_that_takes_more_than_the_message_is_rebuilt_with_its_attributes():
    exc = NeedsRecord("record 7 is damaged", 7)
    exc.add_note("a note of the user's")
    back = _round_trip(exc)
    assert type(back) is NeedsRecord and back.args == ("record 7 is damaged",)
    assert back.record == 7 and str(back) == "record 7 is damaged"
    assert back.__notes__ == ["a note of the user's"]
    kw = _round_trip(KeywordOnly(code=3))
    assert type(kw) is KeywordOnly and kw.code == 3 and str(kw) == "code 3" and isinstance(kw, ValueError)


def test_plain_and_queuepipe_exceptions_go_pickles_own_way():
    for exc in (KeyError("k"), OSError(2, "No such file", "x.h5"), SpecError("field 'x'"), HDF5ReadError("rows 1..2")):
        back = _round_trip(exc)
        assert type(back) is type(exc) and back.args == exc.args
    assert _round_trip(OSError(2, "No such file", "x.h5")).filename == "x.h5"


def test_an_exception_that_cannot_travel_is_sent_by_type_and_text():
    exc = HoldsALock("cannot pickle me")
    assert pickled_exception(exc) is None
    message = _failed(exc, "Traceback ...")
    assert message.exception is None and message.type_name == "HoldsALock" and message.message == "cannot pickle me"
