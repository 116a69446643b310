"""TF-free generators for process-worker tests (a worker process imports this module).

Kept free of TensorFlow imports so a child process starts fast and the tests can check
that worker processes never import TensorFlow.
"""
from __future__ import annotations

import os
import random
import sys
import time

import numpy as np

import queuepipe


def identity_stream(n: int):
    """Sample i is (pid, i, tensorflow-imported flag, worker index); worker w takes i = w mod count."""
    info = queuepipe.worker_info()
    for i in range(info.index, n, info.count):
        yield np.array([os.getpid(), i, int("tensorflow" in sys.modules), info.index], np.int64)


def seeds_stream():
    """Each worker yields its WorkerInfo seed and first draws of random / numpy.random."""
    info = queuepipe.worker_info()
    yield np.array([info.index, info.seed % (2 ** 62), random.getrandbits(62),
                    int(np.random.randint(0, 2 ** 62, dtype=np.int64))], np.int64)


def slow_forever(delay: float = 0.002):
    """An infinite stream with a little delay per sample; yields (pid, i)."""
    i = 0
    while True:
        time.sleep(delay)
        yield np.array([os.getpid(), i], np.int64)
        i += 1


def suicide_at(k: int, victim: int = 0):
    """Worker ``victim`` SIGKILLs itself at item k (a crash the worker cannot report)."""
    info = queuepipe.worker_info()
    i = 0
    while True:
        if i == k and info.index == victim:
            os.kill(os.getpid(), 9)
        time.sleep(0.001)
        yield np.array([os.getpid(), i], np.int64)
        i += 1


def raise_at(k: int):
    """Raises a ValueError at item k of worker 0."""
    info = queuepipe.worker_info()
    for i in range(10 * k + 10):
        if i == k and info.index == 0:
            raise ValueError(f"bad item {k} from process worker")
        yield np.array([os.getpid(), i], np.int64)
