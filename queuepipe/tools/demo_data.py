"""Synthetic data and a user-style generator for the demo (TF-free: worker processes import it).

``SceneGenerator`` has the shape of the generators users bring to queuepipe: it opens an
HDF5 file, selects *parts* of datasets, preprocesses in Python/numpy and yields
``(X, y)`` forever.
"""
from __future__ import annotations

import os
from typing import Iterator, Tuple

import h5py
import numpy as np

FEATURES = 64
WINDOW = 16


def make_scene_file(path: str, n_scenes: int = 4096, seed: int = 0) -> str:
    """An HDF5 file with ``scenes`` [n, WINDOW, FEATURES] float32 and ``labels`` [n] int64."""
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n_scenes)
    centers = rng.normal(size=(4, FEATURES)).astype(np.float32)
    scenes = centers[labels][:, None, :] + 0.5 * rng.normal(size=(n_scenes, WINDOW, FEATURES)).astype(np.float32)
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.create_dataset("scenes", data=scenes, chunks=(64, WINDOW, FEATURES))
        f.create_dataset("labels", data=labels.astype(np.int64))
    os.replace(tmp, path)
    return path


def scene_count(path: str) -> int:
    """How many scenes (rows) the file at ``path`` holds: the demo's header says what it samples from."""
    with h5py.File(path, "r") as f:
        return int(f["scenes"].shape[0])


class SceneGenerator(object):
    """A typical user generator: random parts of an HDF5 file, preprocessed per sample."""

    def __init__(self, params: dict):
        self.path = params["path"]
        self.work = params.get("python_work", 200)  # pure-Python steps per sample (GIL-bound)

    def preprocess(self, scene: np.ndarray, label: int) -> Tuple[np.ndarray, int]:
        features = scene.mean(axis=0) + 0.1 * scene.std(axis=0)
        acc = 0.0
        for k in range(self.work):  # stands for per-sample Python logic users really have
            acc += (k % 7) * 1e-9
        return (features + acc).astype(np.float32), int(label)

    def generate_data(self) -> Iterator[Tuple[np.ndarray, int]]:
        rng = np.random.default_rng()
        with h5py.File(self.path, "r") as f:
            scenes, labels = f["scenes"], f["labels"]
            n = scenes.shape[0]
            while True:
                i = int(rng.integers(0, n))
                X, y = self.preprocess(scenes[i], labels[i])
                yield X, y
