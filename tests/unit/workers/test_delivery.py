"""queuepipe.workers.delivery.Delivery: which of a run's blocks may go to the queue, in what order.

Leftover rows (each worker's tail of an epoch, fewer than a batch) are merged, so only the
very last batch of a run can be short -- and only with ``allow_smaller``; without it those
rows are dropped and counted.  Epochs go out in order: a block of epoch e+1 waits until
every row of epoch e is confirmed in the queue.  After a failure nothing but the failure
goes out behind data still on its way.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from queuepipe.spec import Spec
from queuepipe.workers.buffers import Block
from queuepipe.workers.delivery import Delivery


def _spec():
    return Spec.build({"id": np.int64, "name": object}, {"id": (), "name": ()})


def _block(ids, epoch=0, tail=False, batch_size=4):
    ids = np.asarray(ids, np.int64)
    n = len(ids)
    return Block([ids, np.array([b"r%d" % i for i in ids], dtype=object)], n,
                 0 if tail else max(1, n // batch_size), tail=tail, epoch=epoch)


def _delivery(workers, batch_size=4, allow_smaller=True):
    return Delivery(_spec(), workers, batch_size, allow_smaller, split=lambda b: [b])


def _drain(d: Delivery, worker: int) -> List[Block]:
    """Take and confirm every block worker ``worker`` may deliver now."""
    out = []
    while True:
        block: Optional[Block] = d.take(worker)
        if block is None:
            return out
        d.confirm(worker)
        out.append(block)


def _merge(tails, batch_size, allow_smaller):
    d = _delivery(len(tails), batch_size, allow_smaller)
    outs = []
    for i, t in enumerate(tails):
        d.received(i, _block(t, tail=True))
        d.end(i)
        outs.append(_drain(d, i))
    return d, outs


def test_only_the_last_worker_to_finish_gets_the_merged_rows():
    d, outs = _merge([[0, 1, 2], [10, 11, 12], [20, 21]], 4, True)
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
    d, outs = _merge([[0, 1, 2], [10, 11, 12], [20, 21, 22], [30]], 4, False)
    blocks = outs[-1]
    assert all(b.n_rows == b.n_batches * 4 for b in blocks)
    assert sum(b.n_rows for b in blocks) == 8 and d.dropped_rows == 2
    d, outs = _merge([[0, 1], [2, 3], [4, 5, 6], [7]], 4, False)   # whole batches: nothing dropped
    assert [b.n_rows for b in outs[-1]] == [8] and d.dropped_rows == 0
    d, outs = _merge([[], [], []], 4, False)                         # no leftovers at all
    assert outs == [[], [], []] and d.dropped_rows == 0


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


def test_a_block_of_the_next_epoch_waits_until_the_epoch_is_confirmed_in_the_queue():
    d = _delivery(2)
    d.received(0, _block([0, 1, 2, 3], epoch=0))
    d.received(1, _block([4, 5, 6, 7], epoch=0))
    d.received(1, _block([], epoch=0, tail=True))
    d.received(1, _block([100, 101, 102, 103], epoch=1))   # worker 1 is ahead
    first = d.take(0)
    assert first.columns[0].tolist() == [0, 1, 2, 3]
    assert d.take(1).columns[0].tolist() == [4, 5, 6, 7]
    d.confirm(1)
    assert d.take(1) is None, "epoch 1 went out while worker 0 still had epoch-0 rows"
    d.received(0, _block([], epoch=0, tail=True))
    assert d.take(1) is None, "epoch 1 went out while worker 0's epoch-0 block was not yet in the queue"
    d.confirm(0)
    assert d.take(1).columns[0].tolist() == [100, 101, 102, 103]


def test_leftover_rows_of_an_epoch_head_the_next_epoch_and_nothing_is_lost():
    # 2 workers, batch 4: epoch 0 leaves 3 + 2 leftover rows: one merged batch + 1 carried row
    d = _delivery(2)
    d.received(0, _block([0, 1, 2, 3]))
    d.received(0, _block([4, 5, 6], tail=True))
    d.received(1, _block([10, 11, 12, 13]))
    d.received(1, _block([14, 15], tail=True))
    order = _drain(d, 0) + _drain(d, 1)
    assert sorted(np.concatenate([b.columns[0] for b in order]).tolist()) == \
        sorted([0, 1, 2, 3, 10, 11, 12, 13, 4, 5, 6, 14])  # the merged batch: the first 4 leftovers
    # epoch 1: the carried row (15) goes first, at the head of the first epoch-1 batch
    d.received(0, _block([200, 201, 202, 203], epoch=1))
    d.received(1, _block([300, 301, 302, 303], epoch=1))
    first = d.take(1)
    assert first.columns[0].tolist()[0] == 15 and first.n_rows == 4
    assert d.take(0) is None, "a block went out beside the one carrying the older rows"
    d.confirm(1)
    second = d.take(0)
    assert second is not None
    d.confirm(0)
    d.received(0, _block([], epoch=1, tail=True))
    d.received(1, _block([], epoch=1, tail=True))
    d.end(0)
    d.end(1)
    rest = _drain(d, 0) + _drain(d, 1)
    delivered = np.concatenate([b.columns[0] for b in order + [first, second] + rest]).tolist()
    epoch1 = [200, 201, 202, 203, 300, 301, 302, 303]
    # the displaced last row of the carrier comes out in the final (short) batch
    assert sorted(delivered) == sorted([0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15] + epoch1)
    assert len(delivered) == len(set(delivered))


def test_after_a_failure_no_data_is_in_flight_when_the_poison_goes():
    d = _delivery(2)
    d.received(0, _block([0, 1, 2, 3]))
    assert d.take(0) is not None
    assert d.data_in_flight(but=1)
    d.confirm(0)
    assert not d.data_in_flight(but=1)
