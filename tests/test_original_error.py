"""A worker failure's original exception, from public API (issue 16, "Migration kit"): ``pipe.failure``
is a ``queuepipe.WorkerFailure`` (``.exception``, ``.worker_index``, ``.worker_count``, ``.mode``,
``.traceback_text``), and ``queuepipe.original_error(e)`` / ``queuepipe.worker_failure(e)`` map the
``tf.errors.OpError`` a ``sess.run`` raised for a failed worker back to it -- in the main thread,
after ``sess.run`` raised, during and after ``running()``.  The user's exception keeps its class and
its own attributes: the very object (thread workers) or rebuilt without calling its constructor
(process workers, whose ``RecordError(message, record)`` pickle could not rebuild)."""
from __future__ import annotations

import pytest
import tensorflow as tf

import queuepipe
from failure_gens import RAISED, GoodThenRaise, KeptGoodThenRaise, RecordError
from helpers import mode  # noqa: F401 - fixture
from queuepipe.errors import RemoteTraceback
from sample_gens import WholeRange

tf1 = tf.compat.v1


def first_op_error(sess, batch) -> tf.errors.OpError:
    """The error ``sess.run(batch)`` raises once the data before the failure is consumed."""
    while True:
        try:
            sess.run(batch)
        except tf.errors.OutOfRangeError:
            pytest.fail("the worker's failure was reported as the end of data")
        except tf.errors.OpError as e:
            return e


def check_record_error(exc: BaseException, mode: str) -> None:
    """The user's own exception, with its own attributes, whichever way it travelled."""
    assert type(exc) is RecordError
    assert str(exc) == "record 100 is damaged" and exc.args == ("record 100 is damaged",)
    assert exc.record == 100 and exc.path == "shard-7.bin"
    assert exc.context == {"record": 100, "path": "shard-7.bin"}
    if mode == "process":
        assert isinstance(exc.__cause__, RemoteTraceback)
        assert "good_then_raise" in exc.__cause__.text, "the child's traceback"


@pytest.mark.parametrize("staged", [False, True], ids=["batch", "staged"])
def test_original_error_maps_the_op_error_back_to_the_users_exception(mode, staged):
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(GoodThenRaise(100, worker=1), tf.int64, (), batch_size=16, workers=2,
                                        mode=mode)
        batch = pipe.staged("/cpu:0") if staged else pipe.batch
        with pytest.raises(RecordError) as from_running:
            with tf1.Session() as sess, queuepipe.running(sess):
                op_error = first_op_error(sess, batch)
                original = queuepipe.original_error(op_error)     # no pipeline named: the gate names it
                assert original is queuepipe.original_error(op_error, pipe)
                check_record_error(original, mode)
                failure = queuepipe.worker_failure(op_error)
                assert failure is pipe.failure
                assert isinstance(failure, queuepipe.WorkerFailure) and failure.exception is original
                assert (failure.worker_index, failure.worker_count, failure.mode) == (1, 2, mode)
                assert "good_then_raise" in failure.traceback_text
                assert "worker 1 of 2" in repr(failure)
                again = first_op_error(sess, batch)                # every later run: the same failure
                assert queuepipe.original_error(again) is original
    assert from_running.value is original, "running() raises the same object"
    assert queuepipe.original_error(op_error) is original, "after running(): the failure is kept"
    assert queuepipe.worker_failure(original, pipe) is failure


def test_a_thread_workers_exception_is_the_very_object_user_code_raised():
    RAISED.clear()
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(KeptGoodThenRaise(100), tf.int64, (), batch_size=16)
        with pytest.raises(RecordError):
            with tf1.Session() as sess, queuepipe.running(sess):
                op_error = first_op_error(sess, pipe.batch)
    assert len(RAISED) == 1
    assert queuepipe.original_error(op_error) is RAISED[0] is pipe.failure.exception
    check_record_error(RAISED[0], "thread")
    assert RAISED[0].__traceback__ is not None


def test_errors_that_are_no_worker_failure_are_left_as_they_are():
    with tf.Graph().as_default():
        ok = queuepipe.from_generator(WholeRange(10), tf.int64, (), batch_size=4, name="ok")
        failing = queuepipe.from_generator(GoodThenRaise(10), tf.int64, (), batch_size=4, name="failing")
        with tf1.Session() as sess:
            with pytest.raises(RecordError):
                with queuepipe.running(sess):
                    for _ in range(2):
                        sess.run(ok.batch)
                    with pytest.raises(tf.errors.OutOfRangeError) as end:
                        sess.run(ok.batch)
                    op_error = first_op_error(sess, failing.batch)
    assert queuepipe.original_error(end.value) is end.value, "the end of data is no failure"
    assert queuepipe.worker_failure(end.value) is None
    assert queuepipe.worker_failure(op_error, ok) is None, "another pipeline's gate"
    assert type(queuepipe.original_error(op_error, failing)) is RecordError
    plain = KeyError("not from a worker")
    assert queuepipe.original_error(plain) is plain and queuepipe.original_error(plain, failing) is plain
    assert queuepipe.worker_failure(plain) is None


def test_a_failure_of_queuepipes_own_is_a_queuepipe_error():
    # a sample that does not match the spec: the failure is queuepipe's SpecError, named by the gate
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WholeRange(10), tf.string, (), batch_size=2)
        with pytest.raises(queuepipe.SpecError):
            with tf1.Session() as sess, queuepipe.running(sess):
                op_error = first_op_error(sess, pipe.batch)
    original = queuepipe.original_error(op_error)
    assert isinstance(original, queuepipe.SpecError) and isinstance(original, queuepipe.QueuepipeError)
    assert queuepipe.worker_failure(op_error).worker_index == 0


def test_a_towers_dequeue_maps_back_too():
    # pipe.dequeue(name=...) builds another gate, in the pipeline's scope: its error maps as well
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(GoodThenRaise(100), tf.int64, (), batch_size=16)
        tower = pipe.dequeue(name="tower_1")
        with pytest.raises(RecordError):
            with tf1.Session() as sess, queuepipe.running(sess):
                op_error = first_op_error(sess, tower)
    assert "tower_1" in op_error.op.name
    assert queuepipe.original_error(op_error) is pipe.failure.exception
