"""Who am I? -- the per-worker identity a user generator can ask for.

A worker is a thread or a child process that runs one instance of the user's
generator (or one HDF5 reader).  ``worker_info()`` lets that code take its own
shard of a finite dataset and seed its own random stream.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union


@dataclass(frozen=True)
class WorkerInfo:
    """Identity of the worker running the current code.

    index: 0-based worker number; count: number of workers of the pipeline;
    seed: a per-worker seed derived from the pipeline's seed (distinct per worker
    and per epoch-independent), so random generators do not produce identical
    streams; mode: "thread" or "process"; epoch: the 0-based epoch being produced.
    """

    index: int
    count: int
    seed: int
    mode: str = "thread"
    epoch: int = 0


class Progress:
    """What one worker is doing, for the stall watch (``stall_timeout``): since when it has
    been producing its current block (None: not producing -- waiting for the consumer
    counts as progress), and a line saying what it is at ("reading FILE rows a..b").

    ``listener``: called with each new activity line (a worker process sends it to the
    parent, which watches the time).  An activity may be given as a callable returning the
    line: it is then only worded when someone asks (the hot path pays for a lambda)."""

    def __init__(self) -> None:
        self.busy_since: Optional[float] = None
        self._activity: Union[str, Callable[[], str]] = ""
        self.listener: Optional[Callable[[str], None]] = None

    @property
    def activity(self) -> str:
        activity = self._activity
        return activity if isinstance(activity, str) else activity()

    def note(self, activity: Union[str, Callable[[], str]]) -> None:
        self._activity = activity
        if self.listener is not None:
            self.listener(self.activity)


_local = threading.local()
_process_info: Optional[WorkerInfo] = None


def worker_info() -> Optional[WorkerInfo]:
    """Return the current worker's :class:`WorkerInfo`, or ``None`` outside a worker."""
    info = getattr(_local, "info", None)
    return info if info is not None else _process_info


def set_current(info: WorkerInfo) -> None:
    """Replace this thread's current worker identity (inside :func:`acting_as`: a new epoch)."""
    _local.info = info


@contextmanager
def acting_as(info: WorkerInfo) -> Iterator[None]:
    """Make ``worker_info()`` return ``info`` in this thread while user code runs."""
    previous = getattr(_local, "info", None)
    _local.info = info
    try:
        yield
    finally:
        _local.info = previous


def note_activity(activity: Union[str, Callable[[], str]]) -> None:
    """Say what the worker running in this thread is doing (shown if it stalls); no-op outside a worker."""
    progress = getattr(_local, "progress", None)
    if progress is not None:
        progress.note(activity)


@contextmanager
def tracking(progress: Progress) -> Iterator[None]:
    """:func:`note_activity` calls in this thread report to ``progress`` meanwhile."""
    previous = getattr(_local, "progress", None)
    _local.progress = progress
    try:
        yield
    finally:
        _local.progress = previous


def set_process_worker(info: Optional[WorkerInfo]) -> None:
    """Declare this whole process to be a worker (used by child processes)."""
    global _process_info
    _process_info = info


def derive_seed(base_seed: Optional[int], worker_index: int, salt: int = 0) -> int:
    """A 63-bit seed for one worker, stable for a given pipeline seed."""
    import numpy as np

    entropy = [int(base_seed) if base_seed is not None else 0x5EED, worker_index, salt]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
