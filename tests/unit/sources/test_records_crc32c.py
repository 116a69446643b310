"""CRC-32C in numpy (TFRecord checksums): known vectors, and the vectorised path against the plain loop."""
from __future__ import annotations

import numpy as np

from queuepipe.sources.records.crc32c import crc32c, crc32c_8, crc32c_many, masked


def test_known_vectors():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA and crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert masked(0) == 0xA282EAD8 and masked(np.zeros(2, np.uint32)).tolist() == [0xA282EAD8] * 2


def test_many_records_of_any_length_match_the_byte_loop():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 120))
        lengths = rng.integers(0, 3000 if trial % 2 else 200, n)
        lengths[rng.random(n) < 0.2] = rng.integers(0, 12)          # short ones too, 0..3 bytes included
        buf = rng.integers(0, 256, int(lengths.sum()) + 64, dtype=np.uint8)
        starts = np.minimum(rng.integers(0, 64, n) + np.cumsum(lengths) - lengths, len(buf) - lengths)
        if trial % 3 == 0:  # in any order
            order = rng.permutation(n)
            starts, lengths = starts[order], lengths[order]
        got = crc32c_many(buf, starts, lengths)
        assert got.dtype == np.uint32
        assert got.tolist() == [crc32c(buf[s:s + k].tobytes()) for s, k in zip(starts, lengths)], trial


def test_eight_byte_fields():
    words = np.random.default_rng(1).integers(0, 256, (500, 8), dtype=np.uint8)
    assert crc32c_8(words).tolist() == [crc32c(w.tobytes()) for w in words]
