"""queuepipe.sources.hdf5.chunk_decode, its pure bytes-in/bytes-out functions: ``inflater()``
picks ISA-L or zlib (``QUEUEPIPE_INFLATE``) and either inflates zlib-wrapped deflate data to
exactly the bytes compressed; ``unshuffle`` undoes HDF5's shuffle filter byte plane by byte
plane, leaving a tail that is not a whole element as it is.  Checked against chunks that
HDF5 itself wrote (h5py, read back with ``read_direct_chunk``).  The reader classes are not
tested here."""
from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from queuepipe.sources.hdf5.chunk_decode import inflater, unshuffle

INFLATERS = ["zlib", "isal"]


@pytest.fixture(params=INFLATERS)
def inflate(request, monkeypatch):
    """``inflate(data, size)`` of the inflater asked for (ISA-L only where isal is installed)."""
    if request.param == "isal":
        pytest.importorskip("isal.isal_zlib")
    monkeypatch.setenv("QUEUEPIPE_INFLATE", request.param)
    name, fn = inflater()
    assert name == request.param
    return fn


def _shuffle(raw: bytes, itemsize: int) -> bytes:
    """HDF5's shuffle filter, written independently: byte k of every element into plane k."""
    data = np.frombuffer(raw, np.uint8)
    n = len(data) // itemsize
    planes = data[:n * itemsize].reshape(n, itemsize).T.reshape(-1)
    return planes.tobytes() + data[n * itemsize:].tobytes()


# -- unshuffle -----------------------------------------------------------------------------------

@pytest.mark.parametrize("itemsize", [2, 4, 8, 16])
@pytest.mark.parametrize("extra", [0, 1, 3])
def test_unshuffle_inverts_the_shuffle_of_whole_elements_and_keeps_a_partial_tail(itemsize, extra):
    raw = np.random.default_rng(itemsize).integers(0, 256, 37 * itemsize + extra, dtype=np.uint8).tobytes()
    big = np.zeros(len(raw) + 64, np.uint8)
    unshuffle(_shuffle(raw, itemsize), itemsize, big[32:32 + len(raw)])   # into a view, as a reader does
    assert big[32:32 + len(raw)].tobytes() == raw
    assert not big[:32].any() and not big[32 + len(raw):].any(), "nothing written outside the view"
    one = np.empty(len(raw), np.uint8)
    unshuffle(raw, 1, one)                                                 # 1-byte elements: a plain copy
    assert one.tobytes() == raw


# -- inflate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [1, 6, 9])
def test_both_inflaters_restore_exactly_the_bytes_zlib_compressed(inflate, level):
    raw = (np.arange(50_000, dtype=np.int64) // 7).tobytes()
    assert inflate(zlib.compress(raw, level), len(raw)) == raw


def test_the_inflater_is_isal_where_installed_zlib_otherwise_and_an_unknown_setting_is_refused(monkeypatch):
    monkeypatch.delenv("QUEUEPIPE_INFLATE", raising=False)
    try:
        import isal.isal_zlib  # noqa: F401
        expected = "isal"
    except ImportError:
        expected = "zlib"
    assert inflater()[0] == expected
    monkeypatch.setenv("QUEUEPIPE_INFLATE", "snappy")
    with pytest.raises(ValueError, match="QUEUEPIPE_INFLATE"):
        inflater()


# -- against chunks HDF5 wrote -------------------------------------------------------------------

def _stored_chunk(path, data, **filters):
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=data.shape, **filters)
    with h5py.File(path, "r") as f:
        mask, stored = f["x"].id.read_direct_chunk((0,) * data.ndim)
    return mask, stored


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_unshuffle_undoes_the_shuffle_hdf5_wrote(tmp_path, dtype):
    data = (np.arange(300 * 3).reshape(300, 3) * 1.5).astype(dtype)
    mask, stored = _stored_chunk(tmp_path / "s.h5", data, shuffle=True)
    assert mask == 0 and stored != data.tobytes(), "HDF5 stored the bytes shuffled"
    out = np.empty(data.nbytes, np.uint8)
    unshuffle(stored, data.dtype.itemsize, out)
    np.testing.assert_array_equal(out.view(dtype).reshape(data.shape), data)


def test_inflate_then_unshuffle_decodes_a_gzip_and_shuffle_chunk_hdf5_wrote(tmp_path, inflate):
    data = np.random.default_rng(0).normal(size=(256, 4)).round(2).astype(np.float32)
    mask, stored = _stored_chunk(tmp_path / "c.h5", data, compression="gzip", shuffle=True)
    assert mask == 0 and len(stored) < data.nbytes, "HDF5 stored the chunk compressed"
    inflated = inflate(stored, data.nbytes)          # deflate was applied last: undone first
    out = np.empty(data.nbytes, np.uint8)
    unshuffle(inflated, 4, out)
    np.testing.assert_array_equal(out.view(np.float32).reshape(data.shape), data)
