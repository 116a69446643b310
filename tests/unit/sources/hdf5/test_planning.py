"""queuepipe.sources.hdf5.planning: from a selection to blocks, their order per epoch, and the
reads of one block.  Contract: the block order of an epoch is the same permutation for every
worker given the seed, a different one per epoch; dealing the blocks to workers and regrouping
them into exact chunks delivers every selected row once per epoch; a block's read plan writes
every output row exactly once with the selected row, never reading outside a file.
Pure numpy, no files, no TensorFlow."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuepipe.sources.hdf5.planning import (CALL_BYTES, RAW_CALL_BYTES, choose_block_batches, count_blocks,
                                             epoch_order, exact_chunks, geometry, merge_gap, plan_reads,
                                             split_at_files)
from queuepipe.sources.hdf5.selection import Selection


def test_block_batches_snap_to_whole_chunks():
    assert choose_block_batches(128, 7, 256) == 8          # 896 rows -> 1024 = 4 chunks
    assert choose_block_batches(64, 32, 256) == 32         # 2048 rows: already whole chunks
    assert choose_block_batches(128, 7, None) == 7
    assert choose_block_batches(100, 4, 1000) == 4         # lcm 1000 > 2 * 400: keep the target


def test_epoch_order_is_shared_and_changes_per_epoch():
    a, b = epoch_order(50, 7, 0, True), epoch_order(50, 7, 0, True)
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, 7, 1, True))
    np.testing.assert_array_equal(epoch_order(5, 7, 3, False), np.arange(5))


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=8), st.integers(1, 9))
@settings(max_examples=50, deadline=None)
def test_exact_chunks_regroups_positions_without_loss(segments, rows):
    segments = [(min(a, b), max(a, b)) for a, b in segments]
    chunks = list(exact_chunks(iter(segments), rows))
    sizes = [sum(q - p for p, q in c) for c in chunks]
    assert all(s == rows for s in sizes[:-1]) and (not sizes or 0 < sizes[-1] <= rows)
    flat = [i for c in chunks for p, q in c for i in range(p, q)]
    assert flat == [i for p, q in segments for i in range(p, q)]


# -- reads of a block -------------------------------------------------------------------------------

def _geometry(file_rows, row_bytes=4096, filtered_chunk_rows=None, raw=False):
    return geometry(file_rows, [filtered_chunk_rows] * len(file_rows), row_bytes, [raw] * len(file_rows))


def _execute(plan, geo, data):
    """Run a plan against an in-memory 'file' set; count writes per output row."""
    d = plan.direct
    n = int(max([0] + [p + e - s for p, s, e in zip(d.out_pos, d.starts, d.stops)]
                + [g.out_pos + len(g.take) if g.out_index is None else int(g.out_index.max()) + 1
                   for g in plan.gathers]))
    out = np.full(n, -1, np.int64)
    writes = np.zeros(n, np.int64)
    for f, s, e, p in zip(d.files, d.starts, d.stops, d.out_pos):
        assert 0 <= s < e <= geo.offsets[f + 1] - geo.offsets[f], "read outside its file"
        out[p:p + e - s] = data[geo.offsets[f] + s: geo.offsets[f] + e]
        writes[p:p + e - s] += 1
    for g in plan.gathers:
        for f, s, e in g.slabs:
            assert 0 <= s < e <= geo.offsets[f + 1] - geo.offsets[f], "slab outside its file"
        scratch = np.concatenate([data[geo.offsets[f] + s: geo.offsets[f] + e] for f, s, e in g.slabs])
        assert len(scratch) <= geo.max_span or len(g.slabs) == 1
        index = g.out_index if g.out_index is not None else np.arange(g.out_pos, g.out_pos + len(g.take))
        out[index] = scratch[g.take]
        writes[index] += 1
    return out, writes


@st.composite
def blocks(draw):
    file_rows = draw(st.lists(st.integers(1, 400), min_size=1, max_size=4))
    total = sum(file_rows)
    kind = draw(st.sampled_from(["sorted", "unsorted", "ranges", "dups", "pieces"]))
    n = draw(st.integers(1, min(total, 300)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "sorted":
        ids = np.sort(rng.choice(total, n, replace=False))
    elif kind == "unsorted":
        ids = rng.choice(total, n, replace=False)
    elif kind == "dups":
        ids = rng.integers(0, total, n)
    elif kind == "pieces":  # a few sorted stretches one after another (a chunk spanning blocks)
        ids = np.concatenate([np.sort(rng.choice(total, max(1, n // 3), replace=False)) for _ in range(3)])
    else:
        start = int(rng.integers(0, total))
        ids = np.arange(start, min(total, start + n))
    row_bytes = draw(st.sampled_from([8, 512, 4096, 1 << 20]))
    return file_rows, ids.astype(np.int64), row_bytes, draw(st.booleans())


@given(blocks())
@settings(max_examples=80, deadline=None)
def test_plans_deliver_exactly_the_selected_rows_in_order(block):
    file_rows, ids, row_bytes, raw = block
    geo = _geometry(file_rows, row_bytes, raw=raw)
    sel = Selection.from_ids(ids)
    plan = plan_reads(sel.starts, sel.stops, geo)
    data = np.arange(sum(file_rows), dtype=np.int64) * 7
    out, writes = _execute(plan, geo, data)
    np.testing.assert_array_equal(out, ids * 7)
    assert np.all(writes == 1), "every output row written exactly once"
    assert plan.calls <= len(ids), "never more calls than rows"
    if len(np.unique(ids)) == len(ids):
        assert plan.calls <= len(sel.starts) + len(file_rows), "at most one call per stretch (per file)"


def test_contiguous_rows_are_one_direct_read_per_file():
    geo = _geometry([1000, 1000])
    plan = plan_reads(np.array([500]), np.array([1500]), geo)
    assert plan.gathers == []
    d = plan.direct
    assert (d.files.tolist(), d.starts.tolist(), d.stops.tolist(), d.out_pos.tolist()) == \
        ([0, 1], [500, 0], [1000, 500], [0, 500])


def test_dense_random_selection_is_gathered_from_covering_slabs():
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(20000, 4000, replace=False))   # 20 %: gaps of ~4 rows
    geo = _geometry([20000])                                # through h5py: ~10 us a call
    sel = Selection.from_ids(ids)
    plan = plan_reads(sel.starts, sel.stops, geo)
    assert plan.calls <= 8, "a few covering slabs, not one call per stretch"
    assert len(plan.direct) == 0


def test_raw_rows_read_runs_straight_into_the_output():
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(20000, 4000, replace=False))
    geo = _geometry([20000], raw=True)                      # preadv: ~2 us a call
    sel = Selection.from_ids(ids)
    plan = plan_reads(sel.starts, sel.stops, geo)
    assert not plan.gathers, "each stretch straight into the output"
    assert int((plan.direct.stops - plan.direct.starts).sum()) == 4000, "no unselected row read"


def test_a_chunk_spanning_two_blocks_is_still_read_in_stretches():
    rng = np.random.default_rng(1)
    late = np.sort(rng.choice(np.arange(10000, 20000), 200, replace=False))
    early = np.sort(rng.choice(np.arange(0, 10000), 800, replace=False))
    sel = Selection.from_ids(np.concatenate([late, early]))  # block 7's tail, then block 2
    plan = plan_reads(sel.starts, sel.stops, _geometry([20000], raw=True))
    assert not plan.gathers and int((plan.direct.stops - plan.direct.starts).sum()) == 1000


def test_sparse_selection_of_big_rows_reads_only_the_rows():
    ids = np.arange(0, 100000, 1000)                        # 1 row in 1000, 1 MiB rows
    geo = _geometry([100000], row_bytes=1 << 20)
    sel = Selection.from_ids(ids)
    plan = plan_reads(sel.starts, sel.stops, geo)
    assert not plan.gathers and len(plan.direct) == len(ids)
    assert np.all(plan.direct.stops - plan.direct.starts == 1)


def test_merge_gap_weighs_a_call_against_bytes_and_compressed_chunks():
    assert merge_gap(4096, CALL_BYTES, None) == 32         # an h5py call ~ 128 KiB ~ 32 rows of 4 KiB
    assert merge_gap(4096, RAW_CALL_BYTES, None) == 3      # a raw preadv ~ 12 KiB
    assert merge_gap(8, CALL_BYTES, None) == 16384
    assert merge_gap(4096, CALL_BYTES, 256) == 255         # a gap inside one compressed chunk is free
    assert merge_gap(1 << 20, CALL_BYTES, None) == 0


def test_unsorted_block_reads_sorted_slabs_then_reorders():
    ids = np.array([900, 5, 6, 7, 450, 901, 4])
    geo = _geometry([1000], row_bytes=8)
    sel = Selection.from_ids(ids)
    plan = plan_reads(sel.starts, sel.stops, geo)
    assert len(plan.direct) == 0 and [g.slabs for g in plan.gathers] == [[(0, 4, 902)]]
    out, _ = _execute(plan, geo, np.arange(1000))
    np.testing.assert_array_equal(out, ids)


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


def test_runs_crossing_files_are_cut_at_the_file_boundaries():
    geo = _geometry([10, 5, 10])
    files, starts, stops = split_at_files(np.array([2, 8]), np.array([4, 22]), geo)
    assert (files.tolist(), starts.tolist(), stops.tolist()) == ([0, 0, 1, 2], [2, 8, 10, 15], [4, 10, 15, 22])
