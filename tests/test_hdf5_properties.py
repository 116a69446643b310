"""Properties of from_hdf5 over random selections x workers x batch sizes x epochs x shuffle:
every selected row arrives exactly once per epoch, with h5py's values, in order when it should."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import queuepipe
from helpers import drain

tf1 = tf.compat.v1

SIZES = [137, 1, 262]            # a one-row file in the middle; 400 rows in all
TOTAL = sum(SIZES)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hdf5_props")
    paths, start = [], 0
    rng = np.random.default_rng(0)
    for i, n in enumerate(SIZES):
        path = root / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            kw = dict(compression="gzip", shuffle=True) if i == 2 else {}
            x = rng.normal(size=(n, 2)).astype(np.float32)
            f.create_dataset("X", data=x, chunks=(min(n, 16), 2), **kw)
            f.create_dataset("y", data=np.arange(start, start + n, dtype=np.int64))
        paths.append(str(path))
        start += n
    return paths


def reference(paths):
    """What h5py reads, all files concatenated."""
    xs, ys = [], []
    for p in paths:
        with h5py.File(p, "r") as f:
            xs.append(f["X"][...])
            ys.append(f["y"][...])
    return np.concatenate(xs), np.concatenate(ys)


@st.composite
def selections(draw):
    """(rows argument, the global ids it selects in order) -- the ids computed independently."""
    kind = draw(st.sampled_from(["all", "slice", "sorted", "unsorted", "dups", "mask", "ranges", "per-file"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = np.arange(TOTAL)
    if kind == "all":
        return None, ids
    if kind == "slice":
        a = draw(st.integers(0, TOTAL - 1))
        b = draw(st.integers(a + 1, TOTAL))
        step = draw(st.sampled_from([1, 1, 2, 5, -1, -3]))
        s = slice(a, b, step) if step > 0 else slice(b - 1, a - 1 if a else None, step)
        return s, ids[s]
    n = draw(st.integers(1, TOTAL))
    if kind == "sorted":
        chosen = np.sort(rng.choice(TOTAL, n, replace=False))
        return chosen, chosen
    if kind == "unsorted":
        chosen = rng.choice(TOTAL, n, replace=False)
        return chosen, chosen
    if kind == "dups":
        chosen = rng.integers(0, TOTAL, n)
        return list(chosen), chosen
    if kind == "mask":
        mask = rng.random(TOTAL) < draw(st.floats(0.01, 1.0))
        mask[rng.integers(TOTAL)] = True
        return mask, np.flatnonzero(mask)
    if kind == "ranges":
        bounds = [tuple(sorted(rng.integers(0, TOTAL + 1, 2))) for _ in range(draw(st.integers(1, 5)))]
        bounds[0] = (bounds[0][0], bounds[0][1] + 1) if bounds[0][1] < TOTAL else (bounds[0][0] - 1, TOTAL)
        return bounds, np.concatenate([np.arange(a, b) for a, b in bounds])
    picks = {n_rows: rng.permutation(n_rows)[: rng.integers(0, n_rows + 1)] for n_rows in set(SIZES)}
    picks[SIZES[0]] = np.r_[picks[SIZES[0]], 0][:max(1, len(picks[SIZES[0]]))]
    offsets = np.cumsum([0] + SIZES[:-1])
    expected = np.concatenate([picks[n] + o for n, o in zip(SIZES, offsets)])
    return (lambda path, n_rows: picks[n_rows]), expected


def run(paths, rows, **kwargs):
    with tf.Graph().as_default():
        p = queuepipe.from_hdf5(paths, {"X": "X", "y": "y"}, rows=rows, with_row_ids=True,
                                allow_smaller_final_batch=True, **kwargs)
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    return {k: np.concatenate([b[k] for b in batches]) for k in ("X", "y", "row_id")}, batches


@given(sel=selections(), workers=st.integers(1, 3), batch_size=st.integers(1, 40), epochs=st.integers(1, 3),
       shuffle=st.booleans(), per_block=st.sampled_from([None, 1, 2, 5]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_selected_row_once_per_epoch_with_h5py_values(files, sel, workers, batch_size, epochs, shuffle,
                                                            per_block):
    rows, expected = sel
    got, batches = run(files, rows, batch_size=batch_size, workers=workers, num_epochs=epochs,
                       shuffle=shuffle, seed=11, batches_per_block=per_block)
    want = np.tile(expected, epochs)
    np.testing.assert_array_equal(np.sort(got["row_id"]), np.sort(want))
    X, y = reference(files)
    np.testing.assert_array_equal(got["y"], y[got["row_id"]])
    np.testing.assert_array_equal(got["X"], X[got["row_id"]])
    assert all(len(b["y"]) == batch_size for b in batches[:-1]), "only the final batch may be short"
    if workers == 1 and not shuffle:
        np.testing.assert_array_equal(got["row_id"], want)


@given(sel=selections(), batch_size=st.integers(4, 30), seed=st.integers(0, 2**62))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_seeded_shuffle_with_one_worker_is_reproducible(files, sel, batch_size, seed):
    rows, _ = sel
    first, _ = run(files, rows, batch_size=batch_size, shuffle=True, seed=seed, num_epochs=2)
    second, _ = run(files, rows, batch_size=batch_size, shuffle=True, seed=seed, num_epochs=2)
    np.testing.assert_array_equal(first["row_id"], second["row_id"])
