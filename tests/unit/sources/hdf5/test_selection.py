"""queuepipe.sources.hdf5.selection: the rows= argument as ordered runs of global ids, and sharding.
Pure numpy, no files, no TensorFlow."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuepipe.errors import HDF5SelectionError, HDF5TypeError
from queuepipe.sources.hdf5.selection import Selection, normalise_rows, select


# -- selections -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, expected", [
    (None, np.arange(10)),
    (slice(2, 7), np.arange(2, 7)),
    (slice(None, None, 3), np.arange(0, 10, 3)),
    (slice(None, None, -1), np.arange(9, -1, -1)),
    (slice(-3, None), np.arange(7, 10)),
    ([5, 1, 2, 3, 9], np.array([5, 1, 2, 3, 9])),
    (np.array([4, 4, 0]), np.array([4, 4, 0])),
    (np.arange(10) % 3 == 0, np.array([0, 3, 6, 9])),
    ([(6, 8), (0, 2), (2, 3)], np.array([6, 7, 0, 1, 2])),
    (np.array([[1, 3], [8, 10]]), np.array([1, 2, 8, 9])),
    (range(3, 6), np.arange(3, 6)),
])
def test_rows_forms_give_ids_in_order(rows, expected):
    sel = normalise_rows(rows, 10, "test")
    np.testing.assert_array_equal(sel.ids(), expected)
    assert sel.size == len(expected)


@pytest.mark.parametrize("rows, fragment", [
    ([0, 10], "index 10 (at position 1) is out of range"),
    ([-1], "index -1"),
    (np.ones(9, bool), "one entry per row (10)"),
    (slice(0, 11), "out of range"),
    ([(0, 11)], "range #0 (0, 11) is out of range"),
    ([(5, 3)], "range #0 (5, 3)"),
    ([], "selects no rows"),
    (np.zeros(10, bool), "selects no rows"),
    (slice(5, 5), "selects no rows"),
])
def test_bad_selections_are_refused(rows, fragment):
    with pytest.raises(HDF5SelectionError, match="in test_file") as info:
        normalise_rows(rows, 10, "in test_file")
    assert fragment in str(info.value)
    assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("rows", [3, 2.5, "abc", [1.5, 2.0], np.zeros((2, 3), np.int64)])
def test_wrong_kinds_of_rows_are_type_errors(rows):
    with pytest.raises(HDF5TypeError):
        normalise_rows(rows, 10, "f")


def test_callable_rows_select_per_file_and_may_skip_a_file():
    files = [("a.h5", 5), ("b.h5", 4), ("c.h5", 3)]
    sel = select(lambda path, n: [] if path == "b.h5" else [n - 1, 0], files)
    np.testing.assert_array_equal(sel.ids(), [4, 0, 11, 9])
    with pytest.raises(HDF5SelectionError, match=r"b\.h5: rows\('b\.h5', 4\) returned"):
        select(lambda path, n: [n] if path == "b.h5" else [0], files)


def test_shards_are_disjoint_contiguous_and_cover_the_selection():
    sel = normalise_rows(np.array([9, 3, 4, 5, 0, 7, 8]), 10, "t")
    parts = [sel.shard(i, 3).ids() for i in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), sel.ids())
    assert sorted(len(p) for p in parts) == [2, 2, 3]
    with pytest.raises(HDF5SelectionError, match="empty"):
        sel.shard(0, 8)


@given(st.lists(st.integers(0, 50), max_size=60), st.integers(0, 70), st.integers(0, 70))
@settings(max_examples=50, deadline=None)
def test_selection_runs_roundtrip(ids, p, q):
    sel = Selection.from_ids(np.array(ids, dtype=np.int64))
    np.testing.assert_array_equal(sel.ids(), ids)
    p, q = min(p, q, len(ids)), min(max(p, q), len(ids))
    np.testing.assert_array_equal(sel.ids(p, q), np.array(ids[p:q], dtype=np.int64))
    assert sorted(sel.sorted().ids().tolist()) == sorted(ids)
    assert np.all(np.diff(sel.sorted().ids()) >= 0)


# -- blocks -----------------------------------------------------------------------------------------
