"""Every error queuepipe raises or passes on, on one page.

Raised to users (all importable from ``queuepipe``).  Everything queuepipe refuses is a
:class:`QueuepipeError`, and also the built-in type a caller would catch anyway:

===========================  ==================  ==================================================
class                        also a              raised when
===========================  ==================  ==================================================
``ArgumentError``            ValueError          an argument has a bad value (``batch_size=0``, ``mode="x"``)
``ArgumentTypeError``        TypeError           an argument has a bad type (an unpicklable generator
                                                 for ``mode="process"``, a non-callable ``map_fn``)
``GraphModeError``           RuntimeError        a pipeline is built while TensorFlow executes eagerly
``MissingDependencyError``   ImportError         a setting needs a package that is not installed
                                                 (``QUEUEPIPE_INFLATE=isal`` without ``isal``)
``SpecError``                ValueError          a sample/block does not match the declared structure,
                                                 dtype or shape (build time or in a worker)
``WorkerDiedError``          RuntimeError        a worker process ended without saying why (signal, crash)
``WorkerStalledError``       TimeoutError        a worker made no progress for ``stall_timeout`` seconds
                                                 (names what it was doing: file and rows, or its generator)
``HDF5InputError``           ValueError          files/datasets/selection cannot be read as asked
``HDF5FileNotFoundError``    FileNotFoundError   a file, glob or external link target is missing
``HDF5SelectionError``       IndexError          a selection reaches outside the rows, or is empty
``HDF5FilterError``          ValueError          a dataset needs a filter this process cannot decode
``HDF5TypeError``            TypeError           a dtype TensorFlow cannot take, or a bad ``shard=``
``HDF5ReadError``            OSError             a read failed while running (corrupt chunk, short file)
``RecordInputError``         ValueError          record files cannot be read as asked (at build time): a size
                                                 that is no whole number of records, a truncated or corrupt
                                                 TFRecord header, a compressed file
``RecordFileNotFoundError``  FileNotFoundError   a record file or glob pattern matches nothing
``RecordReadError``          OSError             a record read failed while running (data checksum, a file
                                                 changed since it was indexed)
``ExampleParseError``        ValueError          a record is no valid ``tf.train.Example``, or lacks a feature
                                                 with no default, or has the wrong type or count
``ResumeError``              RuntimeError        a resumable pipeline cannot start from the session's
                                                 position (not initialised, or saved for other data)
===========================  ==================  ==================================================

The user's own exceptions (from a generator or ``map_fn``) are passed through: the
original object, same type and message, annotated once with the failing worker
(:meth:`WorkerFailure.to_raise`); from a process worker it is rebuilt in the parent --
same class, ``args`` and attributes, even when its constructor takes more than the
message -- with the child's traceback as ``__cause__`` (:class:`RemoteTraceback`; an
exception that cannot travel becomes a ``RuntimeError`` naming its type and text).  It
reaches the user twice: inside ``sess.run`` as a ``tf.errors.OpError`` whose message
carries its type and text (the graph's error gate), and from ``queuepipe.running()``'s
exit as the original exception.  Before the failure, every whole batch of the rows the
worker's source handed on is delivered (DESIGN.md, Guarantees 3).

A worker's failure, from code (all importable from ``queuepipe``):

==========================================  =================================================
name                                        what it gives
==========================================  =================================================
``pipe.failure``                            the run's first failure, a :class:`WorkerFailure`,
                                            or None (reset when the pipeline's next run starts)
``WorkerFailure.exception``                 the original exception object (process workers:
                                            rebuilt, the child's traceback as ``__cause__``)
``WorkerFailure.worker_index``              worker ``worker_index`` of ``worker_count`` failed
``WorkerFailure.worker_count``              (from 0, as ``worker_info().index``)
``WorkerFailure.mode``                      ``"thread"`` or ``"process"``
``WorkerFailure.traceback_text``            the worker's traceback, formatted
``worker_failure(error, pipeline=None)``    the :class:`WorkerFailure` behind ``error`` -- the
                                            ``OpError`` a ``sess.run`` raised for it, or (with
                                            ``pipeline``) the original exception -- or None
``original_error(error, pipeline=None)``    its original exception (as ``running()`` raises
                                            it), or ``error`` itself when no worker failure is
                                            behind it: ``raise original_error(e) from e``
==========================================  =================================================

Internal signals, never seen by users:

* :class:`EndOfStream` -- a worker has delivered everything (its tail included), or its
  run is stopping; the runtime then raises ``StopIteration`` from ``pull``, which TF
  turns into ``OutOfRangeError`` for that worker's enqueue op (TF1's end-of-data rule).
* :class:`FailureSignal` -- carries a :class:`WorkerFailure` (the record) from a worker's
  loop or process backend to the runtime, which keeps the first one of the run and
  hands the graph a *poison block*: a block whose ``error`` string is set, so the
  dequeue gate raises the failure behind the data already queued.
"""
from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # annotations only: importing the TF layer imports TensorFlow
    from .tf.pipeline import Pipeline


class QueuepipeError(Exception):
    """Base class of queuepipe's own errors."""


class ArgumentError(QueuepipeError, ValueError):
    """An argument of a queuepipe entry point has a value it cannot take."""


class ArgumentTypeError(QueuepipeError, TypeError):
    """An argument of a queuepipe entry point has a type it cannot take."""


class MissingDependencyError(QueuepipeError, ImportError):
    """A setting asks for an optional package that is not installed."""


class GraphModeError(QueuepipeError, RuntimeError):
    """A pipeline (TF1 graph ops: queues, queue runners) was built while TensorFlow runs eagerly."""


class SpecError(QueuepipeError, ValueError):
    """A sample or block does not match the declared output structure, dtype or shape."""


