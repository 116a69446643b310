"""After a failure the only thing the consumer sees is the failure (issue 12, item 11): other
workers' data never follows it, and the end of data is never reported instead of it."""
from __future__ import annotations

import pytest
import tensorflow as tf

import queuepipe
from helpers import mode  # noqa: F401 - fixture
from sample_gens import FailingGen

tf1 = tf.compat.v1


def _shared_failing_iterator(n, at):
    for i in range(n):
        if i == at:
            raise KeyError("row %d is damaged" % i)
        yield i


@pytest.mark.parametrize("source", ["shared iterator", "per-worker generators"])
def test_every_run_after_the_failure_raises_it_again(source, mode):
    if source == "shared iterator" and mode == "process":
        pytest.skip("an iterator object cannot be shared by processes")
    with tf.Graph().as_default():
        if source == "shared iterator":
            gen = _shared_failing_iterator(100_000, 3000)
        else:
            gen = FailingGen(100_000, at=2000, exc_type=KeyError, message="row 2000 is damaged", worker=1)
        pipe = queuepipe.from_generator(gen, tf.int64, (), batch_size=16, workers=4, mode=mode,
                                        batches_per_block=8, capacity=64)
        with pytest.raises(KeyError):
            with tf1.Session() as sess, queuepipe.running(sess):
                while True:
                    try:
                        sess.run(pipe.batch)
                    except tf.errors.OpError as first:
                        assert "KeyError" in first.message
                        break
                for _ in range(30):  # keep asking: the failure again, never data, never end of data
                    with pytest.raises(tf.errors.OpError) as again:
                        sess.run(pipe.batch)
                    assert not isinstance(again.value, tf.errors.OutOfRangeError), \
                        "end of data reported after a failure"
                    assert "KeyError" in again.value.message
