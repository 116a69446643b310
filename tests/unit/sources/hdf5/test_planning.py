"""queuepipe.sources.hdf5.planning: from a selection to blocks, their order per epoch, and the
reads of one block.  Contract: the block order of an epoch is the same permutation for every
worker given the seed, a different one per epoch; dealing the blocks to workers and regrouping
them into exact chunks delivers every selected row once per epoch; a block's read plan writes
every output row exactly once with the selected row, never reading outside a file."""
from __future__ import annotations

import numpy as np
import pytest

from queuepipe.sources.hdf5.planning import (choose_block_batches, count_blocks, epoch_order, exact_chunks,
                                             geometry, plan_reads, split_at_files)
from queuepipe.sources.hdf5.selection import Selection


# -- blocks and their order ----------------------------------------------------------------------

def test_epoch_order_is_the_same_permutation_for_a_seed_and_a_different_one_per_epoch():
    a = epoch_order(40, seed=7, epoch=2, shuffle=True)
    np.testing.assert_array_equal(a, epoch_order(40, seed=7, epoch=2, shuffle=True))
    assert sorted(a.tolist()) == list(range(40)) and not np.array_equal(a, np.arange(40))
    orders = {tuple(epoch_order(40, 7, e, True).tolist()) for e in range(5)}
    assert len(orders) == 5
    assert epoch_order(40, 8, 2, True).tolist() != a.tolist(), "another seed, another order"
    np.testing.assert_array_equal(epoch_order(6, 7, 3, False), np.arange(6))  # no shuffle: file order


def test_block_batches_snap_to_whole_chunks_only_when_that_is_close_to_the_target():
    assert choose_block_batches(128, 7, 256) == 8         # 896 rows -> 1024, four whole chunks
    assert choose_block_batches(64, 32, 256) == 32        # 2048 rows are whole chunks already
    assert choose_block_batches(128, 7, None) == 7        # contiguous data: nothing to snap to
    assert choose_block_batches(100, 4, 1000) == 4        # 1000-row unit > 2 x 400: keep the target


def test_exact_chunks_regroups_positions_into_chunks_of_exactly_the_rows_asked_for():
    segments = [(0, 5), (20, 23), (5, 6), (40, 51)]
    chunks = list(exact_chunks(iter(segments), 4))
    sizes = [sum(q - p for p, q in c) for c in chunks]
    assert sizes[:-1] == [4] * (len(sizes) - 1) and 0 < sizes[-1] <= 4
    flat = [i for c in chunks for p, q in c for i in range(p, q)]
    assert flat == [i for p, q in segments for i in range(p, q)]


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("shuffle", [False, True])
def test_dealing_an_epochs_blocks_to_workers_delivers_every_selected_row_once(workers, shuffle):
    ids = np.random.default_rng(1).permutation(300)[:97]   # 97 rows in any order
    sel, block_rows = Selection.from_ids(ids), 8
    blocks = count_blocks(sel.size, block_rows)
    delivered = []
    for index in range(workers):
        order = epoch_order(blocks, seed=3, epoch=0, shuffle=shuffle)[index::workers]
        segments = ((b * block_rows, min(sel.size, (b + 1) * block_rows)) for b in order.tolist())
        for chunk in exact_chunks(segments, block_rows):
            delivered.extend(np.concatenate([sel.ids(p, q) for p, q in chunk]).tolist())
    assert sorted(delivered) == sorted(ids.tolist())


# -- the reads of one block ----------------------------------------------------------------------

def _geometry(file_rows, row_bytes=4096, raw=False, filtered_chunk_rows=None):
    return geometry(file_rows, [filtered_chunk_rows] * len(file_rows), row_bytes, [raw] * len(file_rows))


def _execute(plan, geo, data, n_out):
    """Carry a plan out on in-memory 'files' (the global row ids' data); count writes per output row."""
    out = np.full(n_out, -1, np.int64)
    writes = np.zeros(n_out, np.int64)
    d = plan.direct
    for f, s, e, p in zip(d.files, d.starts, d.stops, d.out_pos):
        assert 0 <= s < e <= geo.offsets[f + 1] - geo.offsets[f], "a read outside its file"
        out[p:p + e - s] = data[geo.offsets[f] + s:geo.offsets[f] + e]
        writes[p:p + e - s] += 1
    for g in plan.gathers:
        for f, s, e in g.slabs:
            assert 0 <= s < e <= geo.offsets[f + 1] - geo.offsets[f], "a slab outside its file"
        scratch = np.concatenate([data[geo.offsets[f] + s:geo.offsets[f] + e] for f, s, e in g.slabs])
        index = g.out_index if g.out_index is not None else np.arange(g.out_pos, g.out_pos + len(g.take))
        out[index] = scratch[g.take]
        writes[index] += 1
    return out, writes


KINDS = ["contiguous", "sorted", "unsorted", "repeats", "pieces"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("row_bytes, raw", [(8, True), (4096, False), (1 << 20, False)])
def test_a_blocks_read_plan_writes_every_output_row_once_with_the_selected_row(kind, row_bytes, raw):
    file_rows = [300, 7, 250, 400]
    total = sum(file_rows)
    rng = np.random.default_rng([KINDS.index(kind), row_bytes])  # the same cases every run
    for _ in range(10):
        n = int(rng.integers(1, 200))
        if kind == "contiguous":
            start = int(rng.integers(0, total - n))
            ids = np.arange(start, start + n)
        elif kind == "sorted":
            ids = np.sort(rng.choice(total, n, replace=False))
        elif kind == "unsorted":
            ids = rng.choice(total, n, replace=False)
        elif kind == "repeats":
            ids = rng.integers(0, total, n)
        else:  # a few sorted stretches one after another (a worker's blocks running on)
            ids = np.concatenate([np.sort(rng.choice(total, max(1, n // 3), replace=False)) for _ in range(3)])
        geo = _geometry(file_rows, row_bytes, raw)
        sel = Selection.from_ids(ids)
        plan = plan_reads(sel.starts, sel.stops, geo)
        data = np.arange(total, dtype=np.int64) * 7 + 1
        out, writes = _execute(plan, geo, data, len(ids))
        np.testing.assert_array_equal(out, ids * 7 + 1)
        assert np.all(writes == 1), "every output row written exactly once"
        assert plan.calls <= len(ids), "never more read calls than rows"


def test_a_contiguous_block_across_two_files_is_one_direct_read_per_file():
    plan = plan_reads(np.array([500]), np.array([1500]), _geometry([1000, 1000]))
    d = plan.direct
    assert plan.gathers == []
    assert (d.files.tolist(), d.starts.tolist(), d.stops.tolist(), d.out_pos.tolist()) == \
        ([0, 1], [500, 0], [1000, 500], [0, 500])


def test_runs_crossing_files_are_cut_at_the_file_boundaries():
    geo = _geometry([10, 5, 10])
    files, starts, stops = split_at_files(np.array([2, 8]), np.array([4, 22]), geo)
    assert (files.tolist(), starts.tolist(), stops.tolist()) == ([0, 0, 1, 2], [2, 8, 10, 15], [4, 10, 15, 22])