class WorkerDiedError(QueuepipeError, RuntimeError):
    """A worker process ended without saying why (killed by a signal, crashed in C code)."""


class WorkerStalledError(QueuepipeError, TimeoutError):
    """A worker spent longer than ``stall_timeout`` seconds producing one block."""


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


class RecordInputError(QueuepipeError, ValueError):
    """Record files that cannot be read as asked (found while the pipeline is built)."""


class RecordFileNotFoundError(RecordInputError, FileNotFoundError):
    """A record file (or a glob pattern) does not exist."""


class RecordReadError(QueuepipeError, OSError):
    """A record read failed while the pipeline ran (checksum mismatch, file changed or truncated)."""


class ExampleParseError(QueuepipeError, ValueError):
    """A record is not a valid ``tf.train.Example``, or does not have the features asked for."""


class ResumeError(QueuepipeError, RuntimeError):
    """A resumable pipeline cannot start from the position its session holds."""


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


def worker_label(index: int, count: int) -> str:
    """How every message names a worker: ``worker 1 of 4``."""
    return f"worker {index} of {count}"


class WorkerFailure:
    """A worker's failure: the original exception and the worker it came from (public:
    ``pipe.failure``, :func:`worker_failure`; made by queuepipe, never by users).

    ``exception``: the original exception object (same type, message and attributes).  For
    a thread worker it is the very object user code raised, with its own ``__traceback__``;
    for a process worker it was rebuilt in the parent and its ``__cause__`` is a
    :class:`RemoteTraceback` with the child's traceback text.  A failure of queuepipe's own
    (a dead or stalled worker process, a failed HDF5 read, a sample that does not match the
    spec) is a :class:`QueuepipeError` here.
    ``worker_index`` / ``worker_count``: worker ``worker_index`` of ``worker_count`` (from 0,
    as :func:`queuepipe.worker_info`); ``mode``: ``"thread"`` or ``"process"``;
    ``traceback_text``: where in the worker it was raised, formatted.
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
        return f"queuepipe {worker_label(self.worker_index, self.worker_count)} ({self.mode})"

    def summary(self) -> str:
        """One line: which worker failed with what."""
        return f"{self.where} failed: {type(self.exception).__name__}: {self.exception}"

    def to_raise(self) -> BaseException:
        """The original exception as queuepipe raises it (in ``sess.run``'s gate and from
        ``running()``): :attr:`exception`, annotated once with the failing worker's identity."""
        if not self._noted:
            add_note(self.exception, f"(raised in {self.where}; queuepipe stopped the pipeline)")
            self._noted = True
        return self.exception

    def __repr__(self) -> str:
        return f"<queuepipe.WorkerFailure {self.where}: {type(self.exception).__name__}: {self.exception}>"


def worker_failure(error: BaseException, pipeline: Optional["Pipeline"] = None) -> Optional[WorkerFailure]:
    """The :class:`WorkerFailure` behind ``error``, or None when none is.

    ``error``: the ``tf.errors.OpError`` a ``sess.run`` raised because a worker failed (its
    failing op is the pipeline's error gate, which names the pipeline), or the original
    exception itself (``running()`` raises it; give ``pipeline`` then).  ``pipeline``: look
    only at this pipeline's failure -- needed when ``error`` names no op (an error made or
    re-raised elsewhere).  The failure is the pipeline's current run's: it is there until
    the pipeline's next run starts (a new session), even after ``running()`` has ended."""
    failure = _failure_to_match(error, pipeline)
    if failure is None:
        return None
    if error is failure.exception:
        return failure
    if _is_op_error(error) and type(failure.exception).__name__ in str(getattr(error, "message", "")):
        return failure  # the gate's message always carries the original type
    return None


def original_error(error: BaseException, pipeline: Optional["Pipeline"] = None) -> BaseException:
    """The original exception of the worker failure behind ``error`` (see :func:`worker_failure`),
    as ``running()`` raises it -- or ``error`` itself when no worker failure is behind it.

    So ``except tf.errors.OpError as e: raise queuepipe.original_error(e) from e`` raises the
    user's own exception (``KeyError``, ``RecordError``...) for a failed worker and leaves
    every other error as it was."""
    failure = worker_failure(error, pipeline)
    return failure.to_raise() if failure is not None else error


def _failure_to_match(error: BaseException, pipeline: Optional["Pipeline"]) -> Optional[WorkerFailure]:
    """The failure ``error`` may report: ``pipeline``'s, or that of the pipeline whose op the
    ``OpError`` names; None when the op belongs to another pipeline than ``pipeline``."""
    op = getattr(error, "op", None) if _is_op_error(error) else None
    runner = _runner_of(op)
    if pipeline is None:
        return runner.runtime.failure if runner is not None else None
    if runner is not None and runner is not pipeline.runner:
        return None  # the error gate of another pipeline
    return pipeline.failure


def _is_op_error(error: Any) -> bool:
    """Whether ``error`` is a ``tf.errors.OpError`` (only if TensorFlow is imported already)."""
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return errors is not None and isinstance(error, errors.OpError)


def _runner_of(op: Any) -> Any:
    """The queuepipe queue runner whose pipeline ``op`` belongs to, or None."""
    if op is None:
        return None
    from .tf.session import runner_of_op  # TensorFlow is imported: ``op`` is one of its ops
    return runner_of_op(op)


class EndOfStream(Exception):
    """Internal signal: the worker has delivered everything, its tail included (or is stopping)."""


class FailureSignal(Exception):
    """Internal signal: a worker's user code or data failed; carries the :class:`WorkerFailure`."""

    def __init__(self, failure: WorkerFailure):
        super().__init__(failure.summary())
        self.failure = failure
