"""from_generator failures: user exceptions and spec mismatches reach the user, promptly and clearly."""
from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, Timer, describe, drain, mode, rows, run_python  # noqa: F401
from sample_gens import (BadOnWorker, FactoryRaises, FailingGen, FailsFirstRunOnly, FixedSamples,
                         InfiniteUnlessWorker, MyDataError, WholeRange)

tf1 = tf.compat.v1


def expect_failure(generator, output_types, output_shapes, exc_type, match=None, **kwargs):
    """Run a pipeline whose workers fail; return (OpError seen by sess.run, exception from running, rows).

    Checks that sess.run raises an OpError that is not OutOfRangeError, and that
    ``queuepipe.running`` re-raises ``exc_type`` on exit -- all within PROMPT_S.
    """
    delivered = []
    seen = {}
    with tf.Graph().as_default():
        p = queuepipe.from_generator(generator, output_types, output_shapes, **kwargs)
        with tf1.Session() as sess:
            with Timer() as t:
                with pytest.raises(exc_type, match=match) as raised:
                    with queuepipe.running(sess):
                        try:
                            for _ in range(100_000):
                                delivered.append(sess.run(p.batch))
                        except tf.errors.OutOfRangeError:
                            pytest.fail("the worker's failure was reported as the end of data")
                        except tf.errors.OpError as e:
                            seen["op_error"] = e
                            raise
            assert t.elapsed < PROMPT_S, f"failure took {t.elapsed:.1f}s to surface and stop"
    assert "op_error" in seen, "sess.run never raised"
    assert p.failure is not None
    return seen["op_error"], raised.value, delivered


# ---------------------------------------------------------------------------------------
# a generator raising
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("at", [0, 1, 37])
def test_generator_raising_at_item_k(mode, at):
    gen = FailingGen(200, at, ValueError, f"boom at {at}")
    op_error, exc, delivered = expect_failure(gen, tf.int64, (), ValueError, batch_size=8, mode=mode)
    assert type(exc) is ValueError and str(exc) == f"boom at {at}"
    msg = op_error.message
    assert "ValueError" in msg and f"boom at {at}" in msg
    assert "failing_generator_body" in msg, "the worker's traceback (generator function) is missing"
    assert "worker 0 of 1" in msg
    got = rows(delivered)
    assert got == list(range(len(got))) and len(got) <= at, "rows after the failure point were delivered"


@pytest.mark.parametrize("exc_type", [KeyError, IndexError, RuntimeError, NotImplementedError, MyDataError])
def test_exception_type_is_kept(mode, exc_type):
    op_error, exc, _ = expect_failure(FailingGen(50, 3, exc_type, "bad record 3"), tf.int64, (), exc_type,
                                      batch_size=4, mode=mode)
    assert type(exc) is exc_type and "bad record 3" in str(exc)
    assert exc_type.__name__ in op_error.message and "bad record 3" in op_error.message


class RaisesOutOfRange:
    """User code that itself gets a tf OutOfRangeError (e.g. from an inner TF reader)."""

    def __call__(self):
        yield 1
        raise tf.errors.OutOfRangeError(None, None, "inner reader exhausted")


def test_user_out_of_range_error_is_not_end_of_data(mode):
    op_error, exc, _ = expect_failure(RaisesOutOfRange(), tf.int64, (), tf.errors.OutOfRangeError,
                                      batch_size=1, mode=mode)
    assert "inner reader exhausted" in str(exc)
    assert "inner reader exhausted" in op_error.message


def test_error_in_a_later_epoch(mode):
    gen = FailingGen(30, 5, MyDataError, "epoch one broke", epoch=1)
    op_error, exc, delivered = expect_failure(gen, tf.int64, (), MyDataError, match="epoch one broke",
                                              batch_size=5, num_epochs=3, mode=mode)
    assert "MyDataError" in op_error.message
    got = rows(delivered)
    assert got == (list(range(30)) + list(range(5)))[:len(got)]


