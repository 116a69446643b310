"""Batch helpers that need numpy only (the supervisor judges without TensorFlow)."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np


def columns(batches: List[Any]) -> Dict[str, np.ndarray]:
    """Concatenate dict batches field by field (an empty dict for no batches)."""
    if not batches:
        return {}
    keys = batches[0].keys()
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in keys}


def stack_rows(batches: List[Any], width: int = 3) -> np.ndarray:
    """Concatenate array batches (rows of generator pipelines)."""
    if not batches:
        return np.zeros((0, width), np.int64)
    return np.concatenate([np.asarray(b) for b in batches])
