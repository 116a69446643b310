"""queuepipe.spec.Spec: the declared structure of one sample (single value, tuple or dict of
fields, each a numpy dtype and a per-sample shape) and the conversion of user samples and
blocks to columns.  Contract: strings become object arrays of ``bytes``; safe casts (within a
kind, or integer to float) are applied, anything else is refused with a ``SpecError`` naming
the field, the expected and the actual dtype/shape; ragged samples are explained;
``dynamic_pad`` keeps variable-size fields per row; nested structures are refused.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from queuepipe.errors import SpecError
from queuepipe.spec import Spec
from queuepipe.workers.buffers import ALIGNMENT


# -- building ------------------------------------------------------------------------------------

def test_a_single_dtype_a_tuple_and_a_dict_build_fields_in_order_with_their_shapes():
    single = Spec.build(np.float32, (2, None))
    assert single.kind == "single" and len(single.fields) == 1
    f = single.fields[0]
    assert (f.dtype, f.shape, f.padded, f.is_static()) == (np.dtype(np.float32), (2, None), False, False)

    tup = Spec.build((np.int64, object, np.uint8), ((), None, (-1, 3)))   # -1: an unknown dim
    assert tup.kind == "tuple" and tup.names == ["[0]", "[1]", "[2]"]
    assert [f.shape for f in tup.fields] == [(), None, (None, 3)]
    assert [f.is_string for f in tup.fields] == [False, True, False]

    dct = Spec.build({"image": np.uint8, "label": np.int32}, {"label": (), "image": (4, 4)})
    assert dct.kind == "dict" and list(dct.keys) == ["image", "label"]
    assert [(f.dtype, f.shape) for f in dct.fields] == [(np.dtype(np.uint8), (4, 4)), (np.dtype(np.int32), ())]


@pytest.mark.parametrize("dtypes, shapes, fragment", [
    ({"a": np.int32, "b": np.int32}, {"a": ()}, "output_shapes"),     # a key missing
    ({"a": np.int32}, ((),), "output_shapes"),                         # not a dict
    ((np.int32, np.int32), ((),), "output_shapes"),                    # wrong length
    (np.int32, 3.5, "output_shapes"),                                  # not a shape
    (((np.int32, np.int32), np.float32), None, "nested"),
    ({"a": {"b": np.int32}}, None, "nested"),
    ([np.int32, [np.int32]], None, "nested"),
])
def test_shapes_unlike_the_dtypes_and_nested_structures_are_refused(dtypes, shapes, fragment):
    with pytest.raises(SpecError, match=fragment):
        Spec.build(dtypes, shapes)


def test_row_nbytes_counts_static_numeric_fields_and_is_none_otherwise():
    assert Spec.build((np.float32, np.int64), ((3, 2), ())).row_nbytes() == 3 * 2 * 4 + 8
    assert Spec.build((np.float32, object), ((3,), ())).row_nbytes() is None
    assert Spec.build(np.float32, (None, 2)).row_nbytes() is None
    assert Spec.build(np.float32).row_nbytes() is None


# -- structure -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtypes, value", [
    (np.int32, 5),
    ((np.int32, object), (5, b"x")),
    ({"b": np.int32, "a": object}, {"a": b"x", "b": 5}),
])
def test_flatten_then_pack_gives_back_the_same_structure(dtypes, value):
    spec = Spec.build(dtypes)
    leaves = spec.flatten(value, "test")
    assert leaves == ([5, b"x"] if spec.kind != "single" else [5]), "leaves in declared field order"
    assert spec.pack(leaves) == value


@pytest.mark.parametrize("dtypes, value, fragment", [
    ((np.int32, np.int32), (1, 2, 3), "tuple of 2 values"),
    ((np.int32, np.int32), 7, "got a int"),
    ({"a": np.int32}, {"b": 1}, "missing ['a']"),
    ({"a": np.int32}, [1], "expected a dict"),
])
def test_a_sample_of_the_wrong_structure_is_refused_saying_where(dtypes, value, fragment):
    with pytest.raises(SpecError) as err:
        Spec.build(dtypes).flatten(value, "worker 1 of 2, sample 9")
    assert "worker 1 of 2, sample 9" in str(err.value) and fragment in str(err.value)


# -- conversion of samples -----------------------------------------------------------------------

def test_samples_become_one_column_per_field_and_strings_become_object_arrays_of_utf8_bytes():
    spec = Spec.build((np.int64, np.float32, object, object), ((), (2,), (), (2,)))
    cols = spec.columns_from_samples([(0, [0, -0], "héllo", [b"a", np.str_("b")]),
                                      (1, [1, -1], b"raw", ["c", np.bytes_(b"d")])], "test")
    assert (cols[0].dtype, cols[0].shape) == (np.int64, (2,))
    assert (cols[1].dtype, cols[1].shape) == (np.float32, (2, 2)) and cols[1][:, 1].tolist() == [0, -1]
    assert cols[2].dtype == object and cols[2].tolist() == ["héllo".encode(), b"raw"]
    assert cols[3].shape == (2, 2) and cols[3].tolist() == [[b"a", b"b"], [b"c", b"d"]]
    assert all(type(v) is bytes for v in cols[3].reshape(-1))


@pytest.mark.parametrize("field, values", [
    (np.int64, np.array([1, 2], np.int32)),       # wider integer
    (np.float32, np.array([1, 2], np.int64)),     # integer to float
    (np.float64, np.array([1.5], np.float32)),    # wider float
    (np.int32, [1, 2, 3]),                        # Python ints
])
def test_safe_casts_are_applied(field, values):
    spec = Spec.build(field)
    col = spec.columns_from_samples(list(np.asarray(values)), "test")[0]
    assert col.dtype == np.dtype(field)
    np.testing.assert_array_equal(col, np.asarray(values).astype(field))


@pytest.mark.parametrize("field, values, got", [
    (np.int32, [1.5, 2.5], "float64"),
    (np.uint8, [1j], "complex128"),
    (np.float32, ["x"], "str"),
    (object, [1, 2], "int"),
])
def test_unsafe_casts_are_refused_naming_field_expected_and_got(field, values, got):
    spec = Spec.build((np.int64, field))
    expected = "string" if field is object else np.dtype(field).name
    with pytest.raises(SpecError) as err:
        spec.columns_from_samples([(0, v) for v in values], "worker 0 of 1")
    msg = str(err.value)
    assert "field [1]" in msg and f"expected dtype {expected}" in msg and got in msg, msg


def test_a_sample_of_the_wrong_shape_is_refused_naming_field_expected_and_got():
    spec = Spec.build({"x": np.float32}, {"x": (3,)})
    with pytest.raises(SpecError) as err:
        spec.columns_from_samples([{"x": np.zeros(4)}, {"x": np.zeros(4)}], "worker 0 of 1")
    msg = str(err.value)
    assert "field 'x'" in msg and "expected shape (3,)" in msg and "got (4,)" in msg, msg


def test_ragged_samples_are_explained_with_the_sample_and_a_dynamic_pad_hint():
    spec = Spec.build((np.int64, np.float32), ((), (None,)))
    with pytest.raises(SpecError) as err:
        spec.columns_from_samples([(0, np.zeros(3)), (1, np.zeros(3)), (2, np.zeros(5))], "worker 0 of 1")
    msg = str(err.value)
    assert "sample 2" in msg and "field [1]" in msg and "got (5,)" in msg and "dynamic_pad=True" in msg, msg


def test_dynamic_pad_keeps_variable_size_fields_per_row_and_leaves_static_ones_alone():
    spec = Spec.build((np.int32, np.float32, object), ((None,), (2,), (None,)), dynamic_pad=True)
    assert [f.padded for f in spec.fields] == [True, False, True] and spec.any_padded
    cols = spec.columns_from_samples([([1], [0, 0], ["a"]), ([1, 2, 3], [1, 1], ["b", "c"])], "test")
    assert cols[0].dtype == object and cols[0].shape == (2,)
    assert [r.tolist() for r in cols[0]] == [[1], [1, 2, 3]] and cols[0][1].dtype == np.int32
    assert cols[1].shape == (2, 2) and cols[1].dtype == np.float32
    assert [r.tolist() for r in cols[2]] == [[b"a"], [b"b", b"c"]]


# -- conversion of blocks ------------------------------------------------------------------------

def test_a_block_becomes_aligned_columns_owned_by_queuepipe_with_strings_as_bytes():
    spec = Spec.build({"x": np.float32, "y": np.int64, "s": object}, {"x": (2,), "y": (), "s": ()})
    x, y = np.ones((3, 2), np.float32), np.arange(3)
    cols = spec.columns_from_block({"x": x, "y": y, "s": np.array(["a", "bé", "c"])}, "test")
    assert [c.shape for c in cols] == [(3, 2), (3,), (3,)]
    assert all(c.ctypes.data % ALIGNMENT == 0 for c in cols[:2])
    assert cols[2].dtype == object and cols[2].tolist() == [b"a", "bé".encode(), b"c"]
    x[:] = 7  # the generator refills its buffer after yielding it
    assert cols[0].max() == 1.0


@pytest.mark.parametrize("dtypes, shapes, block, fragment", [
    ((np.int32, np.int32), None, (np.arange(3), np.arange(4)), "has 4 rows but field [0] has 3 rows"),
    (np.int32, None, np.int32(5), "a block needs a leading row dimension"),
    (np.float32, (3,), np.zeros((2, 4), np.float32), "expected shape (3,) per sample, got (4,)"),
    (np.float32, (3,), np.zeros((2, 3), np.complex64), "expected dtype float32, got complex64"),
    ((np.int32, object), None, (np.arange(3), np.arange(3)), "expected dtype string, got int64"),
])
def test_a_block_that_does_not_match_the_spec_is_refused_saying_why(dtypes, shapes, block, fragment):
    with pytest.raises(SpecError) as err:
        Spec.build(dtypes, shapes).columns_from_block(block, "worker 0 of 1, block 3")
    assert fragment in str(err.value) and "worker 0 of 1, block 3" in str(err.value)


# -- immutability and locked shapes (the architecture change) -------------------------------------

def test_locked_fixes_unknown_dims_from_the_columns_in_a_new_spec_and_leaves_the_original_unchanged():
    spec = Spec.build((np.float32, np.int32, np.int64), ((None, 3), (None,), ()), dynamic_pad=False)
    cols = spec.columns_from_samples([(np.zeros((5, 3)), [1, 2], 0)], "test")
    locked = spec.locked(cols)
    assert locked is not spec
    assert [f.shape for f in locked.fields] == [(5, 3), (2,), ()]
    assert [f.shape for f in spec.fields] == [(None, 3), (None,), ()]
    with pytest.raises(SpecError, match=r"expected shape \(5, 3\)"):
        locked.columns_from_samples([(np.zeros((6, 3)), [1, 2], 0)], "test")
    padded = Spec.build(np.int32, (None,), dynamic_pad=True)
    assert padded.locked(padded.columns_from_samples([[1, 2]], "t")).fields[0].shape == (None,)


def test_a_spec_is_immutable_with_a_tuple_of_frozen_fields():
    spec = Spec.build((np.float32, np.int32), ((None,), ()))
    assert isinstance(spec.fields, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.fields[0].shape = (3,)
    with pytest.raises(AttributeError):
        spec.kind = "dict"
