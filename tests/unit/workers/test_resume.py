"""queuepipe.workers.resume: position labels, their ledgers, and a worker's recomputed order.

Contract: a ledger filled (as the graph does) with the labels of the rows a consumer took
decodes to exactly those rows -- the first epoch not used up, and a mask of the used rows of
each epoch used in part -- through any number of epochs (bits set in even generations of a
parity, cleared in odd ones); inconsistent ledgers are refused.  ``epoch_order`` replays a
worker's batcher on positions alone and gives the very order the real batcher puts out,
including the previous epoch's rows that head a one-worker epoch.
"""
from __future__ import annotations

import numpy as np
import pytest

from queuepipe.spec import Spec
from queuepipe.workers.batching import Batcher, NewEpoch
from queuepipe.workers.resume import ResumePoint, SelectionLedger, StreamLedger, epoch_order


def _fill(ledger: SelectionLedger, taken):
    """The ledger variable after the consumer took ``taken``: (epoch, positions) pairs."""
    value = np.zeros(ledger.length, np.int64)
    for epoch, positions in taken:
        labels = ledger.labels(np.asarray(positions), epoch)
        np.add.at(value, labels[:, 0], labels[:, 2])  # the graph's ResourceScatterAdd
        np.add.at(value, labels[:, 1], labels[:, 3])
    return value


@pytest.mark.parametrize("size", [1, 62, 63, 64, 1000])
def test_a_selection_ledger_decodes_to_exactly_the_rows_taken(size):
    ledger = SelectionLedger(size)
    rng = np.random.default_rng(size)
    for epochs_done in range(5):  # epochs 0..epochs_done-1 used up; then part of the next
        part = rng.permutation(size)[:rng.integers(0, size)]  # fewer than all: the epoch is used in part
        taken = [(e, rng.permutation(size)) for e in range(epochs_done)] + [(epochs_done, part)]
        point = ledger.resume_point(_fill(ledger, taken), seed=7, where="test")
        assert point.seed == 7
        if len(part) == 0:
            assert point.first_epoch == epochs_done and not point.used
            continue
        assert point.first_epoch == epochs_done
        assert set(point.used) == {epochs_done}
        assert np.flatnonzero(point.used[epochs_done]).tolist() == sorted(part.tolist())


def test_two_epochs_in_part_at_once_are_both_decoded():
    ledger = SelectionLedger(100)
    taken = [(0, np.arange(100)), (1, np.arange(90)), (2, [5, 7])]  # epoch 1's last 10 rows still out
    point = ledger.resume_point(_fill(ledger, taken), seed=1, where="test")
    assert point.first_epoch == 1
    assert np.flatnonzero(point.used[1]).tolist() == list(range(90))
    assert np.flatnonzero(point.used[2]).tolist() == [5, 7]


def test_an_inconsistent_or_foreign_ledger_is_refused():
    ledger = SelectionLedger(100)
    value = _fill(ledger, [(0, np.arange(10))])
    value[-2] += 1  # one row counted that no bit shows
    with pytest.raises(ValueError, match="inconsistent"):
        ledger.resume_point(value, seed=1, where="pipeline 'p'")
    with pytest.raises(ValueError, match="entries"):
        ledger.resume_point(np.zeros(3, np.int64), seed=1, where="pipeline 'p'")


def test_a_fresh_ledger_starts_at_the_beginning():
    assert SelectionLedger(10).resume_point(np.zeros(SelectionLedger(10).length, np.int64), 3, "t").fresh
    assert StreamLedger(2).resume_point(np.zeros(2, np.int64), 3, "t").fresh
    assert not ResumePoint(seed=0, first_epoch=1).fresh


def test_a_stream_ledger_gives_each_worker_its_epoch_and_start():
    ledger = StreamLedger(3)
    value = np.zeros(3, np.int64)
    for worker, epoch, first, n in [(0, 0, 0, 16), (0, 0, 16, 16), (2, 4, 10, 5)]:
        labels = ledger.labels(worker, epoch, first, n)
        np.maximum.at(value, labels[:, 0], labels[:, 1])  # the graph's ResourceScatterMax
    point = ledger.resume_point(value, seed=9, where="t")
    assert point.starts == [(0, 32), (0, 0), (4, 15)]
    with pytest.raises(ValueError, match="keep the number of workers"):
        ledger.resume_point(np.zeros(2, np.int64), seed=9, where="t")


def _real_order(chunks_by_epoch, batch_size, shuffle_rows, seed, epoch_tails):
    """Positions in the order a real Batcher over several epochs puts them out, per epoch."""
    spec = Spec.build((np.int64,), ((),))
    batcher = Batcher(spec, batch_size, 2, shuffle_rows, time_budget=3600.0, epoch_tails=epoch_tails,
                      epoch_rng=lambda e: np.random.default_rng([seed, e]))
    stream = []
    for epoch, chunks in enumerate(chunks_by_epoch):
        if epoch:
            stream.append(NewEpoch(epoch))
        stream += [[np.asarray(c, np.int64)] for c in chunks]
    out = np.concatenate([b.columns[0] for b in batcher.blocks(stream) if b.n_rows])
    return out


@pytest.mark.parametrize("epoch_tails", [False, True])
def test_epoch_order_replays_the_real_batcher_without_reading_a_row(epoch_tails):
    batch, rows = 16, 250  # 250 rows an epoch: one worker carries 250 % 16 = 10 rows into epoch 1
    chunks = [np.arange(s, min(s + 32, rows)) for s in range(0, rows, 32)]
    real = _real_order([chunks, chunks, chunks], batch, 48, seed=5, epoch_tails=epoch_tails)
    assert sorted(real.tolist()) == sorted(list(range(rows)) * 3)
    starts = [0, rows, 2 * rows]
    for epoch in range(3):
        carried = 0 if epoch_tails else (epoch * rows) % batch
        replay = epoch_order(chunks, batch_size=batch, batches_per_block=2, shuffle_rows=48,
                             rng=np.random.default_rng([5, epoch]), carried_in=carried)
        # one worker: the previous epoch's leftovers head this epoch's first batch, yet each
        # epoch's rows are still the next stretch of the stream (the boundary batch: older first)
        np.testing.assert_array_equal(replay, real[starts[epoch]:starts[epoch] + rows])


def test_epoch_order_without_shuffle_is_the_chunks_order():
    chunks = [np.array([5, 6, 7]), np.array([1, 2])]
    order = epoch_order(chunks, batch_size=2, batches_per_block=1, shuffle_rows=0, rng=np.random.default_rng(0))
    assert order.tolist() == [5, 6, 7, 1, 2]
