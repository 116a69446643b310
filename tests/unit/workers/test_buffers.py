"""queuepipe.workers.buffers: blocks live in 64-byte-aligned buffers (TensorFlow adopts them
without a copy); ``aligned_block`` is the thread workers' allocator, one fresh buffer per column
of the (shape, dtype) list it is given."""
from __future__ import annotations

import numpy as np
import pytest

from queuepipe.workers.buffers import ALIGNMENT, aligned_block, aligned_empty


@pytest.mark.parametrize("shape, dtype", [
    ((1,), np.int8), ((7, 3), np.float64), ((5, 2, 3), np.uint16), ((33,), np.complex128), ((), np.int64),
    ((0,), np.float32), ((4, 0, 2), np.int32),
])
def test_aligned_empty_has_the_shape_and_dtype_asked_for_and_a_64_byte_aligned_data_pointer(shape, dtype):
    assert ALIGNMENT == 64  # TensorFlow's EIGEN_MAX_ALIGN_BYTES
    for _ in range(20):  # whatever offset the underlying allocation happens to get
        arr = aligned_empty(shape, dtype)
        assert arr.shape == shape and arr.dtype == np.dtype(dtype)
        assert arr.flags.c_contiguous and arr.flags.writeable
        if arr.size:  # a zero-size array holds no data: where its pointer lies does not matter
            assert arr.ctypes.data % ALIGNMENT == 0


def test_aligned_empty_of_object_dtype_is_a_plain_object_array():
    arr = aligned_empty((3, 2), object)
    assert arr.dtype == np.dtype(object) and arr.shape == (3, 2)
    arr[0, 0] = b"text"
    assert arr[0, 0] == b"text"


def test_aligned_block_returns_one_fresh_aligned_buffer_per_wanted_column_in_order():
    wanted = [((8, 3), np.dtype(np.float32)), ((8,), np.dtype(np.int64)), ((8,), np.dtype(object))]
    cols = aligned_block(wanted)
    assert [(c.shape, c.dtype) for c in cols] == [(s, d) for s, d in wanted]
    assert all(c.ctypes.data % ALIGNMENT == 0 for c in cols if c.dtype != object)
    cols[0][:] = 1.5
    cols[1][:] = np.arange(8)
    assert not np.shares_memory(cols[0], cols[1]) and cols[0].min() == 1.5
    assert aligned_block([]) == []
