"""from_generator delivery: exactly-once, worker_info, ordering, epochs, end of data, structures."""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import queuepipe
from helpers import describe, drain, mode, rows, run_all, run_python, sizes, tuples  # noqa: F401
from sample_gens import (DictBlocks, DictSamples, Float64Samples, MixedDtypes, ReusedBuffer, ShardedBlocks, ShardedEpochRange,
                         ShardedRange, ShardedSamplesWithVector, SlowRange, StringSamples, TupleSamples, VarLen,
                         VarLenStrings, VectorOfFirstShape, WholeRange, WorkerInfoReporter, varlen_length)

tf1 = tf.compat.v1

I64x3 = (tf.int64, tf.int64, tf.int64)
SCALARx3 = ((), (), ())


# ---------------------------------------------------------------------------------------
# exactly once, sharded workers, epochs
# ---------------------------------------------------------------------------------------

CASES = [  # workers, batch_size, n, epochs
    (1, 1, 40, 1),
    (1, 16, 250, 2),
    (2, 7, 200, 1),
    (3, 32, 1000, 2),
    (4, 5, 333, 3),
    (4, 64, 50, 1),   # fewer samples than one batch in every worker
]


@pytest.mark.parametrize("workers,batch_size,n,epochs", CASES)
def test_every_sample_exactly_once_per_epoch(mode, workers, batch_size, n, epochs):
    batches = run_all(ShardedEpochRange(n), I64x3, SCALARx3, batch_size=batch_size, workers=workers,
                      num_epochs=epochs, mode=mode, allow_smaller_final_batch=True)
    got = tuples(batches)
    assert Counter((v, e) for v, e, _ in got) == Counter((v, e) for v in range(n) for e in range(epochs))
    assert all(v % workers == w for v, _, w in got), "a sample came from a worker that does not own it"
    total = n * epochs
    s = sizes(batches, 0)
    assert s == [batch_size] * (total // batch_size) + ([total % batch_size] if total % batch_size else [])


@pytest.mark.parametrize("workers,batch_size,n,epochs", CASES)
def test_without_smaller_final_batch_all_batches_full(mode, workers, batch_size, n, epochs):
    batches = run_all(ShardedEpochRange(n), I64x3, SCALARx3, batch_size=batch_size, workers=workers,
                      num_epochs=epochs, mode=mode, allow_smaller_final_batch=False)
    total = n * epochs
    assert sizes(batches, 0) == [batch_size] * (total // batch_size)
    got = Counter((v, e) for v, e, _ in tuples(batches))
    assert max(got.values(), default=1) == 1, "a sample was delivered twice in one epoch"
    assert set(got) <= {(v, e) for v in range(n) for e in range(epochs)}
    assert sum(got.values()) == total - total % batch_size


def test_each_worker_generator_called_once_per_epoch(mode):
    # every (worker, epoch) pair produces its own rows, and worker_info().epoch follows the epochs
    batches = run_all(WorkerInfoReporter(per_worker=2), I64x3 + (tf.int64,), SCALARx3 + ((),),
                      batch_size=1, workers=3, num_epochs=4, mode=mode, seed=1)
    got = Counter((idx, epoch) for idx, _, _, epoch in tuples(batches))
    assert got == Counter({(w, e): 2 for w in range(3) for e in range(4)})


def test_one_worker_epochs_repeat_generator_in_order(mode):
    batches = run_all(WholeRange(37), tf.int64, (), batch_size=5, num_epochs=3, mode=mode,
                      allow_smaller_final_batch=True)
    assert rows(batches) == list(range(37)) * 3
    # epoch boundaries do not produce short batches: only the very last one is short
    assert sizes(batches) == [5] * 22 + [1]


# ---------------------------------------------------------------------------------------
# shared iterator mode (thread workers only: an iterator object cannot cross processes)
# ---------------------------------------------------------------------------------------

class OverlapDetectingIterator:
    """An iterator that records whether two workers ever step it at the same time."""

    def __init__(self, n: int, delay: float = 0.0005):
        self.n = n
        self.delay = delay
        self.i = 0
        self.overlaps = 0
        self.workers_seen = set()
        self._busy = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        if not self._busy.acquire(blocking=False):
            self.overlaps += 1
            self._busy.acquire()
        try:
            info = queuepipe.worker_info()
            self.workers_seen.add(None if info is None else info.index)
            if self.i >= self.n:
                raise StopIteration
            value = self.i
            time.sleep(self.delay)  # widen the window in which an overlap would be seen
            self.i = value + 1
            return value
        finally:
            self._busy.release()


def test_shared_iterator_never_stepped_concurrently():
    it = OverlapDetectingIterator(400)
    batches = run_all(it, tf.int64, (), batch_size=8, workers=4, allow_smaller_final_batch=True)
    assert it.overlaps == 0, f"the shared iterator was stepped by two workers at once {it.overlaps} times"
    assert sorted(rows(batches)) == list(range(400))
    assert None not in it.workers_seen, "worker_info() must be set while the shared iterator is stepped"
    assert len(it.workers_seen) >= 2, f"only workers {it.workers_seen} pulled: test did not exercise sharing"


def test_shared_generator_object_delivers_each_item_once():
    # a generator object raises "generator already executing" if stepped concurrently
    gen = (i for i in range(1000))
    batches = run_all(gen, tf.int64, (), batch_size=10, workers=4, allow_smaller_final_batch=True)
    assert sorted(rows(batches)) == list(range(1000))
    assert sizes(batches)[:-1] == [10] * (len(batches) - 1)


def test_shared_iterator_end_of_data_smaller_final_batch():
    batches = run_all(iter(range(53)), tf.int64, (), batch_size=10, workers=3, allow_smaller_final_batch=True)
    assert sorted(rows(batches)) == list(range(53))
    assert sizes(batches) == [10] * 5 + [3]


# ---------------------------------------------------------------------------------------
# worker_info
# ---------------------------------------------------------------------------------------

def test_worker_info_is_none_outside_workers():
    assert queuepipe.worker_info() is None
    run_all(WholeRange(10), tf.int64, (), batch_size=5)
    assert queuepipe.worker_info() is None


def _infos(mode, seed, workers=3):
    batches = run_all(WorkerInfoReporter(per_worker=2), I64x3 + (tf.int64,), SCALARx3 + ((),),
                      batch_size=1, workers=workers, mode=mode, seed=seed)
    out = {}
    for idx, count, s, epoch in tuples(batches):
        out.setdefault(idx, set()).add((count, s, epoch))
    return out


def test_worker_info_index_count_and_seeds(mode):
    a = _infos(mode, seed=1234)
    assert sorted(a) == [0, 1, 2], "each worker needs a distinct index in range(count)"
    for idx, vals in a.items():
        assert len(vals) == 1, f"worker {idx} saw changing info within one epoch: {vals}"
        (count, _, epoch), = vals
        assert count == 3 and epoch == 0
    seeds = {idx: next(iter(v))[1] for idx, v in a.items()}
    assert len(set(seeds.values())) == 3, f"per-worker seeds must differ: {seeds}"

    b = _infos(mode, seed=1234)
    assert {idx: next(iter(v))[1] for idx, v in b.items()} == seeds, "seeds not reproducible for a fixed seed"
    c = _infos(mode, seed=4321)
    assert set(next(iter(v))[1] for v in c.values()).isdisjoint(seeds.values()), \
        "a different pipeline seed should give different worker seeds"


# ---------------------------------------------------------------------------------------
# ordering and shuffling
# ---------------------------------------------------------------------------------------

def test_one_worker_no_shuffle_keeps_generator_order(mode):
    batches = run_all(WholeRange(1000), tf.int64, (), batch_size=32, mode=mode, allow_smaller_final_batch=True)
    assert rows(batches) == list(range(1000))


def _shuffled(mode, seed, gen=None, **kw):
    gen = gen or WholeRange(1000)
    return rows(run_all(gen, tf.int64, (), batch_size=10, workers=1, shuffle=True, seed=seed, mode=mode,
                        allow_smaller_final_batch=True, **kw))


def test_shuffle_with_seed_is_reproducible_permutation(mode):
    first = _shuffled(mode, seed=7)
    assert sorted(first) == list(range(1000))
    assert first != list(range(1000)), "shuffle=True delivered the generator order"
    assert _shuffled(mode, seed=7) == first, "same seed, one worker: order must repeat"
    assert _shuffled(mode, seed=8) != first, "a different seed should give a different order"


def test_shuffle_with_seed_is_reproducible_with_slow_generator(mode):
    gen = SlowRange(200, 0.002)
    first = _shuffled(mode, seed=3, gen=gen, min_after_dequeue=10)
    second = _shuffled(mode, seed=3, gen=gen, min_after_dequeue=10)
    assert sorted(first) == list(range(200))
    assert first != list(range(200))
    assert first == second, "same seed, one worker: order must repeat"


def test_shuffle_order_does_not_depend_on_generator_speed(mode):
    # same data, same seed: a fast run and a slow run (e.g. cold vs warm disk cache) must agree
    fast = _shuffled(mode, seed=3, gen=SlowRange(120, 0.0), min_after_dequeue=10)
    slow = _shuffled(mode, seed=3, gen=SlowRange(120, 0.006), min_after_dequeue=10)
    assert sorted(fast) == sorted(slow) == list(range(120))
    assert fast == slow, "same seed, one worker: order depends on how fast the generator runs"


@pytest.mark.parametrize("workers", [2, 3])
def test_shuffle_many_workers_exactly_once(mode, workers):
    batches = run_all(ShardedRange(500), tf.int64, (), batch_size=16, workers=workers, shuffle=True,
                      seed=11, num_epochs=2, mode=mode, allow_smaller_final_batch=True)
    assert Counter(rows(batches)) == Counter({i: 2 for i in range(500)})
    assert rows(batches)[:500] != list(range(500))


def test_shuffle_without_smaller_final_batch_drops_only_remainder(mode):
    batches = run_all(WholeRange(105), tf.int64, (), batch_size=10, shuffle=True, seed=5, mode=mode,
                      min_after_dequeue=30)
    got = rows(batches)
    assert sizes(batches) == [10] * 10
    assert len(set(got)) == 100 and set(got) <= set(range(105))


# ---------------------------------------------------------------------------------------
# end of data
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 3])
def test_final_smaller_batch_is_single_and_last_then_out_of_range(mode, workers):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(103), tf.int64, (), batch_size=10, workers=workers,
                                     mode=mode, allow_smaller_final_batch=True)
        with tf1.Session() as sess, queuepipe.running(sess):
            got = []
            while len(got) < 103:  # not OutOfRange before the last sample
                got.extend(sess.run(p.batch).tolist())
            with pytest.raises(tf.errors.OutOfRangeError):
                sess.run(p.batch)
            with pytest.raises(tf.errors.OutOfRangeError):  # and it stays at the end
                sess.run(p.batch)
    assert sorted(got) == list(range(103))
    batches = run_all(ShardedRange(103), tf.int64, (), batch_size=10, workers=workers, mode=mode,
                      allow_smaller_final_batch=True)
    assert sizes(batches) == [10] * 10 + [3]


