"""The benchmark's data files F1/F2 and W3's selection, made from fixed seeds and cached.

Cache: ``$QUEUEPIPE_BENCH_CACHE`` or ``~/.cache/queuepipe-bench/`` (outside the repo).
A cached file is reused only if its recorded recipe matches; files are written to a
temporary name and renamed, so an interrupted build never leaves a half file behind.

X values are standard normal float32 rounded to multiples of 1/64: realistic sensor-like
data that gzip+shuffle compresses to roughly a third (pure noise would not compress, and
then "decompression is the job" would measure nothing).  ``y[i] == i``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np

from .workloads import FEATURES

RECIPE_VERSION = 1
SIZES = {  # rows
    "full": {"F1": 262_144, "F2": 65_536},
    "quick": {"F1": 8_192, "F2": 4_096},
}
SEEDS = {"F1": 1, "F2": 2}
CHUNK_ROWS = 256
SELECTION_FRACTION = 0.2
SELECTION_SEED = 0


def cache_dir() -> Path:
    d = Path(os.environ.get("QUEUEPIPE_BENCH_CACHE") or Path.home() / ".cache" / "queuepipe-bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


def recipe(name: str, n: int) -> Dict[str, object]:
    return {"recipe_version": RECIPE_VERSION, "n": n, "seed": SEEDS[name], "chunk_rows": CHUNK_ROWS,
            "compression": "gzip-4+shuffle" if name == "F2" else "none"}


def _matches(path: Path, want: Dict[str, object]) -> bool:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return all(f.attrs.get(k) == v for k, v in want.items()) and f["X"].shape == (want["n"], FEATURES)
    except (OSError, KeyError):
        return False


def ensure_file(name: str, n: int, log=print) -> Path:
    """Path of F1/F2 with ``n`` rows, built if the cache has no matching file."""
    import h5py
    path = cache_dir() / f"{name}_n{n}_v{RECIPE_VERSION}.h5"
    want = recipe(name, n)
    if path.exists() and _matches(path, want):
        return path
    log(f"building {path} ({n} rows, {n * (FEATURES * 4 + 8) / 2**20:.0f} MiB)...")
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    compress = dict(compression="gzip", compression_opts=4, shuffle=True) if name == "F2" else {}
    rng = np.random.default_rng(SEEDS[name])
    step = 16 * CHUNK_ROWS * 4
    try:
        with h5py.File(tmp, "w") as f:
            X = f.create_dataset("X", (n, FEATURES), np.float32, chunks=(CHUNK_ROWS, FEATURES), **compress)
            Y = f.create_dataset("y", (n,), np.int64, chunks=(CHUNK_ROWS,), **compress)
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                x = rng.standard_normal((hi - lo, FEATURES), dtype=np.float32)
                np.multiply(x, 64, out=x)
                np.rint(x, out=x)
                np.multiply(x, 1 / 64, out=x)
                X[lo:hi] = x
                Y[lo:hi] = np.arange(lo, hi, dtype=np.int64)
            for k, v in want.items():
                f.attrs[k] = v
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def ensure_selection(n: int) -> Path:
    """W3's rows: a sorted random 20 % of ``range(n)`` (seed 0), as a .npy file."""
    path = cache_dir() / f"W3_rows_n{n}_seed{SELECTION_SEED}.npy"
    if not path.exists():
        rng = np.random.default_rng(SELECTION_SEED)
        rows = np.sort(rng.choice(n, size=int(round(SELECTION_FRACTION * n)), replace=False)).astype(np.int64)
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npy")
        np.save(tmp, rows)
        os.replace(tmp, path)
    return path


def warm_page_cache(path: Path) -> None:
    """Read the whole file once so the measurements see a warm page cache."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 << 20)
        while f.readinto(buf):
            pass
