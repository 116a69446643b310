"""TF-free, module-level map functions for the HDF5 tests (picklable into worker processes).

Kept apart from the test modules so a worker process that unpickles them never
imports TensorFlow.  No tests here.
"""
from __future__ import annotations

import numpy as np


def scale_and_label(batch):
    """Block map_fn: (X, y) -> {"x": 2 * X (float64), "label": y % 3}."""
    x, y = batch
    return {"x": x.astype(np.float64) * 2, "label": y % 3}


def keep_even(batch):
    """Block map_fn that drops rows: only rows whose y is even, as (X, y)."""
    x, y = batch
    keep = y % 2 == 0
    return x[keep], y[keep]


def sample_norm(sample):
    """Per-sample map_fn on a dict sample: (sum of X, row_id)."""
    return np.float32(sample["X"].sum()), sample["row_id"]


def cumulative_sum(x):
    """Block map_fn of a single dataset: cumulative sums along each row."""
    return np.cumsum(x, axis=1)


def hang_on_second_block(x):
    """Block map_fn that hangs (60 s) on a block whose first value is not 0: a worker stuck mid-read."""
    import time
    if x[0] != 0:
        time.sleep(60)
    return x
