"""queuepipe.sources.hdf5.selection: the ``rows=`` argument as an ordered sequence of global
row ids kept as runs.  Contract: every accepted form (None, slice, index array in any order,
boolean mask, (start, stop) ranges, a callable asked per file) gives exactly the ids it
names, in its order; out-of-range or empty selections are ``HDF5SelectionError``s and wrong
kinds ``HDF5TypeError``s, found at build time; shards are disjoint, contiguous, near-equal
and together the whole selection."""
from __future__ import annotations

import numpy as np
import pytest

from queuepipe.errors import HDF5SelectionError, HDF5TypeError
from queuepipe.sources.hdf5.selection import Selection, normalise_rows, select


@pytest.mark.parametrize("rows, expected", [
    (None, list(range(10))),
    (slice(2, 7), [2, 3, 4, 5, 6]),
    (slice(None, None, 3), [0, 3, 6, 9]),
    (slice(None, None, -2), [9, 7, 5, 3, 1]),
    (slice(-3, None), [7, 8, 9]),
    ([5, 1, 2, 3, 9], [5, 1, 2, 3, 9]),                    # an index array keeps its order...
    (np.array([9, 0, 9, 4], np.uint32), [9, 0, 9, 4]),     # ...and its repeats
    (np.arange(10) % 4 == 1, [1, 5, 9]),                   # a mask: its true rows, in file order
    ([(6, 8), (0, 2), (2, 3)], [6, 7, 0, 1, 2]),           # ranges, in the order given
    (np.array([[1, 3], [8, 10]]), [1, 2, 8, 9]),
], ids=["all", "slice", "step", "reversed", "negative-start", "index-array", "repeats", "mask",
        "ranges", "ranges-array"])
def test_every_form_of_rows_gives_exactly_the_ids_it_names_in_its_order(rows, expected):
    sel = normalise_rows(rows, 10, "f.h5")
    assert sel.ids().tolist() == expected and sel.size == len(expected)
    assert len(sel.starts) <= len(expected), "kept as runs, never more runs than rows"


def test_a_callable_is_asked_per_file_for_local_rows_and_may_skip_a_file():
    asked = []

    def rows(path, n):
        asked.append((path, n))
        return {"a.h5": [4, 0], "b.h5": [], "c.h5": np.arange(3) == 1}[path]

    sel = select(rows, [("a.h5", 5), ("b.h5", 4), ("c.h5", 3)])
    assert asked == [("a.h5", 5), ("b.h5", 4), ("c.h5", 3)]
    assert sel.ids().tolist() == [4, 0, 10]          # c.h5's row 1 is global row 5 + 4 + 1
    with pytest.raises(HDF5SelectionError, match="selected no rows"):
        select(lambda path, n: [], [("a.h5", 5), ("b.h5", 4)])
    assert select([8, 0], [("a.h5", 5), ("b.h5", 4)]).ids().tolist() == [8, 0], "others count globally"


@pytest.mark.parametrize("rows, fragment", [
    ([3, 10], "index 10 (at position 1) is out of range"),
    ([-1], "index -1"),
    (slice(0, 11), "out of range"),
    (slice(0, 5, 0), "step cannot be zero"),
    (np.ones(9, bool), "one entry per row (10)"),
    ([(0, 4), (8, 11)], "range #1 (8, 11)"),
    ([], "selects no rows"),
    (slice(5, 5), "selects no rows"),
])
def test_selections_outside_the_rows_or_empty_are_refused_at_build_time(rows, fragment):
    with pytest.raises(HDF5SelectionError) as err:
        normalise_rows(rows, 10, "data.h5 (10 rows in all)")
    assert fragment in str(err.value) and "data.h5" in str(err.value)


@pytest.mark.parametrize("rows", [3, True, "0:5", [1.5, 2.0], np.zeros((2, 3), np.int64)],
                         ids=["int", "bool", "str", "floats", "2-D, not (start, stop) pairs"])
def test_rows_of_a_kind_that_is_not_a_selection_are_type_errors(rows):
    with pytest.raises(HDF5TypeError):
        normalise_rows(rows, 10, "f.h5")


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 11])
def test_shards_are_disjoint_contiguous_near_equal_and_together_the_whole_selection(count):
    ids = np.random.default_rng(count).permutation(50)[:45]
    sel = Selection.from_ids(ids)
    shards = [sel.shard(i, count) for i in range(count)]
    np.testing.assert_array_equal(np.concatenate([s.ids() for s in shards]), ids)
    sizes = [s.size for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert len(set(np.concatenate([s.ids() for s in shards]).tolist())) == 45
    with pytest.raises(HDF5SelectionError, match="is empty"):
        Selection.all_rows(3).shard(0, 4)
