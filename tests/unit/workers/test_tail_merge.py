"""queuepipe.workers.runtime.TailMerger: every worker's leftover rows (its tail, fewer than a
batch) are merged when the last worker of a run finishes, so only the very last batch of a run
can be short -- and only with ``allow_smaller``; without it those rows are dropped and counted.
No row is lost to per-worker remainders."""
from __future__ import annotations

import numpy as np

from queuepipe.spec import Spec
from queuepipe.workers.buffers import Block
from queuepipe.workers.runtime import TailMerger


def _spec():
    return Spec.build({"id": np.int64, "name": object}, {"id": (), "name": ()})


def _tail(ids):
    ids = np.asarray(ids, np.int64)
    return Block([ids, np.array([b"r%d" % i for i in ids], dtype=object)], len(ids), 0, tail=True)


def _merge(tails, batch_size, allow_smaller):
    merger = TailMerger(_spec(), len(tails), batch_size, allow_smaller)
    outs = [merger.add(_tail(t)) for t in tails]
    return merger, outs


def test_only_the_last_worker_to_finish_gets_the_merged_rows():
    merger, outs = _merge([[0, 1, 2], [10, 11, 12], [20, 21]], 4, True)
    assert outs[0] == [] and outs[1] == []
    assert sum(b.n_rows for b in outs[2]) == 8


def test_the_merged_tails_are_whole_batches_with_only_the_last_short():
    _, outs = _merge([[0, 1, 2], [10, 11, 12], [20, 21, 22], [30]], 4, True)   # 10 rows
    blocks = outs[-1]
    sizes = [b.n_rows for b in blocks]
    assert sum(sizes) == 10 and sizes[-1] == 2
    for b in blocks[:-1]:
        assert b.n_rows == b.n_batches * 4 and not b.tail
    assert blocks[-1].n_batches == 1


def test_without_allow_smaller_the_short_final_batch_is_dropped_and_counted():
    merger, outs = _merge([[0, 1, 2], [10, 11, 12], [20, 21, 22], [30]], 4, False)
    blocks = outs[-1]
    assert all(b.n_rows == b.n_batches * 4 for b in blocks)
    assert sum(b.n_rows for b in blocks) == 8 and merger.dropped_rows == 2
    merger, outs = _merge([[0, 1], [2, 3], [4, 5, 6], [7]], 4, False)   # whole batches: nothing dropped
    assert [b.n_rows for b in outs[-1]] == [8] and merger.dropped_rows == 0
    merger, outs = _merge([[], [], []], 4, False)                         # no leftovers at all
    assert outs == [[], [], []] and merger.dropped_rows == 0


def test_no_row_is_lost_or_repeated_across_workers_and_fields_stay_together():
    rng = np.random.default_rng(0)
    tails, nxt = [], 0
    for _ in range(7):
        n = int(rng.integers(0, 5))
        tails.append(list(range(nxt, nxt + n)))
        nxt += n
    _, outs = _merge(tails, 5, True)
    blocks = [b for out in outs for b in out]
    ids = np.concatenate([b.columns[0] for b in blocks])
    assert sorted(ids.tolist()) == list(range(nxt))
    for b in blocks:
        assert b.columns[1].tolist() == [b"r%d" % i for i in b.columns[0]]
