"""Errors queuepipe raises, and how a worker's failure travels to the user's main thread."""
from __future__ import annotations

import traceback
from typing import Optional


class QueuepipeError(Exception):
    """Base class of queuepipe's own errors."""


class SpecError(QueuepipeError, ValueError):
    """A sample or block does not match the declared output structure, dtype or shape."""


class WorkerDiedError(QueuepipeError, RuntimeError):
    """A worker process ended without saying why (killed by a signal, crashed in C code)."""


class HDF5InputError(QueuepipeError, ValueError):
    """Files, datasets or a row selection that cannot be read as asked (found while building)."""


class HDF5FileNotFoundError(HDF5InputError, FileNotFoundError):
    """A file (or a glob pattern, or an external link's target file) does not exist."""


class HDF5SelectionError(HDF5InputError, IndexError):
    """A row selection reaches outside the rows there are, or selects nothing."""


class HDF5TypeError(QueuepipeError, TypeError):
    """A dataset's dtype has no TensorFlow equivalent, or an argument has an unsupported type."""


class HDF5FilterError(HDF5InputError):
    """A dataset needs an HDF5 filter (compression plugin) this process cannot decode."""


class HDF5ReadError(QueuepipeError, OSError):
    """A read failed while the pipeline ran (corrupt chunk, file changed or vanished)."""


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised in a worker process."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def add_note(exc: BaseException, note: str) -> None:
    """``BaseException.add_note`` where available (3.11+), else keep it in ``__notes__``."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = list(getattr(exc, "__notes__", []))
        notes.append(note)
        try:
            exc.__notes__ = notes
        except Exception:
            pass


class WorkerFailure:
    """What a failed worker leaves behind: the exception to raise and where it came from.

    ``exception`` is the original exception object (same type and message).  For a
    thread worker it still carries its own ``__traceback__``; for a process worker it
    was rebuilt in the parent and its ``__cause__`` is a :class:`RemoteTraceback`
    with the child's traceback text.
    """

    def __init__(self, exception: BaseException, worker_index: int, worker_count: int,
                 mode: str, traceback_text: Optional[str] = None):
        self.exception = exception
        self.worker_index = worker_index
        self.worker_count = worker_count
        self.mode = mode
        if traceback_text is None:
            traceback_text = "".join(traceback.format_exception(
                type(exception), exception, exception.__traceback__))
        self.traceback_text = traceback_text
        self._noted = False

    @property
    def where(self) -> str:
        return f"queuepipe worker {self.worker_index} of {self.worker_count} ({self.mode})"

    def summary(self) -> str:
        """One line: which worker failed with what."""
        return f"{self.where} failed: {type(self.exception).__name__}: {self.exception}"

    def to_raise(self) -> BaseException:
        """The original exception, annotated once with the failing worker's identity."""
        if not self._noted:
            add_note(self.exception, f"(raised in {self.where}; queuepipe stopped the pipeline)")
            self._noted = True
        return self.exception
