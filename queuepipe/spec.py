"""The declared output structure of a pipeline, and conversion of user samples to columns.

A *spec* says what one sample looks like: a single field, a tuple of fields or a dict
of fields, each with a numpy dtype and a per-sample shape.  Everything a worker
produces is checked against it here, so a wrong sample is reported with the field,
the expected and the actual dtype/shape, instead of failing deep inside TensorFlow.
A *column* is one field's values for n rows: an ndarray ``[n, *shape]``, or a 1-D
object array of per-row arrays for fields padded per batch (``dynamic_pad``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .errors import SpecError
from .workers.buffers import aligned_empty

Shape = Optional[Tuple[Optional[int], ...]]  # None: rank unknown


@dataclass(frozen=True)
class Field:
    """One output tensor: its name in the structure, numpy dtype and per-sample shape."""

    name: str
    dtype: np.dtype          # object dtype for strings
    shape: Shape             # per-sample shape; None dims unknown
    padded: bool = False     # variable-size: kept per row, padded per batch

    @property
    def is_string(self) -> bool:
        return self.dtype == np.dtype(object)

    @property
    def label(self) -> str:
        return f"field {self.name}"

    def is_static(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)


def _shape_str(shape) -> str:
    if shape is None:
        return "<any>"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _dtype_str(dtype) -> str:
    return "string" if np.dtype(dtype) == np.dtype(object) else np.dtype(dtype).name


def pack_structure(kind: str, keys: Optional[Sequence[str]], leaves: Sequence[Any]) -> Any:
    """Leaves in order -> one value (``kind`` "single"), a tuple, or a dict over ``keys``."""
    if kind == "single":
        return leaves[0]
    if kind == "tuple":
        return tuple(leaves)
    return dict(zip(keys, leaves))


class Spec:
    """Structure + fields of one sample; converts samples/blocks to columns and back.

    Immutable: one Spec is shared by the builder, every worker and the TF layer.  The
    unknown dims a worker learns from its first data live in the Spec that
    :meth:`locked` returns, held by that worker's source.
    """

    __slots__ = ("kind", "fields", "keys")

    def __init__(self, kind: str, fields: Sequence[Field], keys: Optional[Sequence[Any]] = None):
        if kind not in ("single", "tuple", "dict"):
            raise ValueError(f"unknown structure kind {kind!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "keys", None if keys is None else tuple(keys))  # dict keys, in order

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Spec is immutable (tried to set {name!r}); use Spec.locked")

    def __reduce__(self):
        return (Spec, (self.kind, self.fields, self.keys))

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, Spec) and (self.kind, self.fields, self.keys)
                == (other.kind, other.fields, other.keys))

    def __hash__(self) -> int:
        return hash((self.kind, self.fields, self.keys))

    # -- building -------------------------------------------------------------------
    @classmethod
    def build(cls, dtypes: Any, shapes: Any = None, *, dynamic_pad: bool = False) -> "Spec":
        """Build from a structure of numpy dtypes (``object`` = string) and shapes.

        ``dtypes`` is a single dtype, a tuple/list, or a dict; ``shapes`` is None or the
        same structure of shapes (tuples with ints/None, or None for unknown).
        """
        def one(name, dtype, shape):
            shape = _normalise_shape(shape, name)
            padded = dynamic_pad and not (shape is not None and all(d is not None for d in shape))
            return Field(name=name, dtype=np.dtype(dtype), shape=shape, padded=padded)

        leaves = list(dtypes.values()) if isinstance(dtypes, Mapping) else (
            list(dtypes) if isinstance(dtypes, (tuple, list)) else [])
        if any(isinstance(d, (tuple, list, Mapping)) for d in leaves):
            raise SpecError("nested output structures are not supported: use one level of "
                            f"tuple or dict, got {dtypes!r}")
        if isinstance(dtypes, Mapping):
            keys = list(dtypes.keys())
            if shapes is not None and (not isinstance(shapes, Mapping) or set(shapes) != set(keys)):
                raise SpecError(f"output_shapes must be a dict with the same keys as output_types "
                                f"{sorted(map(str, keys))}, got {shapes!r}")
            fields = [one(repr(k), dtypes[k], None if shapes is None else shapes[k]) for k in keys]
            return cls("dict", fields, keys)
        if isinstance(dtypes, (tuple, list)):
            if shapes is not None and (not isinstance(shapes, (tuple, list)) or len(shapes) != len(dtypes)):
                raise SpecError(f"output_shapes must be a tuple of {len(dtypes)} shapes like output_types, "
                                f"got {shapes!r}")
            fields = [one(f"[{i}]", d, None if shapes is None else shapes[i]) for i, d in enumerate(dtypes)]
            return cls("tuple", fields)
        return cls("single", [one("output", dtypes, shapes)])

    def with_field(self, field: Field) -> "Spec":
        """This spec with ``field`` appended: a field of the data path the user never sees (a
        resumable pipeline's position labels).  :meth:`pack` still takes the user's leaves."""
        return Spec(self.kind, self.fields + (field,), self.keys)

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.fields]

    @property
    def any_padded(self) -> bool:
        return any(f.padded for f in self.fields)

    def row_nbytes(self) -> Optional[int]:
        """Bytes per row when every field is static and numeric, else None."""
        total = 0
        for f in self.fields:
            if f.is_string or not f.is_static():
                return None
            total += int(np.prod(f.shape, dtype=np.int64)) * f.dtype.itemsize
        return total

    # -- structure ------------------------------------------------------------------
    def flatten(self, value: Any, where: str) -> List[Any]:
        """The structure's leaves in field order; a clear error when the structure differs."""
        if self.kind == "single":
            return [value]
        if self.kind == "tuple":
            if not isinstance(value, (tuple, list)) or len(value) != len(self.fields):
                got = (f"a {type(value).__name__} of length {len(value)}"
                       if isinstance(value, (tuple, list)) else f"a {type(value).__name__}")
                raise SpecError(f"{where}: expected a tuple of {len(self.fields)} values "
                                f"({', '.join(_dtype_str(f.dtype) for f in self.fields)}), got {got}")
            return list(value)
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected a dict with keys {list(self.keys)!r}, got a {type(value).__name__}")
        missing = [k for k in self.keys if k not in value]
        extra = [k for k in value if k not in self.keys]
        if missing or extra:
            raise SpecError(f"{where}: dict keys differ from output_types: missing {missing!r}, "
                            f"unexpected {extra!r}")
        return [value[k] for k in self.keys]

    def pack(self, leaves: Sequence[Any]) -> Any:
        """Inverse of :meth:`flatten`."""
        return pack_structure(self.kind, self.keys, leaves)

    # -- conversion -----------------------------------------------------------------
    def columns_from_samples(self, samples: Sequence[Any], where: str) -> List[np.ndarray]:
        """Columns for a list of single samples (each one structure of per-sample values)."""
        flat = [self.flatten(s, f"{where}, sample {i}") for i, s in enumerate(samples)]
        columns = []
        for k, field in enumerate(self.fields):
            values = [row[k] for row in flat]
            if field.padded:
                columns.append(self._object_column(field, values, where))
                continue
            if field.is_string:
                arr = _string_array(values, f"{where}: {field.label}")
            else:
                try:
                    arr = np.asarray(values)
                except ValueError:  # ragged: explained below
                    arr = None
            if arr is None or arr.dtype == object and not field.is_string:
                self._explain_ragged(field, values, where)
            columns.append(self._checked(field, arr, where, leading=True))
        return columns

    def columns_from_block(self, block: Any, where: str) -> List[np.ndarray]:
        """Columns for one yielded block: a structure of arrays with a leading row dimension."""
        leaves = self.flatten(block, where)
        columns, n = [], None
        for field, leaf in zip(self.fields, leaves):
            if field.is_string and isinstance(leaf, np.ndarray) and leaf.dtype.kind not in "SUO":
                raise SpecError(f"{where}: {field.label}: expected dtype string, got {leaf.dtype.name}")
            arr = (_string_array(leaf, f"{where}: {field.label}") if field.is_string
                   else _owned(np.asarray(leaf)))
            if arr.ndim == 0:
                raise SpecError(f"{where}: {field.label}: a block needs a leading row dimension, "
                                f"got a scalar (yield samples with yields='samples')")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise SpecError(f"{where}: {field.label} has {arr.shape[0]} rows but "
                                f"{self.fields[0].label} has {n} rows in the same block")
            if field.padded:
                columns.append(self._object_column(field, list(arr), where))
            else:
                columns.append(self._checked(field, arr, where, leading=True))
        return columns

    def _object_column(self, field: Field, values: List[Any], where: str) -> np.ndarray:
        col = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            arr = _string_array(v, f"{where}: {field.label}") if field.is_string else np.array(v)
            col[i] = self._checked(field, arr, f"{where}, row {i}", leading=False)
        return col

    def _checked(self, field: Field, arr: np.ndarray, where: str, leading: bool) -> np.ndarray:
        """Check dtype and shape of ``arr`` (with or without a leading row dim) against ``field``."""
        row_shape = arr.shape[1:] if leading else arr.shape
        if field.is_string:
            if arr.dtype.kind not in "SUO":
                raise SpecError(f"{where}: {field.label}: expected dtype string, got {arr.dtype.name}")
            if arr.dtype.kind != "O":
                arr = _string_array(arr, f"{where}: {field.label}")
        elif arr.dtype != field.dtype:
            if arr.dtype.kind in "biuf" and field.dtype.kind in "biufc" and \
                    np.can_cast(arr.dtype, field.dtype, casting="same_kind"):
                arr = arr.astype(field.dtype)
            else:
                raise SpecError(f"{where}: {field.label}: expected dtype {_dtype_str(field.dtype)}, "
                                f"got {_dtype_str(arr.dtype)}")
        if field.shape is not None:
            ok = len(row_shape) == len(field.shape) and all(
                e is None or e == g for e, g in zip(field.shape, row_shape))
            if not ok:
                raise SpecError(f"{where}: {field.label}: expected shape {_shape_str(field.shape)} per sample, "
                                f"got {_shape_str(tuple(row_shape))}")
        return arr

    def _explain_ragged(self, field: Field, values: List[Any], where: str) -> None:
        first = np.shape(values[0])
        for i, v in enumerate(values):
            if np.shape(v) != first:
                hint = "" if field.padded else " (pass dynamic_pad=True for variable-size samples)"
                expected = (_shape_str(field.shape) if field.is_static()
                            else f"{_shape_str(first)} (the shape of sample 0 of this batch)")
                raise SpecError(f"{where}, sample {i}: {field.label}: expected shape {expected}, "
                                f"got {_shape_str(np.shape(v))}{hint}")
        raise SpecError(f"{where}: {field.label}: values cannot form a numeric array "
                        f"(expected dtype {_dtype_str(field.dtype)})")

    def locked(self, columns: Sequence[np.ndarray]) -> "Spec":
        """This spec with the unknown dims of non-padded fields fixed from ``columns``.

        Every batch of a non-padded field must have one shape, so the first chunk a
        worker produces decides it; later chunks are checked against the locked spec.
        Returns ``self`` when nothing is left to fix (the common case: no allocation).
        """
        if all(f.padded or f.is_static() for f in self.fields):
            return self
        fields = [f if f.padded or f.is_static() else replace(f, shape=tuple(col.shape[1:]))
                  for f, col in zip(self.fields, columns)]
        return Spec(self.kind, fields, self.keys)


def _string_array(values: Any, where: str) -> np.ndarray:
    """A new object array of ``bytes`` (str encoded as UTF-8), the form TF takes for tf.string."""
    arr = np.array(values, dtype=object)
    flat = arr.reshape(-1)
    for i, v in enumerate(flat):
        if isinstance(v, (str, np.str_)):
            flat[i] = str(v).encode("utf-8")
        elif isinstance(v, np.bytes_):
            flat[i] = bytes(v)
        elif not isinstance(v, bytes):
            raise SpecError(f"{where}: expected dtype string (str or bytes), got {type(v).__name__} {v!r:.40}")
    return arr


def _owned(arr: np.ndarray) -> np.ndarray:
    """A copy in a fresh 64-byte-aligned buffer: the generator may refill its own array after
    yielding it, and an aligned whole-batch block then goes to TF without another copy."""
    if arr.dtype == object:
        return arr.copy()
    out = aligned_empty(arr.shape, arr.dtype)
    np.copyto(out, arr, casting="no")
    return out


def _normalise_shape(shape: Any, name: str) -> Shape:
    if shape is None:
        return None
    if hasattr(shape, "as_list"):  # tf.TensorShape, duck-typed to stay TF-free
        if getattr(shape, "rank", 0) is None:
            return None
        shape = shape.as_list()
    try:
        dims = tuple(None if d is None or d == -1 else int(d) for d in shape)
    except TypeError:
        raise SpecError(f"output_shapes for field {name}: expected a shape (tuple of ints/None), "
                        f"got {shape!r}") from None
    return dims
