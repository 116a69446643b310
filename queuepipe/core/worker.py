"""One worker's loop: a source's chunks through a batcher, with failures captured.

The same loop runs inside a thread worker (called from the enqueue op) and inside a
child process (which ships its blocks to the parent); only the transport differs.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, List, Optional

import numpy as np

from . import worker_info as wi
from .batching import Batcher, Block
from .errors import WorkerFailure


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
