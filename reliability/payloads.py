"""Generators and ``map_fn`` callables the trials hand to queuepipe.

Module-level and TF-free: a worker process unpickles them in a fresh interpreter that must
not import TensorFlow.  Every row carries its identity, so delivery is checkable:

* generator rows are ``[worker index, k, check]`` with ``k`` the worker's own counter and
  ``check = f(worker, k)``, so a duplicated, lost or corrupted row is visible;
* :class:`FailingMap` is a ``map_fn`` that raises a chosen exception at its n-th call.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict

import numpy as np

import queuepipe


def check_value(worker: Any, k: Any) -> Any:
    """The third column of a generator row: a function of (worker, k) only."""
    return (np.asarray(k, np.int64) * 31 + np.asarray(worker, np.int64) * 1_000_003 + 7) % 1_000_000_007


class CounterRows:
    """Each worker yields rows ``[index, k, check(index, k)]`` for k = 0, 1, ... (``limit`` rows or
    forever), sleeping ``delay`` s per row (0: none).  ``block`` > 0 yields blocks of that many rows
    (use with ``yields="blocks"``).  The first ``fast_rows`` rows come without delay."""

    def __init__(self, limit: int = -1, delay: float = 0.0, block: int = 0, fast_rows: int = 0):
        self.limit, self.delay, self.block, self.fast_rows = limit, delay, block, fast_rows

    def __call__(self):
        info = queuepipe.worker_info()
        w = info.index if info is not None else 0
        k = 0
        while self.limit < 0 or k < self.limit:
            if self.delay and k >= self.fast_rows:
                time.sleep(self.delay)
            if self.block:
                n = self.block if self.limit < 0 else min(self.block, self.limit - k)
                ks = np.arange(k, k + n, dtype=np.int64)
                yield np.stack([np.full(n, w, np.int64), ks, check_value(w, ks)], axis=1)
                k += n
            else:
                yield np.array([w, k, check_value(w, k)], np.int64)
                k += 1


class ShardedIds:
    """Ids ``0..total-1`` dealt to workers (worker w: ids w, w+count, ...), as blocks of ``block``
    rows of ``[id, id * 3 + 1]`` -- the soak's stream."""

    def __init__(self, total: int, block: int):
        self.total, self.block = total, block

    def __call__(self):
        info = queuepipe.worker_info()
        w, count = (info.index, info.count) if info is not None else (0, 1)
        ids = np.arange(w, self.total, count, dtype=np.int64)
        for s in range(0, len(ids), self.block):
            part = ids[s:s + self.block]
            yield np.stack([part, part * 3 + 1], axis=1)


class MapFault(ValueError):
    """The exception class a failing ``map_fn`` raises in some trials (a user-defined type)."""


EXCEPTIONS = {"MapFault": MapFault, "ValueError": ValueError, "KeyError": KeyError,
              "RuntimeError": RuntimeError, "ZeroDivisionError": ZeroDivisionError,
              "TypeError": TypeError}


def transform(x: np.ndarray) -> np.ndarray:
    """What :class:`FailingMap` does to the float data before it fails: checkable per row."""
    return np.asarray(x, np.float64) * 2.0 + 1.0


class FailingMap:
    """``map_fn`` for ``from_hdf5(..., datasets={"x": ..., "id": ...}, with_row_ids=True)``: returns
    ``{"y": transform(x), "row_id": row_id}`` and raises ``exc`` with ``message`` at call number
    ``fail_at`` (1-based, counted per worker process; in thread mode per object)."""

    def __init__(self, fail_at: int, exc: str, message: str):
        self.fail_at, self.exc, self.message = fail_at, exc, message
        self._calls = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> Dict[str, Any]:
        return {"fail_at": self.fail_at, "exc": self.exc, "message": self.message}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._calls = 0
        self._lock = threading.Lock()

    def __call__(self, sample: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._lock:
            self._calls += 1
            calls = self._calls
        if calls == self.fail_at:
            if self.exc == "ZeroDivisionError":
                raise ZeroDivisionError(self.message)
            raise EXCEPTIONS[self.exc](self.message)
        return {"y": transform(sample["x"]), "row_id": np.asarray(sample["row_id"], np.int64)}
