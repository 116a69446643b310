"""Step 1 of the data path: where samples come from.

A *source* turns the user's data into *column chunks* for one worker: a list with one
ndarray per output field (spec order), each with a leading row dimension.  Two sources
implement :class:`Source`, siblings here: :mod:`.generator` (the user's Python
generator) and :mod:`.hdf5` (planned block reads of selected HDF5 rows).  A source is
picklable: process workers receive it inside their :class:`~queuepipe.workers.worker.WorkerPlan`.
Nothing here imports TensorFlow.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Protocol

import numpy as np

from ..spec import Spec
from ..workers.buffers import BlockAllocator


class Source(Protocol):
    """What a worker's loop needs from a source."""

    spec: Spec  # the pipeline's output structure; chunks are converted and checked against it

    def chunks(self, where: str, on_epoch: Callable[[int], None],
               allocate: BlockAllocator) -> Iterator[List[np.ndarray]]:
        """The column chunks of the worker running this call, epoch after epoch.

        where: names the worker in error messages ("worker 1 of 4").
        on_epoch: called with the epoch number as each epoch begins (keeps
            ``worker_info().epoch`` current).
        allocate: where to put chunks the source reads itself (a shared-memory slot in a
            worker process), so a block is written once, where the parent reads it.
        """
        ...
