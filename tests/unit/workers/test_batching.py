"""queuepipe.workers.batching: one worker's column chunks become blocks of whole batches.

Contract: in order (no shuffle) rows come out in the order they went in, in blocks of at
most ``batches_per_block`` whole batches, handed over early when ``time_budget`` passes;
an aligned chunk of whole batches passes through uncopied; with ``shuffle_rows`` rows are
drawn without replacement and a seed fixes the order whatever the chunk sizes; the last
block is a raw, unpadded ``tail`` of fewer than a batch.  ``assemble`` pads padded fields
per batch.  ``_ShuffleBuffer`` draws each row exactly once.
"""
from __future__ import annotations

import time

import numpy as np

from queuepipe.spec import Spec
from queuepipe.workers.batching import Batcher, _ShuffleBuffer, assemble
from queuepipe.workers.buffers import ALIGNMENT, aligned_block, aligned_empty

FOREVER = 3600.0  # a time budget that never runs out during a test


def _spec():
    """Two static fields: an id and a row of 3 floats derived from it."""
    return Spec.build((np.int64, np.float32), ((), (3,)))


def _chunk(ids):
    """Columns for ``ids``: deliberately not 64-byte aligned, so nothing passes through."""
    ids = np.asarray(ids, np.int64)
    idcol = np.empty(len(ids) + 1, np.int64)[1:]
    idcol[:] = ids
    return [idcol, ids.astype(np.float32)[:, None] * np.ones((1, 3), np.float32)]


def _chunks(sizes, start=0):
    out, nxt = [], start
    for n in sizes:
        out.append(_chunk(np.arange(nxt, nxt + n)))
        nxt += n
    return out


def _split(blocks):
    blocks = list(blocks)
    assert blocks and blocks[-1].tail, "the last block is always the tail"
    assert not any(b.tail for b in blocks[:-1])
    return blocks[:-1], blocks[-1]


def _check_rows_travel_together(block):
    ids, vec = block.columns
    np.testing.assert_array_equal(vec, ids.astype(np.float32)[:, None] * np.ones((1, 3), np.float32))


# -- in order ------------------------------------------------------------------------------------

def test_ordered_blocks_keep_the_row_order_in_whole_batches_of_at_most_batches_per_block():
    B, K = 4, 3
    sizes = [3, 5, 7, 2, 9, 1, 6, 11, 3]        # 47 rows: 11 batches and 3 left over
    blocks, tail = _split(Batcher(_spec(), B, K, time_budget=FOREVER).blocks(_chunks(sizes)))
    total = sum(sizes)
    for b in blocks:
        assert 1 <= b.n_batches <= K and b.n_rows == b.n_batches * B
        assert all(c.ctypes.data % ALIGNMENT == 0 for c in b.columns)
        _check_rows_travel_together(b)
    assert [b.n_batches for b in blocks[:-1]] == [K] * (len(blocks) - 1)  # full until the end
    ids = np.concatenate([b.columns[0] for b in blocks])
    np.testing.assert_array_equal(ids, np.arange(total - total % B))
    assert tail.n_rows == total % B


def test_the_tail_holds_the_leftover_rows_raw_and_is_empty_when_nothing_is_left():
    B = 4
    _, tail = _split(Batcher(_spec(), B, 2, time_budget=FOREVER).blocks(_chunks([5, 6])))  # 11 rows
    assert (tail.n_rows, tail.n_batches) == (3, 0)
    np.testing.assert_array_equal(tail.columns[0], [8, 9, 10])
    _check_rows_travel_together(tail)
    _, empty = _split(Batcher(_spec(), B, 2, time_budget=FOREVER).blocks(_chunks([5, 3])))  # 8 rows
    assert (empty.n_rows, empty.columns) == (0, [])
    blocks, short = _split(Batcher(_spec(), 8, 2).blocks(_chunks([3, 2])))  # fewer than a batch
    assert blocks == [] and short.columns[0].tolist() == [0, 1, 2, 3, 4]
    blocks, nothing = _split(Batcher(_spec(), 4, 2).blocks(iter([])))      # no chunks at all
    assert blocks == [] and nothing.n_rows == 0


