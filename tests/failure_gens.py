"""Generators, map functions and exceptions for the worker-failure tests (rows before a failure,
the public failure API): module-level and TF-free, so a worker process can unpickle them
without importing TensorFlow (the same rule as ``sample_gens``)."""
from __future__ import annotations

from typing import Iterator, List

import numpy as np

import queuepipe

SIBLING_BASE = 1_000_000  # worker i's rows start at SIBLING_BASE * (i + 1) when it is not the one that fails


class RecordError(Exception):
    """A user exception whose constructor needs more than the message, with attributes of its own
    (pickle's default ``cls(*args)`` cannot rebuild it: the record is no part of ``args``)."""

    def __init__(self, message: str, record: int, *, path: str = "shard-0.bin"):
        super().__init__(message)
        self.record = record
        self.path = path
        self.context = {"record": record, "path": path}


class GoodThenRaise:
    """Worker ``worker`` yields ``0 .. good - 1`` and then raises ``RecordError``; every other worker
    ``k`` yields ``SIBLING_BASE * (k + 1) + i`` without end (``siblings='forever'``), or nothing."""

    def __init__(self, good: int, worker: int = 0, siblings: str = "none"):
        self.good = good
        self.worker = worker
        self.siblings = siblings

    def __call__(self) -> Iterator[int]:
        info = queuepipe.worker_info()
        if info.index != self.worker:
            return sibling_rows(self.siblings, info.index)
        return good_then_raise(self.good)


def good_then_raise(good: int) -> Iterator[int]:
    for i in range(good):
        yield i
    raise RecordError(f"record {good} is damaged", good, path="shard-7.bin")


def sibling_rows(kind: str, index: int) -> Iterator[int]:
    i = 0
    while kind == "forever":
        yield SIBLING_BASE * (index + 1) + i
        i += 1


RAISED: List[BaseException] = []  # the exceptions KeptGoodThenRaise raised in this process


def _kept_raise(good: int) -> Iterator[int]:
    try:
        yield from good_then_raise(good)
    except RecordError as exc:
        RAISED.append(exc)
        raise


class KeptGoodThenRaise:
    """Worker 0 yields ``0 .. good - 1`` and raises a ``RecordError`` that it also keeps in
    :data:`RAISED` (thread workers share the test's process: the test can compare identities)."""

    def __init__(self, good: int):
        self.good = good

    def __call__(self) -> Iterator[int]:
        return _kept_raise(self.good)


def keep_two_of_three(rows: np.ndarray) -> np.ndarray:
    """HDF5 ``map_fn``: drop every row whose id (its first value / 16) is divisible by 3, so a
    block of whole batches becomes an odd number of rows that waits in the batcher."""
    ids = (rows[:, 0] // 16).astype(np.int64)
    return rows[ids % 3 != 0]
