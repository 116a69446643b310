"""Generators for the tests: picklable (module-level classes with ``__call__``) and TF-free.

Process workers unpickle these in a child interpreter that must not import TensorFlow,
so this module imports only numpy and queuepipe (whose top level is TF-free).
"""
from __future__ import annotations

import os
import time
from typing import Iterator

import numpy as np

import queuepipe


def my_shard(n: int) -> range:
    """This worker's share of range(n), by worker_info()."""
    info = queuepipe.worker_info()
    assert info is not None, "worker_info() must be set inside a worker"
    return range(info.index, n, info.count)


class ShardedRange:
    """Yields the worker's shard of range(n) as int64 scalars."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self) -> Iterator[int]:
        for i in my_shard(self.n):
            yield i


class ShardedEpochRange:
    """Yields (value, epoch, worker index) for the worker's shard of range(n)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self):
        info = queuepipe.worker_info()
        for i in my_shard(self.n):
            yield i, info.epoch, info.index


class WholeRange:
    """Every worker yields all of range(n) (no sharding)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self):
        for i in range(self.n):
            yield i


class SlowRange:
    """Like WholeRange, sleeping ``delay`` seconds per item (time-dependent chunking)."""

    def __init__(self, n: int, delay: float):
        self.n = n
        self.delay = delay

    def __call__(self):
        for i in range(self.n):
            time.sleep(self.delay)
            yield i


class InfiniteCounter:
    """Yields (worker index, i) forever; touches ``closed_marker`` in its finally block."""

    def __init__(self, closed_marker: str = "", delay: float = 0.0):
        self.closed_marker = closed_marker
        self.delay = delay

    def __call__(self):
        info = queuepipe.worker_info()
        i = 0
        try:
            while True:
                if self.delay:
                    time.sleep(self.delay)
                yield info.index, i
                i += 1
        finally:
            if self.closed_marker:
                with open(f"{self.closed_marker}.{info.index}", "w") as f:
                    f.write("closed")


class WorkerInfoReporter:
    """Each worker yields ``per_worker`` rows of (index, count, seed, epoch)."""

    def __init__(self, per_worker: int = 3):
        self.per_worker = per_worker

    def __call__(self):
        info = queuepipe.worker_info()
        for _ in range(self.per_worker):
            yield info.index, info.count, info.seed, info.epoch


class ShardedBlocks:
    """yields='blocks': the worker's shard of range(n) cut into blocks of the given sizes (cycled)."""

    def __init__(self, n: int, block_sizes, width: int = 0):
        self.n = n
        self.block_sizes = list(block_sizes)
        self.width = width

    def __call__(self):
        values = np.array(list(my_shard(self.n)), dtype=np.int64)
        assert any(self.block_sizes), "at least one block size must be positive"
        pos, k = 0, 0
        while True:
            size = self.block_sizes[k % len(self.block_sizes)]
            k += 1
            part = values[pos:pos + size]
            pos += len(part)
            if self.width:
                yield part, np.repeat(part[:, None], self.width, axis=1).astype(np.float32)
            else:
                yield part
            if pos >= len(values) and k >= len(self.block_sizes):
                return


class ShardedSamplesWithVector:
    """yields='samples' counterpart of ShardedBlocks(width=w): (i, [i]*w)."""

    def __init__(self, n: int, width: int):
        self.n = n
        self.width = width

    def __call__(self):
        for i in my_shard(self.n):
            yield i, np.full(self.width, i, dtype=np.float32)


class VarLen:
    """(id, vector of length 1 + id % max_len filled with id + 1) for the worker's shard."""

    def __init__(self, n: int, max_len: int = 7, cols: int = 0):
        self.n = n
        self.max_len = max_len
        self.cols = cols

    def __call__(self):
        for i in my_shard(self.n):
            length = 1 + (i * 5) % self.max_len
            shape = (length,) if not self.cols else (length, self.cols)
            yield i, np.full(shape, i + 1, dtype=np.int32)


def varlen_length(i: int, max_len: int = 7) -> int:
    return 1 + (i * 5) % max_len


class FailingGen:
    """Yields the worker's shard of range(n); raises ``exc_type(message)`` at the
    ``at``-th item of worker ``worker`` in epoch ``epoch``."""

    def __init__(self, n: int, at: int, exc_type=ValueError, message: str = "boom",
                 worker: int = 0, epoch: int = 0):
        self.n = n
        self.at = at
        self.exc_type = exc_type
        self.message = message
        self.worker = worker
        self.epoch = epoch

    def __call__(self):
        return failing_generator_body(self)


def failing_generator_body(cfg: FailingGen):
    info = queuepipe.worker_info()
    for k, i in enumerate(my_shard(cfg.n)):
        if k == cfg.at and info.index == cfg.worker and info.epoch == cfg.epoch:
            raise cfg.exc_type(cfg.message)
        yield i


class FixedSamples:
    """Yields the given list of samples (the same in every worker)."""

    def __init__(self, samples):
        self.samples = list(samples)

    def __call__(self):
        for s in self.samples:
            yield s


class MyDataError(Exception):
    """A user-defined exception type (must keep its type through the pipeline)."""