def test_an_aligned_chunk_of_whole_batches_passes_through_uncopied_and_an_unaligned_one_is_copied():
    ids = aligned_empty((8,), np.int64)
    ids[:] = np.arange(8)
    vec = aligned_empty((8, 3), np.float32)
    vec[:] = ids.astype(np.float32)[:, None]
    blocks, _ = _split(Batcher(_spec(), 4, 1).blocks(iter([[ids, vec]])))
    assert len(blocks) == 1
    assert blocks[0].columns[0] is ids and blocks[0].columns[1] is vec
    assert (blocks[0].n_rows, blocks[0].n_batches) == (8, 2)

    chunk = _chunk(np.arange(8))
    assert chunk[0].ctypes.data % ALIGNMENT != 0
    blocks, _ = _split(Batcher(_spec(), 4, 2).blocks(iter([chunk])))
    assert len(blocks) == 1 and not np.shares_memory(blocks[0].columns[0], chunk[0])
    assert blocks[0].columns[0].ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(blocks[0].columns[0], np.arange(8))


def _slow(sizes, requested):
    for chunk in _chunks(sizes):
        time.sleep(0.002)
        requested.append(len(chunk[0]))
        yield chunk


def test_a_slow_source_gets_a_block_as_soon_as_a_batch_is_ready_once_the_time_budget_passes():
    requested = []
    blocks = Batcher(_spec(), 4, 100, time_budget=0.0).blocks(_slow([5] * 10, requested))
    first = next(blocks)
    assert len(requested) == 1, "handed over after the first chunk, not after the whole block filled"
    assert (first.n_rows, first.n_batches) == (4, 1)
    rest, tail = _split(blocks)
    ids = np.concatenate([first.columns[0]] + [b.columns[0] for b in rest] + [tail.columns[0]])
    np.testing.assert_array_equal(ids, np.arange(50))

    requested = []  # with time to spare, a block waits until it is full (or the data ends)
    first = next(Batcher(_spec(), 4, 100, time_budget=FOREVER).blocks(_slow([5] * 10, requested)))
    assert len(requested) == 10 and first.n_batches == 12


def test_new_blocks_are_written_into_buffers_from_the_allocator_given():
    asked = []

    def allocate(wanted):
        asked.append([(tuple(s), np.dtype(d)) for s, d in wanted])
        return aligned_block(wanted)

    blocks, _ = _split(Batcher(_spec(), 4, 2, allocate=allocate, time_budget=FOREVER)
                       .blocks(_chunks([3, 5, 7, 5])))
    assert asked, "the allocator was used"
    assert asked[0] == [((8,), np.dtype(np.int64)), ((8, 3), np.dtype(np.float32))]
    assert len(asked) == len(blocks)


# -- padded fields -------------------------------------------------------------------------------

def test_a_spec_with_padded_fields_gets_one_batch_per_block_each_padded_to_its_longest_row():
    spec = Spec.build((np.int64, np.int32), ((), (None,)), dynamic_pad=True)
    lengths = [1, 3, 2, 5, 4, 1, 2]
    samples = [(i, np.full(n, i + 1, np.int32)) for i, n in enumerate(lengths)]
    cols = spec.columns_from_samples(samples, "test")
    blocks, tail = _split(Batcher(spec, 2, 8, time_budget=FOREVER).blocks(iter([cols])))
    assert [b.n_batches for b in blocks] == [1, 1, 1]
    for k, b in enumerate(blocks):
        rows = lengths[2 * k:2 * k + 2]
        assert b.columns[1].shape == (2, max(rows))
        for r, n in enumerate(rows):
            assert b.columns[1][r, :n].tolist() == [2 * k + r + 1] * n
            assert not b.columns[1][r, n:].any(), "padded with zeros"
    assert tail.n_rows == 1 and tail.columns[1][0].tolist() == [7] * 2  # raw, unpadded


