"""Rows produced before a worker failure (issue 16, "Migration kit"): every whole batch of them is
delivered, then the failure -- never silently fewer rows.  DESIGN.md, Guarantees 3.

The rows after the last whole batch (fewer than ``batch_size``) are dropped, with or without
``allow_smaller_final_batch``: they are no batch, and nothing follows a failure but the failure.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from failure_gens import SIBLING_BASE, GoodThenRaise, RecordError, keep_two_of_three
from helpers import mode, rows  # noqa: F401 - fixture

tf1 = tf.compat.v1


def consume_until_failure(pipe, expected=RecordError):
    """Every batch ``sess.run`` gives until it raises the worker's failure (an OpError that is not
    the end of data); ``running()`` then re-raises the original exception, of type ``expected``."""
    batches = []
    with pytest.raises(expected) as raised:
        with tf1.Session() as sess, queuepipe.running(sess):
            while True:
                try:
                    batches.append(sess.run(pipe.batch))
                except tf.errors.OutOfRangeError:
                    pytest.fail("the worker's failure was reported as the end of data")
                except tf.errors.OpError as e:
                    assert expected.__name__ in e.message
                    raise
    return batches, raised.value


@pytest.mark.parametrize("shuffle", [False, True], ids=["in order", "shuffled"])
@pytest.mark.parametrize("allow_smaller", [False, True], ids=["drop short", "allow short"])
def test_every_whole_batch_before_a_generator_failure_is_delivered(mode, shuffle, allow_smaller):
    # 100 good samples, then the generator raises: 3 whole batches of 32 come, then the error;
    # the last 4 rows (no batch) do not.  Before the fix the rows of the block being filled
    # (and, shuffled, the whole buffer) were lost: the consumer saw 0-64 rows.
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(GoodThenRaise(100), tf.int64, (), batch_size=32, batches_per_block=4,
                                        mode=mode, shuffle=shuffle, seed=7,
                                        allow_smaller_final_batch=allow_smaller)
        batches, exc = consume_until_failure(pipe)
    assert [len(b) for b in batches] == [32, 32, 32]
    got = rows(batches)
    if shuffle:  # 96 of the 100 good rows, each once (which 4 stay behind is the shuffle's draw)
        assert len(set(got)) == 96 and set(got) <= set(range(100))
    else:
        assert got == list(range(96))
    assert exc.record == 100 and str(exc) == "record 100 is damaged"


def test_the_failed_workers_whole_batches_come_before_its_error_with_siblings(mode):
    # worker 1 of 3 fails after 100 rows; the others run on without end.  The consumer gets
    # every one of worker 1's 96 rows in whole batches (in its order), then the failure.
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(GoodThenRaise(100, worker=1, siblings="forever"), tf.int64, (),
                                        batch_size=32, batches_per_block=4, workers=3, mode=mode, capacity=16)
        batches, exc = consume_until_failure(pipe)
    got = rows(batches)
    failed_workers_rows = [r for r in got if r < SIBLING_BASE]
    assert failed_workers_rows == list(range(96))
    assert len(got) == len(set(got)) and all(len(b) == 32 for b in batches)
    assert "worker 1 of 3" in "".join(getattr(exc, "__notes__", []))


def _hdf5_with_corrupt_chunk(path):
    """2048 rows of 16 floats (row i holds i*16 .. i*16+15), gzip chunks of 128 rows; chunk 10
    (rows 1280..1407) overwritten with garbage."""
    values = np.arange(2048 * 16, dtype=np.float32).reshape(2048, 16)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", data=values, chunks=(128, 16), compression="gzip")
        info = d.id.get_chunk_info(10)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\xff" * (info.size - 16))
    return values


def test_hdf5_rows_before_a_failed_read_are_delivered_and_none_of_the_failed_block(tmp_path, mode):
    # Blocks of 256 rows (4 batches of 64); map_fn keeps 2 rows of 3, so a block is no whole
    # number of batches and rows wait in the batcher.  Block 5 (rows 1280..1535) fails to read:
    # of the 853 rows kept from blocks 0-4, the first 832 -- 13 whole batches -- arrive, with
    # h5py's values, in order; no row of the failed block (partly read, never handed on).
    path = tmp_path / "corrupt.h5"
    values = _hdf5_with_corrupt_chunk(path)
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(str(path), "X", batch_size=64, batches_per_block=4, mode=mode,
                                   map_fn=keep_two_of_three, output_types=tf.float32, output_shapes=(16,))
        batches, exc = consume_until_failure(pipe, expected=queuepipe.HDF5ReadError)
    kept = values[:1280][np.arange(1280) % 3 != 0]
    assert len(kept) == 853
    assert [len(b) for b in batches] == [64] * 13
    np.testing.assert_array_equal(np.concatenate(batches), kept[:832])
    assert "dataset 'X'" in str(exc) and str(path) in str(exc)
