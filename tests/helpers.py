"""Shared helpers for the queuepipe test suite.

``MODES`` is the one place that lists the worker modes the mode-parametrised tests
run under (add "process" once process workers land).  Generators used by those
tests live here as module-level classes / functions so they pickle to a child
process.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator, List

import numpy as np
import pytest
import tensorflow as tf

import queuepipe

tf1 = tf.compat.v1

MODES = ["thread"]

# Generous bound for "promptly" (stop, error surfacing): never a tight wall-clock limit.
PROMPT_S = 20.0


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """The worker mode under test (import this fixture into a test module)."""
    return request.param


# ---------------------------------------------------------------------------------------
# running a pipeline
# ---------------------------------------------------------------------------------------

def drain(sess, batch, limit: int = 100_000) -> List[Any]:
    """Every batch ``sess.run(batch)`` returns until OutOfRangeError (at most ``limit``)."""
    out = []
    for _ in range(limit):
        try:
            out.append(sess.run(batch))
        except tf.errors.OutOfRangeError:
            return out
    raise AssertionError(f"no OutOfRangeError after {limit} batches")


def run_all(generator, output_types, output_shapes=None, **kwargs) -> List[Any]:
    """Build a pipeline in a fresh graph, run it to the end under ``queuepipe.running``."""
    with tf.Graph().as_default():
        p = queuepipe.from_generator(generator, output_types, output_shapes, **kwargs)
        with tf1.Session() as sess, queuepipe.running(sess):
            return drain(sess, p.batch)


@contextlib.contextmanager
def graph_session(config=None):
    """A fresh default graph and a Session on it."""
    with tf.Graph().as_default() as g:
        with tf1.Session(graph=g, config=config) as sess:
            yield sess


def rows(batches, field=None) -> List[Any]:
    """Concatenate the rows of a list of batches (optionally one field of each) to a list."""
    parts = [b if field is None else b[field] for b in batches]
    if not parts:
        return []
    return [x.item() if isinstance(x, np.generic) else x for x in np.concatenate(parts)]


def tuples(batches) -> List[tuple]:
    """Rows of tuple-structured batches as python tuples of scalars."""
    out = []
    for b in batches:
        for r in zip(*b):
            out.append(tuple(x.item() if isinstance(x, np.generic) else x for x in r))
    return out


def sizes(batches, field=None) -> List[int]:
    return [len(b if field is None else b[field]) for b in batches]


class Timer:
    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.start
        return False


# ---------------------------------------------------------------------------------------
# generators (picklable: module-level classes with __call__)
# ---------------------------------------------------------------------------------------

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


def closed_markers(prefix: str) -> List[str]:
    d, base = os.path.split(prefix)
    return sorted(n for n in os.listdir(d) if n.startswith(base + "."))


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
