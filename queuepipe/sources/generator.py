"""Where samples come from when the user hands us a Python generator.

Two forms: a *callable* returning an iterator (called once per worker and per epoch,
so every worker runs its own instance), or an *iterator object* shared by all workers
behind a lock (never stepped by two workers at once: only conversion and enqueueing
overlap with training then).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..spec import Spec
from ..workers.buffers import BlockAllocator, aligned_block
from ..workers.info import worker_info
from ..workers.resume import ResumePoint, StreamLedger


def _detached(sample: Any) -> Any:
    """The sample with its arrays copied: generators may refill one buffer after each yield."""
    if isinstance(sample, np.ndarray):
        return sample.copy()
    if isinstance(sample, tuple):
        return tuple(v.copy() if isinstance(v, np.ndarray) else v for v in sample)
    if isinstance(sample, list):
        return [v.copy() if isinstance(v, np.ndarray) else v for v in sample]
    if isinstance(sample, dict):
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sample.items()}
    return sample


class SharedIterator:
    """One iterator stepped by many workers, one ``next`` at a time."""

    def __init__(self, iterator: Iterator[Any]):
        self._it = iterator
        self._lock = threading.Lock()
        self._exhausted = False

    def take(self, max_items: int, time_budget: float) -> List[Any]:
        """Up to ``max_items`` items (fewer at the end or when time runs out)."""
        items: List[Any] = []
        with self._lock:
            started = time.monotonic()
            while not self._exhausted and len(items) < max_items:
                try:
                    items.append(next(self._it))
                except StopIteration:
                    self._exhausted = True
                    break
                if time.monotonic() - started > time_budget:
                    break
        return items

    @property
    def exhausted(self) -> bool:
        return self._exhausted


class GeneratorSource:
    """Column chunks from the user's generator for one worker, epoch after epoch.

    ``yields`` is ``"samples"`` (each item one sample) or ``"blocks"`` (each item a
    structure of arrays with a leading row dimension -- the fast path).
    ``num_epochs`` None repeats forever (a callable is called again per epoch).
    ``ledger``: set for a resumable pipeline: the callable is called as ``generator(start=k)``
    (``k`` samples of this worker's epoch were used already: it must begin with sample
    ``k``), and every chunk ends with a column of position labels
    (:class:`~queuepipe.workers.resume.StreamLedger`).
    """

    def __init__(self, generator: Any, spec: Spec, *, yields: str = "samples",
                 num_epochs: Optional[int] = 1, chunk_rows: int = 128, time_budget: float = 0.05,
                 ledger: Optional[StreamLedger] = None):
        if yields not in ("samples", "blocks"):
            raise ArgumentError(f"yields must be 'samples' or 'blocks', got {yields!r}")
        self.spec = spec
        self.yields = yields
        self.num_epochs = num_epochs
        self.chunk_rows = chunk_rows
        self.time_budget = time_budget
        self.ledger = ledger
        if callable(generator) and not hasattr(generator, "__next__"):
            self.factory: Optional[Callable[[], Any]] = generator
            self.shared: Optional[SharedIterator] = None
        elif hasattr(generator, "__next__"):
            self.factory = None
            self.shared = SharedIterator(generator)
        else:
            raise ArgumentTypeError("generator must be a callable returning an iterator (e.g. obj.generate_data) "
                            f"or an iterator object, got {type(generator).__name__}")

    def chunks(self, where: str, on_epoch: Callable[[int], None],
               allocate: BlockAllocator = aligned_block, resume: Optional[ResumePoint] = None,
               remaining: Any = None) -> Iterator[List[np.ndarray]]:
        """Column chunks for one worker (:meth:`queuepipe.sources.Source.chunks`).

        The worker's spec is locked to its first data's unknown dims, for all its epochs.
        ``allocate`` is not used: converted samples are new arrays already, which the
        batcher copies into the worker's blocks.  Resumed, the worker's generator starts
        where ``resume.starts`` says for it (``remaining`` is for HDF5 sources)."""
        spec = self.spec
        info = worker_info()
        index = info.index if info is not None else 0
        first_epoch, start = resume.starts[index] if resume is not None and resume.starts else (0, 0)
        epoch, row = first_epoch, start
        for kind, raw, label, chunk_epoch in self._raw_chunks(where, on_epoch, first_epoch, start):
            if kind == "block":
                cols = spec.columns_from_block(raw, label)
            else:
                cols = spec.columns_from_samples(raw, label)
            spec = spec.locked(cols)
            if self.ledger is not None:
                if chunk_epoch != epoch:
                    epoch, row = chunk_epoch, 0
                n = len(cols[0])
                cols = list(cols) + [self.ledger.labels(index, epoch, row, n)]
                row += n
            yield cols

    def _raw_chunks(self, where: str, on_epoch: Callable[[int], None], first_epoch: int = 0,
                    start: int = 0) -> Iterator[Tuple[str, Any, str, int]]:
        """("block", one yielded block, label, epoch) or ("samples", a list of samples, label,
        epoch), unconverted."""
        if self.shared is not None:
            for kind, raw, label in self._shared_raw(where):
                yield kind, raw, label, 0
            return
        epoch = first_epoch
        while self.num_epochs is None or epoch < self.num_epochs:
            on_epoch(epoch)
            if self.ledger is not None:
                iterator = iter(self.factory(start=start if epoch == first_epoch else 0))
            else:
                iterator = iter(self.factory())
            try:
                for kind, raw, label in self._iterator_raw(iterator, f"{where}, epoch {epoch}"):
                    yield kind, raw, label, epoch
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
            epoch += 1

    def _iterator_raw(self, iterator: Iterator[Any], where: str) -> Iterator[Tuple[str, Any, str]]:
        if self.yields == "blocks":
            for i, block in enumerate(iterator):
                yield "block", block, f"{where}, block {i}"
            return
        count = 0
        exhausted = False
        while not exhausted:
            items: List[Any] = []
            started = time.monotonic()
            try:
                for item in iterator:
                    items.append(_detached(item))
                    if len(items) >= self.chunk_rows or time.monotonic() - started > self.time_budget:
                        break
                else:
                    exhausted = True
            except Exception:
                if items:  # the samples before the failure are data: hand them over, then fail
                    yield "samples", items, f"{where}, items {count}..{count + len(items) - 1}"
                raise
            if items:
                yield "samples", items, f"{where}, items {count}..{count + len(items) - 1}"
                count += len(items)

    def _shared_raw(self, where: str) -> Iterator[Tuple[str, Any, str]]:
        while True:
            items = self.shared.take(1 if self.yields == "blocks" else self.chunk_rows, self.time_budget)
            if not items:
                return
            if self.yields == "blocks":
                yield "block", items[0], f"{where}, shared iterator block"
            else:
                yield "samples", [_detached(item) for item in items], f"{where}, shared iterator"
