"""One worker: its plan (how to build worker i of n), its loop, and the thread backend.

The same :class:`WorkerLoop` runs in a thread worker (called from the queue runner's
thread, see :meth:`queuepipe.workers.runtime.PipelineRuntime.prefetch`) and in a child
process (:mod:`queuepipe.workers.process.child`, which ships its blocks to the
parent); only the transport and the block allocator differ.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Iterator, List, NoReturn, Optional

import numpy as np

from ..errors import EndOfStream, FailureSignal, WorkerFailure, worker_label
from ..spec import Spec
from . import info as wi
from .batching import Batcher, Chunk, NewEpoch
from .buffers import Block, BlockAllocator, aligned_block
from .resume import ResumePoint, epoch_order

if TYPE_CHECKING:  # the type only: sources import this package's buffers, not the reverse
    from ..sources import Source


class WorkerLoop:
    """Produces one worker's blocks on demand; user code runs with ``worker_info()`` set.

    ``epochs_in_order``: mark each new epoch in the chunk stream (:class:`NewEpoch`), so
    the batcher ends an epoch before the next begins (see :mod:`.delivery`).
    ``stop``: the run's stop event (thread workers): looked at between chunks, so a worker
    whose source is slow (a row every second, a batch every minute) ends within one chunk
    of a stop instead of after the block it is filling.

    A failing source loses no whole batch: its exception ends the chunk stream
    (:meth:`_until_failure`), the batcher hands out, block by block, every whole batch of
    the rows it holds (shuffle buffer included), and only the call after the last of them
    raises the failure.  The rows left over (fewer than a batch, the final tail) are dropped:
    they were never a batch, and after a failure nothing follows them but the failure
    (DESIGN.md, Guarantees 3)."""

    def __init__(self, source: Source, batcher: Batcher, info: wi.WorkerInfo,
                 allocate: BlockAllocator = aligned_block, epochs_in_order: bool = True,
                 stop: Optional[threading.Event] = None, resume: Optional[ResumePoint] = None,
                 remaining: Optional[Dict[int, np.ndarray]] = None):
        self.info = info
        self._resume = resume
        self._remaining = remaining
        self._source = source
        self._batcher = batcher
        self._allocate = allocate
        self._epochs_in_order = epochs_in_order
        self._stop = stop
        self.progress = wi.Progress()  # watched when the pipeline has a stall_timeout
        self._blocks: Optional[Iterator[Block]] = None
        self._ended = False  # the source is exhausted or failed: nothing more will come
        self._failure: Optional[WorkerFailure] = None  # the source's failure, raised once its whole batches are out

    @property
    def where(self) -> str:
        return worker_label(self.info.index, self.info.count)

    def _on_epoch(self, epoch: int) -> None:
        self.info = dataclasses.replace(self.info, epoch=epoch)
        wi.set_current(self.info)  # we are inside acting_as(): keep worker_info() current
        if self.info.mode == "process":
            wi.set_process_worker(self.info)

    def next_block(self) -> Block:
        """The next block; raises EndOfStream when done, FailureSignal on any error."""
        if self._ended:
            raise EndOfStream()
        progress = self.progress
        progress.note(self._producing)
        progress.busy_since = time.monotonic()
        with wi.acting_as(self.info), wi.tracking(progress):
            try:
                if self._blocks is None:
                    if self._resume is not None:
                        chunks = self._source.chunks(self.where, self._on_epoch, self._allocate,
                                                     self._resume, self._remaining)
                    else:
                        chunks = self._source.chunks(self.where, self._on_epoch, self._allocate)
                    self._blocks = self._batcher.blocks(self._marked(self._until_failure(chunks)))
                block = next(self._blocks)
            except StopIteration:
                self._ended = True
                if self._failure is not None:
                    raise FailureSignal(self._failure) from None
                raise EndOfStream() from None
            except BaseException as exc:  # noqa: BLE001 - every failure must reach the user
                self._ended = True
                self._blocks = None
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                raise FailureSignal(self._failure or self._failure_of(exc)) from None
            finally:
                progress.busy_since = None
        if block.tail and self._failure is not None:
            self._fail_after(block)
        return block

    def _failure_of(self, exc: BaseException) -> WorkerFailure:
        return WorkerFailure(exc, self.info.index, self.info.count, self.info.mode)

    def _fail_after(self, tail: Block) -> NoReturn:
        """The source failed and ``tail`` -- the rows left after its last whole batch -- is the
        batcher's last block: drop it and raise the failure now."""
        self.close()
        raise FailureSignal(self._failure)

    def _until_failure(self, chunks: Iterable[List[np.ndarray]]) -> Iterator[List[np.ndarray]]:
        """The source's chunks until it raises; its exception is then kept (with the traceback
        of where it was raised) and the stream ends as if exhausted, so the batcher first hands
        out the whole batches it holds (see the class doc)."""
        iterator = iter(chunks)
        try:
            while True:
                try:
                    cols = next(iterator)
                except StopIteration:
                    return
                except (KeyboardInterrupt, SystemExit, GeneratorExit):
                    raise
                except BaseException as exc:  # noqa: BLE001 - every failure must reach the user
                    self._failure = self._failure_of(exc)
                    return
                yield cols
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # stopped early (a stop, close()): the source's finally blocks run now

    def _producing(self) -> str:
        return f"{self.where}, epoch {self.info.epoch}: producing a block (in the source)"

    def _marked(self, chunks: Iterable[List[np.ndarray]]) -> Iterator[Chunk]:
        """The source's chunks, with a :class:`NewEpoch` before the first chunk of each epoch
        after the first when epochs go in order (the source calls ``on_epoch`` before yielding
        an epoch's first chunk); they end early once the run's stop event is set."""
        current = self.info.epoch
        stop = self._stop
        for cols in chunks:
            if stop is not None and stop.is_set():
                return
            if self._epochs_in_order and self.info.epoch != current:
                current = self.info.epoch
                yield NewEpoch(current)
            yield cols

    def close(self) -> None:
        """Close the user's generator (runs its ``finally`` blocks); safe to call twice."""
        blocks, self._blocks, self._ended = self._blocks, None, True
        if blocks is not None:
            try:
                with wi.acting_as(self.info):
                    blocks.close()
            except Exception:  # a generator that fails while closing must not break shutdown
                pass