class ThenRaise:
    """Yields the given samples, then raises ``exc_type(message)``."""

    def __init__(self, samples, exc_type=ValueError, message="boom"):
        self.samples = list(samples)
        self.exc_type = exc_type
        self.message = message

    def __call__(self):
        for s in self.samples:
            yield s
        raise self.exc_type(self.message)


class TupleSamples:
    def __init__(self, n):
        self.n = n

    def __call__(self):
        for i in range(self.n):
            yield np.int32(i), np.full(3, i, np.float32), f"s{i}-\u00e9"


class DictSamples:
    def __init__(self, n):
        self.n = n

    def __call__(self):
        for i in my_shard_range(self.n):
            yield {"label": i, "image": np.full((2, 2), i, np.uint8), "name": b"n%d" % i}


def my_shard_range(n):
    info = queuepipe.worker_info()
    return range(info.index, n, info.count)


class VectorOfFirstShape:
    """Samples whose vector length is only known at run time (always 4 here)."""

    def __call__(self):
        for i in range(12):
            yield np.arange(4, dtype=np.float32) + i


class Float64Samples:
    def __call__(self):
        for i in range(20):
            yield np.float64(i) / 3.0, i / 7.0, i  # numpy float64, python float, python int


class StringSamples:
    def __call__(self):
        yield "plain", 0
        yield "\u00fcnic\u00f6de \u2603", 1
        yield b"\xff\x00raw bytes", 2
        yield np.str_("numpy str"), 3
        yield np.bytes_(b"numpy bytes"), 4
        yield "", 5


class VarLenStrings:
    def __call__(self):
        for i in range(9):
            yield i, [f"w{i}"] * (1 + i % 3)


class ReusedBuffer:
    """Yields one preallocated buffer refilled in place (a common numpy idiom).

    yields="blocks": a view of the first k rows per block; "samples": the whole vector.
    """

    def __init__(self, n, block, yields):
        self.n = n
        self.block = block
        self.yields = yields

    def __call__(self):
        if self.yields == "samples":
            buf = np.empty(3, dtype=np.int64)
            for i in range(self.n):
                buf[:] = i
                yield buf
            return
        buf = np.empty(self.block, dtype=np.int64)
        for start in range(0, self.n, self.block):
            k = min(self.block, self.n - start)
            buf[:k] = np.arange(start, start + k)
            yield buf[:k]


class DictBlocks:
    def __call__(self):
        for start, size in [(0, 3), (3, 0), (3, 9), (12, 4)]:
            ids = np.arange(start, start + size)
            yield {"id": ids, "name": np.array([f"n{i}" for i in ids], dtype=str),
                   "x": np.repeat(ids[:, None], 2, axis=1).astype(np.float64)}  # float64 into float32


class InfiniteUnlessWorker:
    """Every worker yields forever, except worker ``bad`` which raises at item ``at``."""

    def __init__(self, bad, at):
        self.bad = bad
        self.at = at

    def __call__(self):
        info = queuepipe.worker_info()
        i = 0
        while True:
            if info.index == self.bad and i == self.at:
                raise MyDataError(f"worker {self.bad} failed at {self.at}")
            yield i
            i += 1


class FactoryRaises:
    """The generator callable itself fails (e.g. cannot open its file)."""

    def __call__(self):
        raise MyDataError("cannot open shard")


class FailsFirstRunOnly:
    """Raises at item 5 unless ``marker`` exists (it creates it): fails in the first run only."""

    def __init__(self, marker):
        self.marker = marker

    def __call__(self):
        for i in range(20):
            if i == 5 and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                raise MyDataError("first run")
            yield i


class BadOnWorker:
    def __init__(self, bad):
        self.bad = bad

    def __call__(self):
        info = queuepipe.worker_info()
        for i in range(6):
            yield {"v": 0.5 if (info.index == self.bad and i == 3) else i}


class MixedDtypes:
    """(bool, float16 vector, uint8 matrix) samples."""

    def __call__(self):
        for i in range(10):
            yield i % 2 == 0, np.full(2, i / 4, np.float16), np.full((3, 2), i, np.uint8)


class WaitForFile:
    """Creates ``<gate>.waiting-<worker>``, waits (at most 60 s) until ``gate`` exists, then yields
    ``range(n)``: a worker whose generator has nothing yet."""

    def __init__(self, gate: str, n: int):
        self.gate = gate
        self.n = n

    def __call__(self):
        info = queuepipe.worker_info()
        open(f"{self.gate}.waiting-{info.index if info else 0}", "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield from range(self.n)


class StallsAfter:
    """Yields ``n`` items, then hangs for ``seconds`` (a worker stuck on I/O), then ends."""

    def __init__(self, n: int, seconds: float):
        self.n = n
        self.seconds = seconds

    def __call__(self):
        for i in range(self.n):
            yield i
        time.sleep(self.seconds)


def resumable_counting(start=0):
    """A resumable generator (``from_generator(..., resumable=True)``): sample ``i`` of a
    worker's epoch is ``index * 100000 + epoch * 1000 + i``, 200 per epoch, from ``start``."""
    info = queuepipe.worker_info()
    for i in range(start, 200):
        yield info.index * 100_000 + info.epoch * 1000 + i