@pytest.mark.parametrize("workers", [1, 3])
def test_short_remainder_dropped_without_allow_smaller(mode, workers):
    batches = run_all(ShardedRange(103), tf.int64, (), batch_size=10, workers=workers, mode=mode)
    assert sizes(batches) == [10] * 10
    got = rows(batches)
    assert len(set(got)) == 100 and set(got) <= set(range(103))


@pytest.mark.parametrize("allow", [True, False])
def test_exact_multiple_has_no_short_batch(mode, allow):
    batches = run_all(ShardedRange(120), tf.int64, (), batch_size=10, workers=2, mode=mode,
                      allow_smaller_final_batch=allow)
    assert sizes(batches) == [10] * 12
    assert sorted(rows(batches)) == list(range(120))


@pytest.mark.parametrize("n", [0, 3])
@pytest.mark.parametrize("workers", [1, 4])
def test_fewer_samples_than_one_batch(mode, n, workers):
    small = run_all(ShardedRange(n), tf.int64, (), batch_size=10, workers=workers, mode=mode,
                    allow_smaller_final_batch=True)
    assert sorted(rows(small)) == list(range(n))
    assert sizes(small) == ([n] if n else [])
    assert run_all(ShardedRange(n), tf.int64, (), batch_size=10, workers=workers, mode=mode) == []