@dataclass(frozen=True)
class WorkerPlan:
    """How to build worker ``index`` of ``count``: its source, batching and seeding.

    Picklable: a process worker receives it whole.  ``seed`` is the pipeline's base
    seed; each worker derives its own (``worker_info().seed``) and its shuffle stream.
    """

    source: Source
    spec: Spec
    count: int
    batch_size: int
    batches_per_block: int
    shuffle_rows: int
    seed: int
    time_budget: float = 0.05
    overlap_epochs: bool = False
    stall_timeout: Optional[float] = None

    def epoch_rng(self, index: int) -> Callable[[int], np.random.Generator]:
        """Worker ``index``'s shuffle stream for each epoch: one per epoch, so an epoch's order
        depends on the seed and the epoch alone (a resumed worker can recompute it)."""
        base = wi.derive_seed(self.seed, index, salt=1)
        return lambda epoch: np.random.default_rng([base, int(epoch)])

    def make_loop(self, index: int, mode: str, allocate: BlockAllocator = aligned_block,
                  stop: Optional[threading.Event] = None, resume: Optional[ResumePoint] = None) -> WorkerLoop:
        """Worker ``index``'s loop; ``resume`` (a resumable pipeline restarted from a checkpoint):
        the interrupted run's seed, and where this worker starts."""
        if resume is not None and resume.seed != self.seed:
            reseeded = getattr(self.source, "reseeded", None)
            source = reseeded(resume.seed) if reseeded is not None else self.source
            return dataclasses.replace(self, seed=resume.seed, source=source).make_loop(
                index, mode, allocate, stop, resume)
        epoch_tails = not self.overlap_epochs and self.count > 1
        first_epoch, remaining = 0, None
        if resume is not None:
            if resume.starts:
                first_epoch = resume.starts[index][0]
            else:
                first_epoch = resume.first_epoch
                remaining = self.source.remaining(resume, index, self.count, self._order_of(index, epoch_tails))
        info = wi.WorkerInfo(index=index, count=self.count, seed=wi.derive_seed(self.seed, index), mode=mode,
                             epoch=first_epoch)
        batcher = Batcher(self.spec, self.batch_size, self.batches_per_block, self.shuffle_rows,
                          epoch_rng=self.epoch_rng(index), first_epoch=first_epoch,
                          ordered_epochs=remaining or (), time_budget=self.time_budget, allocate=allocate,
                          epoch_tails=epoch_tails)
        return WorkerLoop(self.source, batcher, info, allocate, epochs_in_order=not self.overlap_epochs,
                          stop=stop, resume=resume, remaining=remaining)

    def _order_of(self, index: int, epoch_tails: bool) -> Callable[[int, List[np.ndarray]], np.ndarray]:
        """How worker ``index``'s batcher orders the positions of one epoch (see :func:`.resume.epoch_order`).
        With one worker and epochs in order, the previous epoch's last rows head the epoch's
        first batch: ``(epoch * rows per epoch) % batch_size`` of them."""
        rngs = self.epoch_rng(index)

        def order_of(epoch: int, chunks: List[np.ndarray]) -> np.ndarray:
            rows = sum(len(c) for c in chunks)
            carried = 0 if epoch_tails or self.overlap_epochs else (epoch * rows) % self.batch_size
            return epoch_order(chunks, batch_size=self.batch_size, batches_per_block=self.batches_per_block,
                               shuffle_rows=self.shuffle_rows, rng=rngs(epoch), carried_in=carried)
        return order_of


class ThreadBackend:
    """A worker hosted in the calling thread: the queue runner's thread runs the loop
    (in :meth:`~queuepipe.workers.runtime.PipelineRuntime.prefetch`), user code included.

    User code running in a thread cannot be interrupted: ``stop`` (the run's stop event) is
    looked at between the source's chunks (:class:`WorkerLoop`), and by the runtime before
    every pull."""

    def __init__(self, plan: WorkerPlan, index: int, stop: threading.Event, resume: Optional[ResumePoint] = None):
        self.loop = plan.make_loop(index, "thread", stop=stop, resume=resume)
        self.progress = self.loop.progress  # the runtime's stall watch reads it

    def next_block(self) -> Block:
        return self.loop.next_block()

    def close(self) -> None:
        self.loop.close()
