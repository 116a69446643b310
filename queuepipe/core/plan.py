"""Everything needed to build one worker, in a form that pickles to a child process."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import Batcher, Block
from .spec import Spec
from .worker import WorkerLoop
from .worker_info import WorkerInfo, derive_seed


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
