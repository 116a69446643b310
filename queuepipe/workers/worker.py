"""One worker's loop: a source's chunks through a batcher, with failures captured.

The same loop runs inside a thread worker (called from the enqueue op) and inside a
child process (which ships its blocks to the parent); only the transport differs.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional

import numpy as np

from . import info as wi
from .batching import Batcher
from .buffers import Block
from ..errors import WorkerFailure
from ..spec import Spec
from .info import WorkerInfo, derive_seed


class EndOfStream(Exception):
    """The worker has delivered everything, its tail included."""


class WorkerFailed(Exception):
    """A worker's user code or data failed; carries the :class:`WorkerFailure`."""

    def __init__(self, failure: WorkerFailure):
        super().__init__(failure.summary())
        self.failure = failure


ChunkSource = Callable[[str, Callable[[int], None]], Iterator[List[np.ndarray]]]


class WorkerLoop:
    """Produces one worker's blocks on demand; user code runs with ``worker_info()`` set."""

    def __init__(self, chunks: ChunkSource, batcher: Batcher, info: wi.WorkerInfo):
        self.info = info
        self._chunks = chunks
        self._batcher = batcher
        self._blocks: Optional[Iterator[Block]] = None
        self._done = False

    @property
    def where(self) -> str:
        return f"worker {self.info.index} of {self.info.count}"

    def _on_epoch(self, epoch: int) -> None:
        self.info = dataclasses.replace(self.info, epoch=epoch)
        wi._local.info = self.info  # we are inside acting_as(): keep worker_info() current
        if self.info.mode == "process":
            wi.set_process_worker(self.info)

    def next_block(self) -> Block:
        """The next block; raises EndOfStream when done, WorkerFailed on any error."""
        if self._done:
            raise EndOfStream()
        with wi.acting_as(self.info):
            try:
                if self._blocks is None:
                    self._blocks = self._batcher.blocks(self._chunks(self.where, self._on_epoch))
                return next(self._blocks)
            except StopIteration:
                self._done = True
                raise EndOfStream() from None
            except BaseException as exc:  # noqa: BLE001 - every failure must reach the user
                self._done = True
                self._blocks = None
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                raise WorkerFailed(WorkerFailure(exc, self.info.index, self.info.count,
                                                 self.info.mode)) from None

    def close(self) -> None:
        """Close the user's generator (runs its ``finally`` blocks); safe to call twice."""
        blocks, self._blocks, self._done = self._blocks, None, True
        if blocks is not None:
            try:
                with wi.acting_as(self.info):
                    blocks.close()
            except Exception:  # a generator that fails while closing must not break shutdown
                pass


@dataclass
class WorkerPlan:
    """How to build worker ``index`` of ``count``: its source, batching and seeding.

    ``source`` has ``chunks(where, on_epoch)`` (a generator or HDF5 source).
    """

    source: Any
    spec: Spec
    count: int
    batch_size: int
    max_batches: int
    shuffle_rows: int
    seed: int
    time_budget: float = 0.05

    def make_loop(self, index: int, mode: str) -> WorkerLoop:
        worker_seed = derive_seed(self.seed, index)
        info = WorkerInfo(index=index, count=self.count, seed=worker_seed, mode=mode)
        spec = copy.deepcopy(self.spec) if mode == "thread" else self.spec
        batcher = Batcher(spec, self.batch_size, self.max_batches, self.shuffle_rows,
                          rng=np.random.default_rng(derive_seed(self.seed, index, salt=1)),
                          time_budget=self.time_budget)
        source = self.source
        if hasattr(source, "for_spec"):
            source = source.for_spec(spec)
        return WorkerLoop(source.chunks, batcher, info)


class ThreadBackend:
    """A worker hosted in the calling thread: the enqueue op's ``py_func`` runs the loop."""

    def __init__(self, plan: WorkerPlan, index: int):
        self.loop = plan.make_loop(index, "thread")

    def next_block(self) -> Block:
        return self.loop.next_block()

    def interrupt(self) -> None:
        pass  # user code in a thread cannot be interrupted; the next pull sees the stop

    def close(self) -> None:
        self.loop.close()
