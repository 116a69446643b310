"""TF-free, module-level map functions for the record tests (picklable into worker processes).

Kept apart from the test modules so a worker process that unpickles them never imports
TensorFlow.  No tests here.
"""
from __future__ import annotations

import functools
import os
import sys

import numpy as np

import queuepipe


def decode_cifar(records):
    """Block map_fn: uint8 [n, 3073] CIFAR-10 records -> (image uint8 [n, 32, 32, 3], label int64 [n])."""
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, records[:, 0].astype(np.int64)


def ids_and_process(batch):
    """Block map_fn on a TFRecord dict: the ids, the worker's pid and whether it imported tensorflow."""
    ids = batch["id"]
    n = len(ids)
    return {"id": ids, "pid": np.full(n, os.getpid(), np.int64),
            "tf": np.full(n, "tensorflow" in sys.modules, np.bool_)}


def first_byte_and_process(records):
    """Block map_fn on fixed-length records: (first byte as int64, pid, tensorflow imported?)."""
    n = len(records)
    return (records[:, 0].astype(np.int64), np.full(n, os.getpid(), np.int64),
            np.full(n, "tensorflow" in sys.modules, np.bool_))


@functools.lru_cache(maxsize=None)
def worker_rng(seed):
    """One generator per worker (keyed by the worker's seed)."""
    return np.random.default_rng(seed)


def augment(record):
    """Per-sample map_fn, the recipe of queuepipe.records: a CIFAR-10 record (uint8 [3073]) ->
    (random 32x32 crop of the 4-padded image, randomly flipped, standardised float32 [32, 32, 3], label)."""
    rng = worker_rng(queuepipe.worker_info().seed)
    image = record[1:].reshape(3, 32, 32).transpose(1, 2, 0).astype(np.float32)
    y, x = rng.integers(0, 9, size=2)
    image = np.pad(image, ((4, 4), (4, 4), (0, 0)))[y:y + 32, x:x + 32]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = (image - image.mean()) / max(image.std(), 1 / np.sqrt(image.size))
    return image, np.int64(record[0])