def test_worker_remainders_merged_into_one_final_batch(mode):
    # 4 workers x 5 samples, batch 8: per-worker leftovers must not make several short batches
    batches = run_all(ShardedRange(20), tf.int64, (), batch_size=8, workers=4, mode=mode,
                      allow_smaller_final_batch=True)
    assert sizes(batches) == [8, 8, 4]
    assert sorted(rows(batches)) == list(range(20))


def test_pipeline_runs_again_in_a_new_session(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(45), tf.int64, (), batch_size=10, workers=2, mode=mode,
                                     allow_smaller_final_batch=True)
        for _ in range(2):
            with tf1.Session() as sess, queuepipe.running(sess):
                assert sorted(rows(drain(sess, p.batch))) == list(range(45))


# ---------------------------------------------------------------------------------------
# structures, static shapes, dtypes
# ---------------------------------------------------------------------------------------

def test_single_tensor_output(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ShardedRange(30), tf.int64, (), batch_size=6, workers=2, mode=mode)
        assert isinstance(p.batch, tf.Tensor)
        assert p.batch.dtype == tf.int64
        assert p.batch.shape.as_list() == [6]
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    assert all(isinstance(b, np.ndarray) and b.dtype == np.int64 for b in batches)
    assert sorted(rows(batches)) == list(range(30))


