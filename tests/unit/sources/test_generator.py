"""queuepipe.sources.generator: column chunks from a user's generator for one worker.

Contract: a *callable* is called afresh per epoch (and per worker), an *iterator object* is
one pass shared by all workers behind a lock (every item delivered once in all); samples
are copied as they are taken (a generator may refill one buffer) and grouped into chunks
of at most ``chunk_rows``; ``yields="blocks"`` turns each yielded block into one chunk; a
worker's unknown dims are fixed by its first data; errors say which worker, epoch and items.

Every test that drives ``GeneratorSource.chunks`` goes through :func:`_chunks` below, the
one place that knows its signature.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from queuepipe.errors import SpecError
from queuepipe.sources.generator import GeneratorSource, SharedIterator, _detached
from queuepipe.spec import Spec
from queuepipe.workers.buffers import aligned_block

FOREVER = 3600.0


def _chunks(source, on_epoch=None, where="worker 0 of 1"):
    """Drive ``source.chunks`` (the only call of it in this module): ``chunks(where, on_epoch, allocate)``."""
    return source.chunks(where, on_epoch if on_epoch is not None else (lambda epoch: None), aligned_block)


def _ids(chunks):
    return [int(i) for cols in chunks for i in cols[0]]


def _spec():
    return Spec.build((np.int64, np.float32), ((), (2,)))


def _samples(n, start=0):
    def gen():
        for i in range(start, start + n):
            yield i, np.array([i, -i], np.float32)
    return gen


# -- callables and epochs ------------------------------------------------------------------------

def test_a_callable_is_called_again_for_every_epoch_and_each_epoch_is_announced():
    calls, epochs = [], []

    def factory():
        calls.append(len(calls))
        return _samples(5)()

    src = GeneratorSource(factory, _spec(), num_epochs=3, chunk_rows=4, time_budget=FOREVER)
    chunks = list(_chunks(src, epochs.append))
    assert calls == [0, 1, 2] and epochs == [0, 1, 2]
    assert _ids(chunks) == list(range(5)) * 3
    assert [len(c[0]) for c in chunks] == [4, 1] * 3, "chunks of at most chunk_rows, none across epochs"


def test_without_an_epoch_limit_a_callable_repeats_until_the_consumer_stops():
    src = GeneratorSource(_samples(3), _spec(), num_epochs=None, chunk_rows=10, time_budget=FOREVER)
    epochs = []
    it = _chunks(src, epochs.append)
    got = [next(it) for _ in range(5)]
    it.close()
    assert _ids(got) == [0, 1, 2] * 5 and epochs == [0, 1, 2, 3, 4]


def test_the_users_generator_is_closed_at_the_end_of_each_epoch_and_when_the_consumer_stops():
    closed = []

    def factory():
        try:
            yield from _samples(10)()
        finally:
            closed.append(True)

    src = GeneratorSource(factory, _spec(), num_epochs=2, chunk_rows=4, time_budget=FOREVER)
    list(_chunks(src))
    assert closed == [True, True]
    closed.clear()
    it = _chunks(src)
    next(it)
    it.close()
    assert closed == [True], "closing the chunks closes the user's generator (its finally runs)"


def test_samples_and_blocks_are_copied_as_taken_so_a_generator_may_refill_one_buffer():
    def refilling_samples():
        buf = np.zeros(2, np.float32)
        for i in range(6):
            buf[:] = i
            yield i, buf

    src = GeneratorSource(refilling_samples, _spec(), chunk_rows=4, time_budget=FOREVER)
    chunks = list(_chunks(src))
    np.testing.assert_array_equal(np.concatenate([c[1][:, 0] for c in chunks]), np.arange(6))

    def refilling_blocks():
        ids, vec = np.zeros(3, np.int64), np.zeros((3, 2), np.float32)
        for i in range(3):
            ids[:] = i
            yield ids, vec

    src = GeneratorSource(refilling_blocks, _spec(), yields="blocks")
    assert [c[0].tolist() for c in _chunks(src)] == [[0] * 3, [1] * 3, [2] * 3]


def test_detached_copies_the_arrays_of_every_structure_and_keeps_other_values():
    a = np.arange(3)
    for sample in [a, (a, 1), [a, "s"], {"k": a, "n": 2}]:
        copy = _detached(sample)
        leaves = copy if isinstance(copy, (tuple, list)) else (
            list(copy.values()) if isinstance(copy, dict) else [copy])
        arrays = [v for v in leaves if isinstance(v, np.ndarray)]
        assert len(arrays) == 1 and not np.shares_memory(arrays[0], a)
        np.testing.assert_array_equal(arrays[0], a)
        assert type(copy) is type(sample)
    assert _detached(5) == 5 and _detached(b"x") == b"x"


# -- blocks --------------------------------------------------------------------------------------

def test_with_yields_blocks_every_yielded_block_is_one_chunk_of_its_own_rows():
    def blocks():
        for start in (0, 4, 9):
            ids = np.arange(start, start + (4 if start < 9 else 2))
            yield ids, np.stack([ids, -ids], axis=1).astype(np.float32)

    src = GeneratorSource(blocks, _spec(), yields="blocks", num_epochs=2)
    chunks = list(_chunks(src))
    assert [len(c[0]) for c in chunks] == [4, 4, 2] * 2, "the generator's own block sizes"
    assert _ids(chunks) == ([0, 1, 2, 3, 4, 5, 6, 7, 9, 10]) * 2


# -- errors and locked shapes --------------------------------------------------------------------

def test_a_bad_sample_or_block_is_refused_naming_the_worker_epoch_and_items_or_block():
    def samples():
        for i in range(6):
            yield i, np.zeros(2 if i != 4 else 3, np.float32)

    src = GeneratorSource(samples, _spec(), chunk_rows=3, time_budget=FOREVER, num_epochs=2)
    with pytest.raises(SpecError) as err:
        list(_chunks(src, where="worker 1 of 2"))
    msg = str(err.value)
    assert "worker 1 of 2, epoch 0" in msg and "items 3..5" in msg and "field [1]" in msg, msg

    def blocks():
        yield np.arange(2), np.zeros((2, 2), np.float32)
        yield np.arange(2), np.zeros((2, 3), np.float32)

    src = GeneratorSource(blocks, _spec(), yields="blocks")
    with pytest.raises(SpecError) as err:
        list(_chunks(src, where="worker 3 of 4"))
    msg = str(err.value)
    assert "worker 3 of 4, epoch 0" in msg and "block 1" in msg and "got (3,)" in msg, msg


def test_unknown_dims_are_fixed_by_the_first_data_for_all_later_chunks():
    spec = Spec.build((np.int64, np.float32), ((), (None,)))

    def gen():
        for i in range(4):
            yield i, np.zeros(3 if i < 2 else 5, np.float32)

    src = GeneratorSource(gen, spec, chunk_rows=2, time_budget=FOREVER)
    it = _chunks(src)
    assert next(it)[1].shape == (2, 3)
    with pytest.raises(SpecError, match=r"expected shape \(3,\)"):
        next(it)
    assert spec.fields[1].shape == (None,), "the shared spec itself is not changed"


def test_yields_must_be_samples_or_blocks_and_the_generator_callable_or_an_iterator():
    with pytest.raises(ValueError, match="yields"):
        GeneratorSource(_samples(1), _spec(), yields="rows")
    with pytest.raises(TypeError, match="callable returning an iterator"):
        GeneratorSource([1, 2, 3], _spec())


# -- one iterator shared by all workers ----------------------------------------------------------

def test_an_iterator_object_is_one_pass_shared_by_worker_threads_without_loss_or_repeats():
    src = GeneratorSource(_samples(2000)(), _spec(), num_epochs=3, chunk_rows=7, time_budget=FOREVER)
    assert src.shared is not None
    out = [[] for _ in range(4)]

    def work(i):
        out[i] = _ids(_chunks(src, where=f"worker {i} of 4"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    merged = [i for part in out for i in part]
    assert sorted(merged) == list(range(2000)), "every item once in all: an iterator has one pass"
    for part in out:
        assert part == sorted(part), "each worker's items come in the iterator's order"


def test_a_shared_iterator_takes_at_most_max_items_within_its_time_budget_and_reports_exhaustion():
    shared = SharedIterator(iter(range(5)))
    assert shared.take(3, FOREVER) == [0, 1, 2] and not shared.exhausted
    assert shared.take(3, FOREVER) == [3, 4] and shared.exhausted
    assert shared.take(3, FOREVER) == []

    def slow():
        for i in range(100):
            time.sleep(0.001)
            yield i

    shared = SharedIterator(slow())
    assert shared.take(50, 0.0) == [0], "at least one item, then the budget is spent"
    assert shared.take(50, FOREVER) == list(range(1, 51))
