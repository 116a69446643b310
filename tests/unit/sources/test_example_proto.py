"""The TF-free tf.train.Example decoder on hand-made wire bytes: packed and unpacked lists,
negative and extreme int64s, empty lists, protobuf's merge rules, unknown fields, damage.

(Its agreement with TensorFlow's own serialisation and parser is tested in tests/test_records.py.)"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from queuepipe.errors import ExampleParseError
from queuepipe.sources.records.example_proto import ExampleDecoder, FeatureSpec, decode_varints, example_keys

# -- a tiny protobuf encoder ------------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64: two's complement in 64 bits (10 bytes when negative)
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    tag = varint(number << 3 | wire_type)
    return tag + (varint(len(payload)) + payload if wire_type == 2 else payload)


def entry(key: str, feature: bytes) -> bytes:
    return field(1, 2, field(1, 2, key.encode()) + field(2, 2, feature))


def example(*entries: bytes) -> bytes:
    return field(1, 2, b"".join(entries))


def int64s(values, packed=True) -> bytes:
    if packed:
        return field(3, 2, field(1, 2, b"".join(varint(v) for v in values)))
    return field(3, 2, b"".join(field(1, 0, varint(v)) for v in values))


def floats(values, packed=True) -> bytes:
    if packed:
        return field(2, 2, field(1, 2, np.asarray(values, "<f4").tobytes()))
    return field(2, 2, b"".join(field(1, 5, struct.pack("<f", v)) for v in values))


def byteses(values) -> bytes:
    return field(1, 2, b"".join(field(1, 2, v) for v in values))


def decode(records, *features):
    buf = b"".join(records)
    stops = np.cumsum([len(r) for r in records])
    starts = stops - [len(r) for r in records]
    return ExampleDecoder(features).decode(buf, starts.tolist(), stops.tolist(), lambda i: f"record {i}")


def fixed(name, dtype, shape, default=None):
    return FeatureSpec(name, np.dtype(dtype), tuple(shape), None if default is None else np.asarray(default, dtype))


def var(name, dtype):
    return FeatureSpec(name, np.dtype(dtype), None)


EXTREMES = [0, 1, -1, 127, 128, -128, 300, 2 ** 31, -(2 ** 31), 2 ** 62, 2 ** 63 - 1, -(2 ** 63)]


# -- values -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("packed", [True, False])
def test_int64_lists_packed_or_not_with_negative_and_extreme_values(packed):
    records = [example(entry("v", int64s(EXTREMES[i:i + 3], packed))) for i in range(0, 12, 3)]
    (col,) = decode(records, fixed("v", np.int64, [3]))
    assert col.dtype == np.int64 and col.reshape(-1).tolist() == EXTREMES


@pytest.mark.parametrize("packed", [True, False])
def test_float_lists_packed_or_not(packed):
    values = np.array([[1.5, -0.0, np.inf], [np.nan, 1e-40, -3.25]], np.float32)
    (col,) = decode([example(entry("f", floats(v, packed))) for v in values], fixed("f", np.float32, [3]))
    np.testing.assert_array_equal(col, values)


def test_a_list_mixing_packed_and_unpacked_runs_is_their_concatenation():
    mixed = field(3, 2, field(1, 2, varint(1) + varint(-2)) + field(1, 0, varint(3)) + field(1, 2, varint(4)))
    (col,) = decode([example(entry("v", mixed))], fixed("v", np.int64, [4]))
    assert col.tolist() == [[1, -2, 3, 4]]


def test_variable_length_features_give_per_record_arrays_and_empty_ones_for_missing_or_empty_lists():
    records = [example(entry("v", int64s([5, -6])), entry("s", byteses([b"a", b""]))),
               example(entry("v", int64s([])), entry("s", byteses([]))),
               example(),
               example(entry("v", int64s([7])), entry("s", byteses([b"\x00\xff"])))]
    v, s = decode(records, var("v", np.int64), var("s", object))
    assert [r.tolist() for r in v] == [[5, -6], [], [], [7]]
    assert all(r.dtype == np.int64 for r in v)
    assert [r.tolist() for r in s] == [[b"a", b""], [], [], [b"\x00\xff"]]


def test_fixed_length_string_features_and_shapes():
    records = [example(entry("s", byteses([b"x%d" % i, b"y%d" % i]))) for i in range(3)]
    (col,) = decode(records, fixed("s", object, [2, 1]))
    assert col.shape == (3, 2, 1) and col.dtype == object
    assert col[2, :, 0].tolist() == [b"x2", b"y2"]


def test_defaults_fill_missing_features_and_an_empty_feature_counts_as_missing():
    records = [example(entry("a", floats([1.0, 2.0]))), example(), example(entry("a", b""))]
    (col,) = decode(records, fixed("a", np.float32, [2], default=[-1.0, -2.0]))
    assert col.tolist() == [[1.0, 2.0], [-1.0, -2.0], [-1.0, -2.0]]


def test_numbers_are_written_into_the_buffers_from_the_allocator():
    given = []

    def allocate(wanted):
        given.extend(np.zeros(shape, dtype) for shape, dtype in wanted)
        return list(given)
    buf = example(entry("v", int64s([9, 8])))
    cols = ExampleDecoder([fixed("v", np.int64, [2])]).decode(buf, [0], [len(buf)], str, allocate)
    assert cols[0] is given[0] and given[0].tolist() == [[9, 8]]


# -- protobuf's rules -------------------------------------------------------------------------------

def test_merge_rules_last_key_wins_lists_concatenate_and_a_new_kind_replaces_the_old():
    record = example(entry("k", int64s([1])), entry("k", int64s([2, 3])),        # a key twice: the last
                     entry("cat", int64s([4]) + int64s([5])),                     # one list twice: both
                     entry("kind", int64s([6]) + floats([7.0])))                  # another kind: the last
    record += example(entry("later", byteses([b"z"])))                           # features twice: merged
    k, cat, kind, later = decode([record], var("k", np.int64), var("cat", np.int64), var("kind", np.float32),
                                 fixed("later", object, []))
    assert k[0].tolist() == [2, 3] and cat[0].tolist() == [4, 5] and kind[0].tolist() == [7.0]
    assert later.tolist() == [b"z"]


def test_unknown_fields_are_skipped_everywhere():
    junk = field(99, 0, varint(12345)) + field(98, 1, bytes(8)) + field(97, 5, bytes(4)) + field(96, 2, b"abc")
    feature = junk + field(3, 2, junk + field(1, 2, varint(-5)))
    entry_ = field(1, 2, junk + field(2, 2, feature) + field(1, 2, b"v"))   # value before key
    record = junk + field(1, 2, junk + entry_) + junk
    (col,) = decode([record], fixed("v", np.int64, []))
    assert col.tolist() == [-5]


def test_decode_varints_matches_the_encoder():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.integers(-2 ** 63, 2 ** 63 - 1, 500, dtype=np.int64, endpoint=True),
                             np.array(EXTREMES, np.int64)])
    raw = np.frombuffer(b"".join(varint(int(v)) for v in values), np.uint8)
    got, last = decode_varints(raw)
    assert got.tolist() == values.tolist() and int(last[-1]) == len(raw) - 1


# -- errors -----------------------------------------------------------------------------------------

def test_missing_feature_without_default_names_record_feature_and_the_features_there_are():
    records = [example(entry("a", int64s([1]))), example(entry("b", int64s([2])), entry("c", int64s([3])))]
    with pytest.raises(ExampleParseError) as info:
        decode(records, fixed("a", np.int64, []))
    msg = str(info.value)
    for text in ("record 1", "'a' is missing", "no default_value", "'b', 'c'"):
        assert text in msg, (text, msg)


@pytest.mark.parametrize("feature, spec, text", [
    (floats([1.0]), fixed("v", np.int64, []), "holds a float_list, but FixedLenFeature([], int64) expects a int64_list"),
    (int64s([1, 2]), fixed("v", np.int64, [3]), "has 2 values, but FixedLenFeature([3], int64) needs 3"),
    (int64s([]), fixed("v", np.int64, [], default=0), "has 0 values"),  # as TF: present but empty is no default
    (byteses([b"x"]), var("v", np.float32), "holds a bytes_list, but VarLenFeature(float32)"),
])
def test_wrong_type_or_count_is_an_error(feature, spec, text):
    with pytest.raises(ExampleParseError, match=r"record 0: feature 'v'") as info:
        decode([example(entry("v", feature))], spec)
    assert text in str(info.value), str(info.value)


@pytest.mark.parametrize("record, text", [
    (example(entry("v", int64s([1])))[:-1], "runs past the end"),        # cut short
    (b"\x0a\xff", "runs past the end"),                                   # a length varint cut short
    (example(entry("v", int64s([1]))) + b"\x0b", "wire type 3"),          # a group start
    (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),                      # an endless varint
])
def test_malformed_records_are_reported_with_the_byte(record, text):
    with pytest.raises(ExampleParseError, match="record 0: not a valid tf.train.Example") as info:
        decode([record], var("v", np.int64))
    assert text in str(info.value) and "at byte" in str(info.value), str(info.value)


def test_a_packed_int64_list_ending_inside_a_varint_is_an_error():
    bad = field(3, 2, field(1, 2, varint(1) + b"\x80"))
    with pytest.raises(ExampleParseError, match="runs past the end of its int64_list"):
        decode([example(entry("v", bad))], var("v", np.int64))


def test_example_keys_lists_the_feature_names():
    record = example(entry("b", int64s([1])), entry("a", floats([1.0])))
    assert example_keys(record, 0, len(record)) == ["a", "b"]