# -- shuffled ------------------------------------------------------------------------------------

def _shuffled_ids(sizes, seed, shuffle_rows=16, B=4, K=3):
    batcher = Batcher(_spec(), B, K, shuffle_rows, rng=np.random.default_rng(seed), time_budget=FOREVER)
    blocks, tail = _split(batcher.blocks(_chunks(sizes)))
    for b in blocks + ([tail] if tail.n_rows else []):
        _check_rows_travel_together(b)
    for b in blocks:
        assert 1 <= b.n_batches <= K and b.n_rows == b.n_batches * B
    return np.concatenate([b.columns[0] for b in blocks] + ([tail.columns[0]] if tail.n_rows else []))


def test_shuffled_blocks_deliver_every_row_exactly_once_in_a_mixed_order():
    ids = _shuffled_ids([7] * 15, seed=3)                        # 105 rows
    assert sorted(ids.tolist()) == list(range(105))
    assert not np.array_equal(ids, np.arange(105))
    assert abs(np.corrcoef(ids, np.arange(105))[0, 1]) < 0.99   # mixed, not just locally permuted


def test_a_seed_fixes_the_shuffled_order_whatever_the_chunk_sizes():
    a = _shuffled_ids([7] * 15, seed=11)
    b = _shuffled_ids([13, 1, 40, 2, 49], seed=11)               # the same 105 rows, cut differently
    c = _shuffled_ids([105], seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# -- assemble ------------------------------------------------------------------------------------

def test_assemble_puts_whole_batches_in_one_block_and_the_remainder_in_one_smaller_batch():
    cols = _chunk(np.arange(10))
    blocks = assemble(_spec(), cols, 4)
    assert [(b.n_rows, b.n_batches, b.tail) for b in blocks] == [(8, 2, False), (2, 1, False)]
    np.testing.assert_array_equal(np.concatenate([b.columns[0] for b in blocks]), np.arange(10))
    assert all(c.ctypes.data % ALIGNMENT == 0 for b in blocks for c in b.columns)
    assert not np.shares_memory(blocks[0].columns[0], cols[0]), "assembled into fresh buffers"


def test_assemble_pads_numbers_with_zero_and_strings_with_empty_bytes_per_batch():
    spec = Spec.build((np.int32, object), ((None,), (None,)), dynamic_pad=True)
    samples = [([1], ["a"]), ([1, 2, 3], ["b", "c"]), ([4, 5], ["d", "e", "f"])]
    blocks = assemble(spec, spec.columns_from_samples(samples, "test"), 2)
    assert [(b.n_rows, b.n_batches) for b in blocks] == [(2, 1), (1, 1)]
    np.testing.assert_array_equal(blocks[0].columns[0], [[1, 0, 0], [1, 2, 3]])
    assert blocks[0].columns[1].tolist() == [[b"a", b""], [b"b", b"c"]]
    np.testing.assert_array_equal(blocks[1].columns[0], [[4, 5]])
    assert blocks[1].columns[1].tolist() == [[b"d", b"e", b"f"]]


# -- the shuffle buffer --------------------------------------------------------------------------

def test_the_shuffle_buffer_draws_without_replacement_until_it_is_empty():
    pool = _ShuffleBuffer(np.random.default_rng(0))
    drawn = []
    for k in range(6):
        ids = np.arange(50 * k, 50 * k + 50, dtype=np.int64)
        pool.add([ids, np.array([str(i).encode() for i in ids], dtype=object)])
        n = 30 if k < 5 else pool.rows
        dest = [np.empty(n, np.int64), np.empty(n, object)]
        pool.take_into(dest, n)
        assert dest[1].tolist() == [str(i).encode() for i in dest[0]], "a row's fields stay together"
        drawn.append(dest[0])
    drawn = np.concatenate(drawn)
    assert pool.rows == 0
    assert sorted(drawn.tolist()) == list(range(300))
    assert all(v is None for v in pool.columns[1]), "no references kept to drawn string rows"