def test_tuple_output_static_shapes_and_values(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(TupleSamples(20), (tf.int32, tf.float32, tf.string), ((), (3,), ()),
                                     batch_size=4, mode=mode)
        assert isinstance(p.batch, tuple) and len(p.batch) == 3
        assert [t.dtype for t in p.batch] == [tf.int32, tf.float32, tf.string]
        assert [t.shape.as_list() for t in p.batch] == [[4], [4, 3], [4]]
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    assert len(batches) == 5
    for ids, vec, s in batches:
        assert vec.shape == (4, 3)
        np.testing.assert_array_equal(vec, np.repeat(ids[:, None].astype(np.float32), 3, axis=1))
        assert s.tolist() == [f"s{i}-\u00e9".encode() for i in ids]


@pytest.mark.parametrize("allow", [False, True])
def test_dict_output_static_shapes_and_values(mode, allow):
    types = {"label": tf.int64, "image": tf.uint8, "name": tf.string}
    shapes = {"label": (), "image": (2, 2), "name": ()}
    with tf.Graph().as_default():
        p = queuepipe.from_generator(DictSamples(23), types, shapes, batch_size=5, workers=2, mode=mode,
                                     allow_smaller_final_batch=allow)
        assert isinstance(p.batch, dict) and list(p.batch) == ["label", "image", "name"]
        first = None if allow else 5
        assert p.batch["label"].shape.as_list() == [first]
        assert p.batch["image"].shape.as_list() == [first, 2, 2]
        assert p.batch["image"].dtype == tf.uint8 and p.batch["name"].dtype == tf.string
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    labels = rows(batches, "label")
    assert sorted(labels) == (list(range(23)) if allow else sorted(labels))
    assert len(labels) == (23 if allow else 20) and len(set(labels)) == len(labels)
    for b in batches:
        assert set(b) == {"label", "image", "name"}
        for lab, img, name in zip(b["label"], b["image"], b["name"]):
            assert img.dtype == np.uint8 and (img == lab).all()
            assert name == b"n%d" % lab


def test_unknown_dims_take_first_sample_shape(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(VectorOfFirstShape(), tf.float32, (None,), batch_size=3, mode=mode)
        assert p.batch.shape.as_list() == [3, None]
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    assert [b.shape for b in batches] == [(3, 4)] * 4
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(4)[None, :] + np.arange(12)[:, None])


def test_no_output_shapes_given(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(VectorOfFirstShape(), tf.float32, batch_size=4, mode=mode)
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    assert [b.shape for b in batches] == [(4, 4)] * 3


def test_float64_and_int_values_cast_into_float32_fields(mode):
    batches = run_all(Float64Samples(), (tf.float32, tf.float32, tf.float32), ((), (), ()),
                      batch_size=5, mode=mode)
    a, b, c = (np.concatenate([x[k] for x in batches]) for k in range(3))
    assert a.dtype == b.dtype == c.dtype == np.float32
    np.testing.assert_allclose(a, np.arange(20) / 3.0, rtol=1e-6)
    np.testing.assert_allclose(b, np.arange(20) / 7.0, rtol=1e-6)
    np.testing.assert_array_equal(c, np.arange(20, dtype=np.float32))


def test_numpy_dtypes_and_tensorshapes_as_spec(mode):
    types = (np.bool_, np.float16, np.uint8)
    shapes = (tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([3, None]))
    with tf.Graph().as_default():
        p = queuepipe.from_generator(MixedDtypes(), types, shapes, batch_size=5, mode=mode)
        assert [t.dtype for t in p.batch] == [tf.bool, tf.float16, tf.uint8]
        assert [t.shape.as_list() for t in p.batch] == [[5], [5, None], [5, 3, None]]
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    flags = np.concatenate([b[0] for b in batches])
    vecs = np.concatenate([b[1] for b in batches])
    mats = np.concatenate([b[2] for b in batches])
    assert flags.tolist() == [i % 2 == 0 for i in range(10)]
    assert vecs.dtype == np.float16 and vecs.shape == (10, 2) and (vecs[:, 0] == np.arange(10) / 4).all()
    assert mats.dtype == np.uint8 and mats.shape == (10, 3, 2) and (mats[:, 0, 0] == np.arange(10)).all()


def test_string_fields_take_str_and_bytes(mode):
    batches = run_all(StringSamples(), (tf.string, tf.int32), ((), ()), batch_size=2, mode=mode)
    got = dict((i, s) for s, i in tuples(batches))
    assert got == {0: b"plain", 1: "\u00fcnic\u00f6de \u2603".encode(), 2: b"\xff\x00raw bytes",
                   3: b"numpy str", 4: b"numpy bytes", 5: b""}


# ---------------------------------------------------------------------------------------
# dynamic padding
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cols", [0, 3])
@pytest.mark.parametrize("workers", [1, 2])
def test_dynamic_pad_pads_each_batch_to_its_longest(mode, cols, workers):
    shape = (None,) if not cols else (None, cols)
    with tf.Graph().as_default():
        p = queuepipe.from_generator(VarLen(50, cols=cols), (tf.int64, tf.int32), ((), shape), batch_size=4,
                                     workers=workers, dynamic_pad=True, mode=mode,
                                     allow_smaller_final_batch=True)
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    seen = []
    lengths_per_batch = set()
    for ids, mat in batches:
        lengths = [varlen_length(i) for i in ids]
        lengths_per_batch.add(mat.shape[1])
        assert mat.shape[1] == max(lengths), "batch not padded to its own longest sample"
        if cols:
            assert mat.shape[2] == cols
        for i, row, length in zip(ids, mat, lengths):
            assert (row[:length] == i + 1).all(), "values not preserved"
            assert (row[length:] == 0).all(), "padding must be zeros"
        seen.extend(ids.tolist())
    assert sorted(seen) == list(range(50))
    assert len(lengths_per_batch) > 1, "all batches had one width: padding was not per batch"


@pytest.mark.parametrize("allow", [False, True])
def test_dynamic_pad_static_shape_unknown_dims_only(mode, allow):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(VarLen(8), (tf.int64, tf.int32), ((), (None,)), batch_size=4,
                                     dynamic_pad=True, mode=mode, allow_smaller_final_batch=allow)
        assert p.batch[1].shape.as_list() == [None if allow else 4, None]
        assert p.batch[0].shape.as_list() == [None if allow else 4]


def test_dynamic_pad_static_shape_keeps_known_dims(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(VarLen(8, cols=3), (tf.int64, tf.int32), ((), (None, 3)), batch_size=4,
                                     dynamic_pad=True, mode=mode)
        assert p.batch[1].shape.as_list() == [4, None, 3]


def test_dynamic_pad_string_field_pads_with_empty_bytes(mode):
    batches = run_all(VarLenStrings(), (tf.int64, tf.string), ((), (None,)), batch_size=3, dynamic_pad=True,
                      mode=mode)
    for ids, words in batches:
        assert words.shape == (3, 1 + max(i % 3 for i in ids))
        for i, row in zip(ids, words):
            n = 1 + i % 3
            assert row[:n].tolist() == [b"w%d" % i] * n and row[n:].tolist() == [b""] * (len(row) - n)


# ---------------------------------------------------------------------------------------
# yields="blocks"
# ---------------------------------------------------------------------------------------

BLOCK_SIZES = [0, 1, 5, 13, 0, 64, 3, 8, 16]


@pytest.mark.parametrize("workers", [1, 3])
def test_blocks_deliver_the_same_samples_as_samples(mode, workers):
    kw = dict(batch_size=8, workers=workers, mode=mode, allow_smaller_final_batch=True)
    types, shapes = (tf.int64, tf.float32), ((), (2,))
    from_blocks = run_all(ShardedBlocks(301, BLOCK_SIZES, width=2), types, shapes, yields="blocks", **kw)
    from_samples = run_all(ShardedSamplesWithVector(301, 2), types, shapes, **kw)

    def canon(batches):
        return sorted((i, tuple(v.tolist())) for b in batches for i, v in zip(*b))

    assert canon(from_blocks) == canon(from_samples)
    assert [i for i, _ in canon(from_blocks)] == list(range(301))
    assert sizes(from_blocks, 0) == sizes(from_samples, 0) == [8] * 37 + [5]


def test_blocks_one_worker_keeps_order_across_epochs(mode):
    batches = run_all(ShardedBlocks(100, [7, 0, 30, 1]), tf.int64, (), yields="blocks", batch_size=6,
                      num_epochs=2, mode=mode, allow_smaller_final_batch=True)
    assert rows(batches) == list(range(100)) * 2
    assert sizes(batches) == [6] * 33 + [2]


@pytest.mark.parametrize("yields,block,per_block", [
    ("samples", 13, None),
    ("blocks", 13, None),   # blocks that straddle batches
    ("blocks", 8, 1),       # one whole batch per block: may go to TF without a copy
    ("blocks", 16, 2),
    ("blocks", 256, None),  # a full default block (32 batches of 8)
])
def test_generator_may_reuse_its_buffer(mode, yields, block, per_block):
    # regression: yielded arrays used to be kept by reference after the generator resumed
    shape = () if yields == "blocks" else (3,)
    n = 600
    with tf.Graph().as_default():
        p = queuepipe.from_generator(ReusedBuffer(n, block, yields), tf.int64, shape, yields=yields, batch_size=8,
                                     mode=mode, allow_smaller_final_batch=True, batches_per_block=per_block,
                                     capacity=1024)
        with tf1.Session() as sess, queuepipe.running(sess):
            deadline = time.monotonic() + 10  # slow consumer: let the generator run ahead and refill
            while sess.run(p.size()) < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            batches = drain(sess, p.batch)
    got = np.concatenate(batches)
    if yields == "samples":
        assert (got == got[:, :1]).all()
        got = got[:, 0]
    assert got.tolist() == list(range(n))


def test_blocks_with_shuffle_exactly_once(mode):
    batches = run_all(ShardedBlocks(400, [50, 3, 0, 17]), tf.int64, (), yields="blocks", batch_size=10,
                      workers=2, shuffle=True, seed=2, mode=mode, allow_smaller_final_batch=True)
    assert sorted(rows(batches)) == list(range(400))


# Zero-size fields run in a subprocess: they used to crash the interpreter (TF's
# FIFOQueue.enqueue_many segfaults on zero-element components).
ZERO_SIZE_FIELDS = r"""
import sys
import numpy as np
import tensorflow as tf
import queuepipe
from helpers import drain
from sample_gens import FixedSamples
tf1 = tf.compat.v1
mode = sys.argv[1]

def check(name, gen, shape, expect_shape, **kw):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(gen, (tf.int64, tf.float32), ((), shape), batch_size=3, mode=mode, **kw)
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    assert sorted(int(i) for b in batches for i in b[0]) == list(range(6)), name
    assert [b[1].shape for b in batches] == [expect_shape] * 2, (name, [b[1].shape for b in batches])
    print("OK", name, flush=True)

empty = FixedSamples([(i, np.zeros(0, np.float32)) for i in range(6)])
check("unknown_dim_empty", empty, (None,), (3, 0))
check("declared_zero", empty, (0,), (3, 0))
check("blocks_zero_width", FixedSamples([(np.arange(6), np.zeros((6, 0), np.float32))]), (None,), (3, 0),
      yields="blocks")
"""


def test_zero_size_fields_are_delivered(mode):
    # regression: enqueue_many of a zero-size column segfaulted the interpreter
    proc = run_python(ZERO_SIZE_FIELDS, mode, timeout=150)
    assert proc.returncode == 0, describe(proc)
    for name in ["unknown_dim_empty", "declared_zero", "blocks_zero_width"]:
        assert f"OK {name}" in proc.stdout, describe(proc)


# ---------------------------------------------------------------------------------------
# combinations
# ---------------------------------------------------------------------------------------

def test_shuffle_with_dynamic_pad_and_strings(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(VarLen(60), (tf.int64, tf.int32), ((), (None,)), batch_size=4, workers=2,
                                     dynamic_pad=True, shuffle=True, seed=9, mode=mode,
                                     allow_smaller_final_batch=True)
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    seen = []
    for ids, mat in batches:
        lengths = [varlen_length(i) for i in ids]
        assert mat.shape[1] == max(lengths)
        for i, row, length in zip(ids, mat, lengths):
            assert (row[:length] == i + 1).all() and (row[length:] == 0).all()
        seen.extend(ids.tolist())
    assert sorted(seen) == list(range(60)) and seen != list(range(60))
    strings = run_all(StringSamples(), (tf.string, tf.int32), ((), ()), batch_size=2, shuffle=True, seed=1,
                      mode=mode)
    assert dict((i, s) for s, i in tuples(strings))[1] == "\u00fcnic\u00f6de \u2603".encode()
    assert sorted(i for _, i in tuples(strings)) == list(range(6))


def test_dict_blocks_with_strings_and_casting(mode):
    types = {"id": tf.int64, "name": tf.string, "x": tf.float32}
    with tf.Graph().as_default():
        p = queuepipe.from_generator(DictBlocks(), types, {"id": (), "name": (), "x": (2,)}, yields="blocks",
                                     batch_size=4, mode=mode)
        assert p.batch["x"].shape.as_list() == [4, 2]
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, p.batch)
    assert rows(batches, "id") == list(range(16))
    assert [n for b in batches for n in b["name"].tolist()] == [b"n%d" % i for i in range(16)]
    x = np.concatenate([b["x"] for b in batches])
    assert x.dtype == np.float32 and (x == np.arange(16)[:, None]).all()


def test_shared_iterator_of_blocks():
    blocks = iter([np.arange(s, min(s + 7, 100)) for s in range(0, 100, 7)])
    batches = run_all(blocks, tf.int64, (), yields="blocks", batch_size=6, workers=3,
                      allow_smaller_final_batch=True)
    assert sorted(rows(batches)) == list(range(100))
    assert sizes(batches) == [6] * 16 + [4]


@pytest.mark.parametrize("per_block", [1, 3])
def test_explicit_batches_per_block_with_a_slow_generator(mode, per_block):
    # a slow generator hands over partial blocks early: every size of block must arrive intact
    batches = run_all(SlowRange(90, 0.003), tf.int64, (), batch_size=4, batches_per_block=per_block, mode=mode,
                      allow_smaller_final_batch=True)
    assert rows(batches) == list(range(90))
    assert sizes(batches) == [4] * 22 + [2]


def test_num_epochs_none_repeats_forever(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(WholeRange(5), tf.int64, (), batch_size=4, num_epochs=None, mode=mode)
        with tf1.Session() as sess, queuepipe.running(sess):
            got = [v for _ in range(10) for v in sess.run(p.batch).tolist()]
    assert got == list(range(5)) * 8


def test_capacity_is_rounded_up_to_whole_batches(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(WholeRange(10_000), tf.int64, (), batch_size=4, capacity=10,
                                     batches_per_block=1, mode=mode)
        with tf1.Session() as sess, queuepipe.running(sess):
            deadline = time.monotonic() + 10
            while sess.run(p.size()) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            assert sess.run(p.size()) == 3  # ceil(10 / 4) batches, and no more
            assert sess.run(p.batch).tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------
# property: exactly-once over random shapes of the problem
# ---------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n=st.integers(0, 150), batch_size=st.integers(1, 17), workers=st.integers(1, 4),
       block_sizes=st.one_of(st.none(), st.lists(st.integers(0, 40), min_size=1, max_size=5)
                             .filter(lambda sizes: any(sizes))),
       allow=st.booleans(), shuffle=st.booleans(), epochs=st.integers(1, 2))
def test_property_exactly_once(mode, n, batch_size, workers, block_sizes, allow, shuffle, epochs):
    if block_sizes is None:
        gen, kw = ShardedRange(n), {}
    else:
        gen, kw = ShardedBlocks(n, block_sizes), {"yields": "blocks"}
    batches = run_all(gen, tf.int64, (), batch_size=batch_size, workers=workers, num_epochs=epochs, mode=mode,
                      shuffle=shuffle, seed=4, allow_smaller_final_batch=allow, **kw)
    total = n * epochs
    got = Counter(rows(batches))
    if allow:
        assert got == Counter({i: epochs for i in range(n)})
        assert sizes(batches) == [batch_size] * (total // batch_size) + (
            [total % batch_size] if total % batch_size else [])
    else:
        assert sizes(batches) == [batch_size] * (total // batch_size)
        assert set(got) <= set(range(n)) and max(got.values(), default=0) <= epochs