def test_error_in_one_of_several_workers(mode):
    gen = FailingGen(400, 7, MyDataError, "worker two broke", worker=2)
    op_error, exc, delivered = expect_failure(gen, tf.int64, (), MyDataError, match="worker two broke",
                                              batch_size=4, workers=4, mode=mode)
    assert "worker 2 of 4" in op_error.message
    got = rows(delivered)
    assert len(got) == len(set(got)) and len(got) < 400


def test_one_failing_worker_stops_infinite_siblings(mode):
    op_error, exc, _ = expect_failure(InfiniteUnlessWorker(bad=1, at=50), tf.int64, (), MyDataError,
                                      match="worker 1 failed at 50", batch_size=8, workers=3, mode=mode,
                                      num_epochs=None, capacity=16)
    assert "MyDataError" in op_error.message


def test_generator_callable_raising(mode):
    op_error, exc, delivered = expect_failure(FactoryRaises(), tf.int64, (), MyDataError,
                                              match="cannot open shard", batch_size=2, workers=2, mode=mode)
    assert delivered == []
    assert "cannot open shard" in op_error.message


def test_running_reraises_even_if_body_swallowed_the_op_error(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(FailingGen(100, 10, MyDataError, "swallowed"), tf.int64, (),
                                     batch_size=4, mode=mode)
        with tf1.Session() as sess:
            with pytest.raises(MyDataError, match="swallowed"):
                with queuepipe.running(sess):
                    with pytest.raises(tf.errors.OpError) as op:
                        drain(sess, p.batch)
                    assert not isinstance(op.value, tf.errors.OutOfRangeError)


def test_running_reraises_if_body_ends_before_the_error_reaches_it(mode):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(FailingGen(100, 0, MyDataError, "early"), tf.int64, (),
                                     batch_size=4, mode=mode)
        with tf1.Session() as sess:
            with pytest.raises(MyDataError, match="early"):
                with queuepipe.running(sess):
                    deadline = time.monotonic() + PROMPT_S
                    while p.failure is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                    assert p.failure is not None, "the failure was not recorded"


def test_second_session_after_a_failure_starts_clean(mode, tmp_path):
    # a failed run must not poison the next run of the same graph
    with tf.Graph().as_default():
        p = queuepipe.from_generator(FailsFirstRunOnly(str(tmp_path / "failed")), tf.int64, (),
                                     batch_size=4, mode=mode)
        with tf1.Session() as sess:
            with pytest.raises(MyDataError):
                with queuepipe.running(sess):
                    drain(sess, p.batch)
        assert p.failure is not None
        with tf1.Session() as sess, queuepipe.running(sess):
            got = rows(drain(sess, p.batch))
            assert p.failure is None
        assert got == list(range(20))


# ---------------------------------------------------------------------------------------
# samples that do not match the declared structure / dtype / shape
# ---------------------------------------------------------------------------------------

SPEC_CASES = {
    # id: (samples, output_types, output_shapes, kwargs, texts that must appear)
    "tuple_too_long": ([(1, 2.0)] * 5 + [(1, 2.0, 3)], (tf.int64, tf.float32), ((), ()), {},
                       ["tuple of 2", "length 3"]),
    "not_a_tuple": ([(1, 2.0)] * 2 + [7], (tf.int64, tf.float32), ((), ()), {},
                    ["tuple of 2", "int"]),
    "dict_missing_key": ([{"a": 1, "b": 2.0}] * 3 + [{"a": 1}], {"a": tf.int64, "b": tf.float32},
                         {"a": (), "b": ()}, {}, ["missing", "'b'"]),
    "dict_extra_key": ([{"a": 1, "b": 2.0, "c": 3}], {"a": tf.int64, "b": tf.float32},
                       {"a": (), "b": ()}, {}, ["unexpected", "'c'"]),
    "float_into_int": ([(1, 2)] * 3 + [(1, 2.5)], (tf.int64, tf.int32), ((), ()), {},
                       ["field [1]", "int32", "float64"]),
    "str_into_int": ([{"n": 1}, {"n": "seven"}], {"n": tf.int64}, {"n": ()}, {},
                     ["field 'n'", "int64", "str"]),
    "wrong_shape": ([{"x": np.zeros(3)}, {"x": np.zeros(4)}], {"x": tf.float32}, {"x": (3,)}, {},
                    ["field 'x'", "(3,)", "(4,)"]),
    "wrong_rank": ([(np.zeros((2, 2)), 0)], (tf.float32, tf.int64), ((2,), ()), {},
                   ["field [0]", "(2,)", "(2, 2)"]),
    "block_rows_differ": ([(np.zeros(3), np.zeros(4))], (tf.float32, tf.float32), ((), ()),
                          {"yields": "blocks"}, ["field [1]", "4 rows", "3 rows"]),
    "block_dtype": ([{"x": np.zeros(4, np.int64)}, {"x": np.zeros(4, np.float64)}], {"x": tf.int64}, {"x": ()},
                    {"yields": "blocks"}, ["field 'x'", "int64", "float64"]),
    "block_string_got_ints": ([(np.array([1, 2]), np.array([7, 8]))], (tf.int64, tf.string), ((), ()),
                              {"yields": "blocks"}, ["field [1]", "string", "int64"]),
    "block_scalar": ([np.int64(3)], tf.int64, (), {"yields": "blocks"}, ["field output", "leading row"]),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_mismatched_sample_names_field_worker_expected_and_got(mode, case):
    samples, types, shapes, kwargs, texts = SPEC_CASES[case]
    op_error, exc, _ = expect_failure(FixedSamples(samples), types, shapes, queuepipe.SpecError,
                                      batch_size=2, mode=mode, **kwargs)
    for text in texts + ["worker 0 of 1"]:
        assert text in str(exc), f"{text!r} missing from the error: {exc}"
        assert text in op_error.message, f"{text!r} missing from the session error: {op_error.message}"


# Failures in pipelines with an unknown (None) dim run in a subprocess: they used to crash
# the interpreter, and a crash must fail one test, not the whole run.
UNKNOWN_DIM_FAILURES = r"""
import sys
import numpy as np
import tensorflow as tf
import queuepipe
from helpers import drain
from sample_gens import FixedSamples, ThenRaise
tf1 = tf.compat.v1
mode = sys.argv[1]
f32 = np.float32

def check(name, gen, exc_type, texts, **kw):
    with tf.Graph().as_default():
        p = queuepipe.from_generator(gen, (tf.float32,), ((None,),), batch_size=2, mode=mode, **kw)
        with tf1.Session() as sess:
            op_msg = None
            try:
                with queuepipe.running(sess):
                    try:
                        drain(sess, p.batch)
                    except tf.errors.OutOfRangeError:
                        raise AssertionError(name + ": reported as end of data")
                    except tf.errors.OpError as e:
                        op_msg = e.message
                        raise
            except exc_type as e:
                assert op_msg is not None, name + ": sess.run did not raise"
                for t in texts:
                    assert t in str(e) and t in op_msg, (name, t, str(e), op_msg)
            else:
                raise AssertionError(name + ": running() did not raise")
    print("OK", name, flush=True)

check("raise", ThenRaise([(np.zeros(3, f32),)] * 4, ValueError, "boom"), ValueError, ["boom"])
check("raise_dynamic_pad", ThenRaise([(np.zeros(3, f32),)] * 4, ValueError, "boom"), ValueError, ["boom"],
      dynamic_pad=True)
check("ragged", FixedSamples([(np.zeros(3, f32),), (np.zeros(5, f32),)]), queuepipe.SpecError,
      ["field [0]", "(3,)", "(5,)", "dynamic_pad", "worker 0 of 1"])
check("locked_then_violated", FixedSamples([(np.zeros(3, f32),)] * 10 + [(np.zeros(4, f32),)]),
      queuepipe.SpecError, ["field [0]", "(3,)", "(4,)", "worker 0 of 1"])
"""


def test_failures_with_unknown_dims_do_not_crash(mode):
    # regression: the poison block had a zero-size column and enqueue_many segfaulted on it
    proc = run_python(UNKNOWN_DIM_FAILURES, mode, timeout=150)
    assert proc.returncode == 0, describe(proc)
    for name in ["raise", "raise_dynamic_pad", "ragged", "locked_then_violated"]:
        assert f"OK {name}" in proc.stdout, describe(proc)


@pytest.mark.parametrize("yields", ["samples", "blocks"])
def test_non_string_in_string_field_names_field_worker_and_got(mode, yields):
    if yields == "samples":
        samples = [(1, "ok"), (2, 5)]
    else:
        samples = [(np.array([1, 2]), [b"ok", 8])]  # a list, not an array
    _, exc, _ = expect_failure(FixedSamples(samples), (tf.int64, tf.string), ((), ()), queuepipe.SpecError,
                               batch_size=2, mode=mode, yields=yields)
    for text in ["field [1]", "worker 0 of 1", "string", "got int"]:
        assert text in str(exc), f"{text!r} missing from the error: {exc}"


def test_spec_error_in_second_worker_names_it(mode):
    class_ = BadOnWorker(1)
    _, exc, _ = expect_failure(class_, {"v": tf.int64}, {"v": ()}, queuepipe.SpecError, batch_size=2,
                               workers=2, mode=mode)
    assert "worker 1 of 2" in str(exc) and "field 'v'" in str(exc)


# ---------------------------------------------------------------------------------------
# bad arguments fail at construction, in the calling thread
# ---------------------------------------------------------------------------------------

BAD_ARGS = {
    "batch_size_zero": (dict(batch_size=0), ValueError, "batch_size"),
    "batch_size_float": (dict(batch_size=2.0), ValueError, "batch_size"),
    "workers_zero": (dict(batch_size=2, workers=0), ValueError, "workers"),
    "bad_mode": (dict(batch_size=2, mode="fiber"), ValueError, "mode"),
    "bad_yields": (dict(batch_size=2, yields="rows"), ValueError, "yields"),
    "num_epochs_zero": (dict(batch_size=2, num_epochs=0), ValueError, "num_epochs"),
    "capacity_zero": (dict(batch_size=2, capacity=0), ValueError, "capacity"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_rejected(case):
    kwargs, exc_type, text = BAD_ARGS[case]
    with tf.Graph().as_default():
        with pytest.raises(exc_type, match=text):
            queuepipe.from_generator(WholeRange(5), tf.int64, (), **kwargs)


def test_bad_structures_rejected():
    with tf.Graph().as_default():
        with pytest.raises(TypeError):
            queuepipe.from_generator(42, tf.int64, (), batch_size=2)
        with pytest.raises(TypeError):
            queuepipe.from_generator(WholeRange(5), "not a dtype", (), batch_size=2)
        with pytest.raises(queuepipe.SpecError):
            queuepipe.from_generator(WholeRange(5), (tf.int64, tf.int64), ((),), batch_size=2)
        with pytest.raises(queuepipe.SpecError):
            queuepipe.from_generator(WholeRange(5), {"a": tf.int64}, {"b": ()}, batch_size=2)
        with pytest.raises(queuepipe.SpecError):
            queuepipe.from_generator(WholeRange(5), (tf.int64, (tf.int64, tf.int64)), batch_size=2)


def test_shared_iterator_needs_one_epoch():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="num_epochs"):
            queuepipe.from_generator(iter(range(5)), tf.int64, (), batch_size=2, num_epochs=2)
        with pytest.raises(ValueError, match="num_epochs"):
            queuepipe.from_generator(iter(range(5)), tf.int64, (), batch_size=2, num_epochs=None)
        with pytest.raises(ValueError, match="process"):
            queuepipe.from_generator(iter(range(5)), tf.int64, (), batch_size=2, mode="process")


def test_building_in_eager_mode_is_a_clear_error():
    assert tf.executing_eagerly()
    with pytest.raises(RuntimeError, match="tf.Graph"):
        queuepipe.from_generator(WholeRange(5), tf.int64, (), batch_size=2)
