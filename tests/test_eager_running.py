"""``running(sess)`` from TF2's eager code, and ``running(sess, pipelines=[...])``.

A TF2 program is eager by default: it builds the pipeline inside ``with g.as_default():``
and runs it in ``tf.compat.v1.Session(graph=g)`` from eager code.  ``pipelines=`` starts,
stops and checks only the named pipelines.  Real sessions, threads and processes; the
autouse ``no_leaks`` fixture checks that nothing is left behind.
"""
from __future__ import annotations

import threading
import time
from contextlib import closing

import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, Timer, drain, mode, rows  # noqa: F401
from sample_gens import FailingGen, InfiniteCounter, MyDataError, ShardedRange

tf1 = tf.compat.v1


def threads_of(pipe) -> list:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"queuepipe-{pipe.name}-")]


def test_running_from_eager_code_on_a_session_with_its_own_graph(mode):
    assert tf.executing_eagerly(), "the test must start in TF2's default (eager) mode"
    g = tf.Graph()
    with g.as_default():
        pipe = queuepipe.from_generator(ShardedRange(60), tf.int64, (), batch_size=5, workers=2, mode=mode)
    with closing(tf1.Session(graph=g)) as sess:  # `with Session` would make g the default graph
        with queuepipe.running(sess) as coord:
            assert isinstance(coord, tf1.train.Coordinator)
            assert tf.executing_eagerly(), "the with body keeps the caller's (eager) mode"
            got = rows(drain(sess, pipe.batch))
        assert tf.executing_eagerly()
    assert sorted(got) == list(range(60))


def test_running_from_eager_code_with_pipelines_delivers_every_row():
    g = tf.Graph()
    with g.as_default():
        pipe = queuepipe.from_generator(ShardedRange(33), tf.int64, (), batch_size=4, workers=3,
                                        allow_smaller_final_batch=True)
    with closing(tf1.Session(graph=g)) as sess:
        with queuepipe.running(sess, pipelines=[pipe]):
            got = rows(drain(sess, pipe.batch))
    assert sorted(got) == list(range(33))


def test_pipelines_starts_only_those_and_no_other_queue_runner(tmp_path):
    g = tf.Graph()
    with g.as_default():
        wanted = queuepipe.from_generator(ShardedRange(40), tf.int64, (), batch_size=4, name="wanted")
        other = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=4,
                                         name="other")
        plain_queue = tf1.FIFOQueue(10, [tf.int64])  # a TF queue runner of the graph, not queuepipe's
        tf1.train.add_queue_runner(tf1.train.QueueRunner(plain_queue, [plain_queue.enqueue([tf.constant(1, tf.int64)])]))
        plain_size = plain_queue.size()
    with closing(tf1.Session(graph=g)) as sess:
        with queuepipe.running(sess, pipelines=[wanted]):
            got = rows(drain(sess, wanted.batch))
            time.sleep(0.3)  # time enough for any started runner to put something in its queue
            assert sess.run(other.size()) == 0, "the other pipeline's queue is never filled"
            assert sess.run(plain_size) == 0, "a plain TF queue runner of the graph is not started"
            assert not threads_of(other), "no thread of the other pipeline"
            assert other.runtime.runs_started == 0
    assert sorted(got) == list(range(40))


def test_pipelines_stops_only_those_the_others_keep_running(tmp_path):
    g = tf.Graph()
    with g.as_default():
        outer = queuepipe.from_generator(InfiniteCounter(), (tf.int64, tf.int64), ((), ()), batch_size=4,
                                         name="outer")
        inner = queuepipe.from_generator(ShardedRange(20), tf.int64, (), batch_size=4, name="inner")
    with closing(tf1.Session(graph=g)) as sess:
        with queuepipe.running(sess, pipelines=[outer]):
            first = sess.run(outer.batch)[1]
            with queuepipe.running(sess, pipelines=inner):  # a single pipeline is accepted too
                assert rows(drain(sess, inner.batch)) == list(range(20))
            assert not threads_of(inner), "leaving the inner block stopped the inner pipeline"
            assert threads_of(outer), "... and not the outer one"
            later = [sess.run(outer.batch)[1] for _ in range(5)]
            assert np.concatenate(later).min() > first.max(), "the outer pipeline goes on where it was"


def test_pipelines_refuses_what_it_cannot_run():
    with tf.Graph().as_default():
        elsewhere = queuepipe.from_generator(ShardedRange(4), tf.int64, (), batch_size=2)
    g = tf.Graph()
    with g.as_default():
        here = queuepipe.from_generator(ShardedRange(4), tf.int64, (), batch_size=2)
    with closing(tf1.Session(graph=g)) as sess:
        with pytest.raises(queuepipe.ArgumentError, match="not in the session's graph"):
            with queuepipe.running(sess, pipelines=[here, elsewhere]):
                pass
        with pytest.raises(queuepipe.ArgumentError, match="at least one pipeline"):
            with queuepipe.running(sess, pipelines=[]):
                pass
        with pytest.raises(queuepipe.ArgumentTypeError, match="queuepipe pipelines"):
            with queuepipe.running(sess, pipelines=[here.batch]):
                pass
        assert here.runtime.runs_started == 0, "nothing started when the arguments are refused"


@pytest.mark.parametrize("only", [False, True], ids=["all", "pipelines"])
def test_worker_failure_is_re_raised_from_eager_code(mode, only):
    g = tf.Graph()
    with g.as_default():
        pipe = queuepipe.from_generator(FailingGen(200, 7, MyDataError, "row 7 is bad"), tf.int64, (),
                                        batch_size=4, workers=2, mode=mode)
    with closing(tf1.Session(graph=g)) as sess:
        with pytest.raises(MyDataError, match="row 7 is bad"):
            with Timer() as timer, queuepipe.running(sess, pipelines=[pipe] if only else None):
                drain(sess, pipe.batch)
    assert timer.elapsed < PROMPT_S
    assert tf.executing_eagerly()
