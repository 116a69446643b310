"""The messages between the parent and a worker process, one small frozen dataclass each.

Sent pickled over the worker's socket (``multiprocessing.connection.Connection``).
Parent -> child: :class:`Setup` once, then :class:`Free` whenever TensorFlow is done
with a slot.  Child -> parent: :class:`BlockInSlot` (the common case: the block's bytes
are in a shared-memory slot, only its layout travels), :class:`BlockInline` (rare: a
block that fits no free slot travels pickled), then :class:`End` or :class:`Failed`
as the last message.  The slot protocol these carry is in DESIGN.md ("The slot protocol").
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

# (dtype str, shape, byte offset in slot) per numeric column; None for an object column
ColumnMeta = Optional[Tuple[str, Tuple[int, ...], int]]


@dataclass(frozen=True)
class Setup:
    """Everything a fresh child interpreter needs to become worker ``index``."""

    sys_path: List[str]
    main: dict           # how to import the parent's __main__ ({} when the plan does not need it)
    plan: bytes          # the pickled WorkerPlan (unpickled after sys.path and __main__ are set)
    index: int
    n_slots: int
    slot_bytes: int
    resume: Optional[bytes] = None  # a pickled ResumePoint: where a resumable pipeline's run starts


@dataclass(frozen=True)
class BlockInSlot:
    """A block written in shared-memory slot ``slot``: numeric columns by ``metas``, object
    (string) columns pickled in ``objects`` (None where the column is numeric)."""

    slot: int
    n_rows: int
    n_batches: int
    tail: bool
    metas: List[ColumnMeta]
    objects: List[Optional[np.ndarray]]
    epoch: int = 0


@dataclass(frozen=True)
class BlockInline:
    """A block sent pickled: larger than a slot, or sent while every slot was held."""

    n_rows: int
    n_batches: int
    tail: bool
    columns: List[Any]
    epoch: int = 0


@dataclass(frozen=True)
class Doing:
    """What the worker starts on now (sent only when the pipeline has a ``stall_timeout``):
    the parent names it if the child then stalls."""

    activity: str


@dataclass(frozen=True)
class End:
    """The worker delivered everything; its last message."""


@dataclass(frozen=True)
class Failed:
    """The worker failed; its last message.  ``exception`` is the exception as
    :func:`pickled_exception` packs it, or None when it cannot travel (the parent then
    rebuilds a RuntimeError from type and text)."""

    exception: Optional[bytes]
    type_name: str
    message: str
    traceback_text: str


@dataclass(frozen=True)
class Free:
    """Parent -> child: TensorFlow is done with ``slot``; the child may write it again."""

    slot: int


def pickled_exception(exc: BaseException) -> Optional[bytes]:
    """``exc`` as bytes the parent unpickles into an exception of the same class, ``args`` and
    attributes (``__notes__`` included), or None when it cannot be rebuilt.

    Pickle's own way first; it calls ``cls(*args)``, which fails for the common user exception
    whose constructor takes more than its message (``RecordError(msg, record)``).  Then by
    state: the class, ``args`` and ``__dict__``, rebuilt without calling ``__init__``
    (:func:`rebuild_exception`).  Either is checked by unpickling it here first.  The chain
    (``__cause__``, ``__context__``) and the traceback do not travel: the parent gets the
    child's traceback text instead."""
    for pack in (pickle.dumps, _pickled_by_state):
        try:
            data = pack(exc)
            pickle.loads(data)
            return data
        except Exception:  # noqa: BLE001 - try the next way, or give up (the caller falls back)
            continue
    return None


def rebuild_exception(cls: type, args: Tuple[Any, ...], state: Dict[str, Any]) -> BaseException:
    """An exception of class ``cls`` with ``args`` and the attributes ``state``, made without
    calling ``cls.__init__`` (the parent's side of :func:`pickled_exception`)."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class _ByState:
    """Pickles as a call of :func:`rebuild_exception` for the exception it wraps."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __reduce__(self):
        exc = self.exc
        return rebuild_exception, (type(exc), tuple(exc.args), dict(getattr(exc, "__dict__", {})))


def _pickled_by_state(exc: BaseException) -> bytes:
    return pickle.dumps(_ByState(exc))
