"""The shuffle buffer on its own (TF-free): every row added comes out exactly once, uniformly
mixed, and a seed fixes the order -- whatever the sizes of the adds and draws."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from queuepipe.workers.batching import _ShuffleBuffer

pytestmark = pytest.mark.timeout(120)


def _run(ops, seed):
    pool = _ShuffleBuffer(np.random.default_rng(seed))
    out, nxt = [], 0
    for add, draw in ops:
        ids = np.arange(nxt, nxt + add)
        nxt += add
        pool.add([ids.astype(np.int64), ids.astype(np.float32)[:, None] * np.ones((1, 3), np.float32),
                  np.array([str(i).encode() for i in ids], dtype=object)])
        draw = min(draw, pool.rows)
        if draw:
            dest = [np.empty(draw, np.int64), np.empty((draw, 3), np.float32), np.empty(draw, object)]
            pool.take_into(dest, draw)
            out.append(dest)
    if pool.rows:
        n = pool.rows
        dest = [np.empty(n, np.int64), np.empty((n, 3), np.float32), np.empty(n, object)]
        pool.take_into(dest, n)
        out.append(dest)
    return out, nxt


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 70), st.integers(0, 90)), min_size=1, max_size=25),
       seed=st.integers(0, 2 ** 32 - 1))
def test_every_row_comes_out_once_with_its_fields_together_and_a_seed_fixes_the_order(ops, seed):
    out, total = _run(ops, seed)
    ids = np.concatenate([d[0] for d in out]) if out else np.zeros(0, np.int64)
    assert sorted(ids.tolist()) == list(range(total))
    for d in out:  # the fields of a row travel together
        np.testing.assert_array_equal(d[1], d[0].astype(np.float32)[:, None] * np.ones((1, 3), np.float32))
        assert d[2].tolist() == [str(i).encode() for i in d[0]]
    again, _ = _run(ops, seed)
    assert all((a[0] == b[0]).all() for a, b in zip(out, again))


def test_draws_mix_rows_from_the_whole_pool():
    pool = _ShuffleBuffer(np.random.default_rng(0))
    pool.add([np.arange(1000, dtype=np.int64)])
    firsts = []
    for k in range(5):
        dest = [np.empty(100, np.int64)]
        pool.take_into(dest, 100)
        firsts.append(dest[0])
        pool.add([np.arange(1000 + 100 * k, 1100 + 100 * k, dtype=np.int64)])
    drawn = np.concatenate(firsts)
    assert drawn.max() >= 1000 and drawn.min() < 100  # old and new rows both come out
    assert len(np.unique(drawn)) == len(drawn)
