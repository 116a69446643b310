"""Decode ``tf.train.Example`` records into feature columns, without TensorFlow or protobuf.

Worker processes never import TensorFlow (and ``tensorflow.core.example.example_pb2``
imports all of it), so this module reads the protobuf wire format itself.  The messages
(``tensorflow/core/example/{example,feature}.proto``)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }    // entries: key = 1, value = 2
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

The wire format: each field is a varint tag ``field_number << 3 | wire_type`` and a payload
(wire type 0 a varint, 1 eight bytes, 2 a varint length and that many bytes, 5 four bytes).
A repeated number field may come packed (one length-delimited run) or unpacked (one
tagged element each), or both; either way its elements' bytes, concatenated, are a packed
run -- so every number list is kept as byte *pieces* and decoded once per block, in
numpy: floats are little-endian IEEE, int64s plain varints (two's complement in 64 bits,
10 bytes for a negative value; no zigzag).  Protobuf's merge rules hold: a map key seen
twice keeps its last value, a list field seen twice is concatenated, and a ``Feature``
whose ``kind`` changes keeps the last one.  Unknown fields are skipped.

Only the Python part that finds where each wanted feature's bytes are runs per record;
the decoding of numbers runs per block and per feature, vectorised.  What TensorFlow's
``parse_example`` does is the reference, checked by the tests: a feature that is absent,
or present with no list set, is *missing* (its ``default_value``, or an error); a list of
the wrong type or length is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...workers.buffers import BlockAllocator, aligned_block
from ...errors import ExampleParseError

BYTES, FLOAT, INT64 = 1, 2, 3  # Feature's field numbers: which list a feature holds
KIND_NAMES = {0: "no list", BYTES: "bytes_list", FLOAT: "float_list", INT64: "int64_list"}
_KIND_OF_DTYPE = {np.dtype(object): BYTES, np.dtype(np.float32): FLOAT, np.dtype(np.int64): INT64}
_DTYPE_NAMES = {BYTES: "string", FLOAT: "float32", INT64: "int64"}


@dataclass(frozen=True, eq=False)
class FeatureSpec:
    """One feature to parse (a TensorFlow-free, picklable ``FixedLenFeature``/``VarLenFeature``).

    dtype: ``float32``, ``int64`` or ``object`` (``tf.string``: ``bytes`` values).
    shape: the per-example shape of a fixed-length feature; ``None`` for a variable-length
        one (1-D, padded per batch).
    default: a fixed-length feature's ``default_value`` as an array of ``shape``, or None
        (the feature is then required).
    """

    name: str
    dtype: np.dtype
    shape: Optional[Tuple[int, ...]]
    default: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if np.dtype(self.dtype) not in _KIND_OF_DTYPE:
            raise ValueError(f"feature {self.name!r}: dtype {self.dtype} is not float32, int64 or string")

    @property
    def kind(self) -> int:
        return _KIND_OF_DTYPE[np.dtype(self.dtype)]

    @property
    def var_len(self) -> bool:
        return self.shape is None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape is not None else -1

    def describe(self) -> str:
        if self.var_len:
            return f"VarLenFeature({_DTYPE_NAMES[self.kind]})"
        return f"FixedLenFeature({list(self.shape)}, {_DTYPE_NAMES[self.kind]})"


class _Malformed(Exception):
    """Internal: the bytes are no valid Example; ``pos`` is where (an offset in the buffer)."""

    def __init__(self, what: str, pos: int):
        super().__init__(what)
        self.what = what
        self.pos = pos


# -- the wire format -------------------------------------------------------------------------------

def _varint(buf: bytes, p: int) -> Tuple[int, int]:
    """(value, position after it) of the varint at ``p``."""
    result = shift = 0
    try:
        while True:
            b = buf[p]
            p += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, p
            shift += 7
            if shift >= 70:
                raise _Malformed("a varint longer than 10 bytes", p)
    except IndexError:
        raise _Malformed("a varint runs past the end of the data", p) from None


def _length(buf: bytes, p: int, end: int) -> Tuple[int, int]:
    """(start, stop) of the length-delimited payload whose length varint is at ``p``."""
    n = buf[p] if p < end else 0x80
    if n < 0x80:
        p += 1
    else:
        n, p = _varint(buf, p)
    q = p + n
    if q > end:
        raise _Malformed(f"a field of {n} bytes runs past the end of its message", p)
    return p, q


def _skip(buf: bytes, p: int, wire_type: int, end: int) -> int:
    """The position after a field's payload of ``wire_type`` starting at ``p`` (an unknown field)."""
    if wire_type == 0:
        _, p = _varint(buf, p)
    elif wire_type == 1:
        p += 8
    elif wire_type == 2:
        _, p = _length(buf, p, end)
    elif wire_type == 5:
        p += 4
    else:
        raise _Malformed(f"wire type {wire_type} (groups or invalid) is not used by tf.train.Example", p)
    if p > end:
        raise _Malformed("a field runs past the end of its message", p)
    return p


def _tag(buf: bytes, p: int) -> Tuple[int, int]:
    tag = buf[p]
    if tag < 0x80:
        return tag, p + 1
    return _varint(buf, p)


def _scan_features(buf: bytes, p: int, end: int, wanted: Dict[bytes, int], spans: List) -> None:
    """Note in ``spans[k]`` the (start, stop) of the ``Feature`` of wanted feature ``k``."""
    while p < end:
        if buf[p] != 0x0A:  # not a map entry
            tag, p = _tag(buf, p)
            p = _skip(buf, p, tag & 7, end)
            continue
        n = buf[p + 1]
        if n < 0x80:
            p += 2
        else:
            n, p = _varint(buf, p + 1)
        q = p + n
        if q > end:
            raise _Malformed(f"a map entry of {n} bytes runs past the end of the features", p)
        if n and buf[p] == 0x0A and buf[p + 1] < 0x80:  # the usual layout: key, then a value filling the entry
            ks = p + 2
            ke = ks + buf[p + 1]
            if ke < q and buf[ke] == 0x12:
                m = buf[ke + 1]
                if m < 0x80:
                    vs = ke + 2
                else:
                    m, vs = _varint(buf, ke + 1)
                if vs + m == q:
                    k = wanted.get(buf[ks:ke])
                    if k is not None:
                        spans[k] = (vs, q)  # a key seen twice: the last entry counts (protobuf map semantics)
                    p = q
                    continue
        key = b""
        value = (q, q)  # an entry without a value holds an empty Feature
        r = p
        while r < q:
            t, r = _tag(buf, r)
            if t == 0x0A:
                s, r = _length(buf, r, q)
                key = buf[s:r]
            elif t == 0x12:
                value = _length(buf, r, q)
                r = value[1]
            else:
                r = _skip(buf, r, t & 7, q)
        k = wanted.get(key)
        if k is not None:
            spans[k] = value
        p = q


def scan_example(buf: bytes, start: int, end: int, wanted: Dict[bytes, int]) -> List[Optional[Tuple[int, int]]]:
    """The (start, stop) of each wanted feature's ``Feature`` message in the Example at
    ``buf[start:end]`` (None where the Example has no such key)."""
    spans: List[Optional[Tuple[int, int]]] = [None] * len(wanted)
    p = start
    try:
        while p < end:
            tag, p = _tag(buf, p)
            if tag == 0x0A:  # Example.features; seen twice, the two are merged
                s, p = _length(buf, p, end)
                _scan_features(buf, s, p, wanted, spans)
            else:
                p = _skip(buf, p, tag & 7, end)
    except IndexError:  # a fast path read past the buffer: the record is cut short
        raise _Malformed("a field runs past the end of the data", len(buf)) from None
    if p != end:
        raise _Malformed("the last field runs past the end of the record", end)
    return spans


def example_keys(buf: bytes, start: int, end: int) -> List[str]:
    """The feature names of the Example at ``buf[start:end]`` (for error messages; best effort)."""
    keys: List[bytes] = []
    try:
        p = start
        while p < end:
            tag, p = _tag(buf, p)
            if tag != 0x0A:
                p = _skip(buf, p, tag & 7, end)
                continue
            s, p = _length(buf, p, end)
            while s < p:
                t, s = _tag(buf, s)
                if t != 0x0A:
                    s = _skip(buf, s, t & 7, p)
                    continue
                a, s = _length(buf, s, p)
                r = a
                while r < s:
                    t, r = _tag(buf, r)
                    if t == 0x0A:
                        k, r = _length(buf, r, s)
                        keys.append(buf[k:r])
                    else:
                        r = _skip(buf, r, t & 7, s)
    except _Malformed:
        pass
    return sorted({k.decode("utf-8", "replace") for k in keys})


def feature_pieces(buf: bytes, start: int, end: int) -> Tuple[int, List[Tuple[int, int]]]:
    """(kind, pieces) of the ``Feature`` at ``buf[start:end]``: kind is :data:`BYTES`,
    :data:`FLOAT`, :data:`INT64` or 0 (no list set); pieces are (start, stop) byte ranges --
    one per value of a bytes list; for a number list, ranges whose concatenation is the
    packed encoding of its values."""
    if end - start >= 4 and buf[start] in (0x0A, 0x12, 0x1A) and buf[start + 1] < 0x80 \
            and start + 2 + buf[start + 1] == end and buf[start + 2] == 0x0A:
        # the usual layout: one list filling the Feature, its values one run filling the list
        m = buf[start + 3]
        if m < 0x80:
            a = start + 4
        else:
            m, a = _varint(buf, start + 3)
        if a + m == end:
            return buf[start] >> 3, [(a, end)]
    elif end - start >= 4 and buf[start] in (0x0A, 0x12, 0x1A) and buf[start + 1] >= 0x80:
        n, s = _varint(buf, start + 1)
        if s + n == end and n >= 2 and buf[s] == 0x0A:
            m, a = _varint(buf, s + 1)
            if a + m == end:
                return buf[start] >> 3, [(a, end)]
    kind = 0
    pieces: List[Tuple[int, int]] = []
    p = start
    while p < end:
        tag, p = _tag(buf, p)
        field = tag >> 3
        if (tag & 7) != 2 or field not in (BYTES, FLOAT, INT64):
            p = _skip(buf, p, tag & 7, end)
            continue
        s, p = _length(buf, p, end)
        if field != kind:  # oneof: a different list replaces the one before
            kind, pieces = field, []
        r = s
        while r < p:  # the list message: field 1, packed or not
            t, r = _tag(buf, r)
            if t == 0x0A:
                a, r = _length(buf, r, p)
                pieces.append((a, r))
            elif t == 0x0D and field == FLOAT:
                pieces.append((r, r + 4))
                r += 4
            elif t == 0x08 and field == INT64:
                a = r
                _, r = _varint(buf, r)
                pieces.append((a, r))
            else:
                r = _skip(buf, r, t & 7, p)
            if r > p:
                raise _Malformed("a value runs past the end of its list", r)
    return kind, pieces


# -- numbers, a block at a time --------------------------------------------------------------------

def _gather(data: np.ndarray, starts: np.ndarray, stops: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The bytes of every (start, stop) range, concatenated (into ``out``, uint8, when given):
    one copy per range when ranges are long (a float list of an image), one vectorised
    gather when they are short (ids, labels)."""
    lengths = stops - starts
    total = int(lengths.sum())
    if out is None:
        out = np.empty(total, np.uint8)
    if total == 0:
        return out
    if len(starts) == 1 or total >= 256 * len(starts):
        pos = 0
        for s, e in zip(starts.tolist(), stops.tolist()):
            out[pos:pos + e - s] = data[s:e]
            pos += e - s
    else:
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        np.take(data, np.arange(total, dtype=np.int64) + offsets, out=out)
    return out


def decode_varints(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(int64 values, index of each value's last byte) of concatenated varints in ``raw``
    (uint8), vectorised.  The caller checks that ``raw`` ends on a varint's last byte."""
    last = np.flatnonzero(raw < 0x80)
    if len(last) == 0:
        return np.empty(0, np.int64), last
    first = np.empty_like(last)
    first[0] = 0
    first[1:] = last[:-1] + 1
    lengths = last - first + 1
    if int(lengths.max()) > 10:
        raise _Malformed("an int64 varint longer than 10 bytes", int(first[np.argmax(lengths)]))
    used = raw[:int(last[-1]) + 1]
    shifts = (np.arange(len(used), dtype=np.int64) - np.repeat(first, lengths)) * 7
    parts = (used & 0x7F).astype(np.uint64) << shifts.astype(np.uint64)
    return np.bitwise_or.reduceat(parts, first).view(np.int64), last


# -- a block of records ----------------------------------------------------------------------------

Locate = Callable[[int], str]  # record i of a block -> "file F, record r (byte offset o)"


class ExampleDecoder:
    """Columns of ``features`` for blocks of serialized Examples (one per feature, in order).

    A fixed-length feature's column is ``[n, *shape]`` (numbers in a buffer from the
    block allocator); a variable-length one's is a 1-D object array of per-record 1-D
    arrays, which the batcher pads per batch (0 / ``b""``).
    """

    def __init__(self, features: Sequence[FeatureSpec]):
        self.features = list(features)
        self.wanted = {f.name.encode("utf-8"): k for k, f in enumerate(self.features)}

    def decode(self, buf: bytes, starts: Sequence[int], stops: Sequence[int], locate: Locate,
               allocate: BlockAllocator = aligned_block) -> List[np.ndarray]:
        """The columns of the Examples ``buf[starts[i]:stops[i]]``; errors name the record via ``locate``."""
        n = len(starts)
        found: List[List[Tuple[int, List[Tuple[int, int]]]]] = [[] for _ in self.features]
        empty: Tuple[int, List[Tuple[int, int]]] = (0, [])
        wanted = self.wanted
        for i, (s, e) in enumerate(zip(starts, stops)):
            try:
                spans = scan_example(buf, s, e, wanted)
                for k, span in enumerate(spans):
                    found[k].append(empty if span is None else feature_pieces(buf, span[0], span[1]))
            except _Malformed as exc:
                raise ExampleParseError(f"{locate(i)}: not a valid tf.train.Example: {exc.what} (at byte "
                                        f"{exc.pos - s} of the record's {e - s})") from None
        data = np.frombuffer(buf, dtype=np.uint8)
        fixed = [k for k, f in enumerate(self.features) if not f.var_len]
        columns: List[Optional[np.ndarray]] = [None] * len(self.features)
        out = allocate([((n,) + self.features[k].shape, self.features[k].dtype) for k in fixed]) if fixed else []
        for k, col in zip(fixed, out):
            columns[k] = col

        def has(i: int) -> str:
            keys = example_keys(buf, starts[i], stops[i])
            return f"the record has {len(keys)} feature(s): {', '.join(map(repr, keys[:20]))}" + \
                (", ..." if len(keys) > 20 else "")
        for k, feature in enumerate(self.features):
            columns[k] = self._column(feature, found[k], data, buf, locate, columns[k], has)
        return columns

    # -- one feature ---------------------------------------------------------------------------
    def _column(self, feature: FeatureSpec, found: List[Tuple[int, List[Tuple[int, int]]]], data: np.ndarray,
                buf: bytes, locate: Locate, out: Optional[np.ndarray], has: Locate) -> np.ndarray:
        n = len(found)
        kinds = np.fromiter((kind for kind, _ in found), dtype=np.int8, count=n)
        present = kinds != 0
        wrong = np.flatnonzero(present & (kinds != feature.kind))
        if len(wrong):
            i = int(wrong[0])
            raise ExampleParseError(f"{locate(i)}: feature {feature.name!r} holds a {KIND_NAMES[int(kinds[i])]}, "
                                    f"but {feature.describe()} expects a {KIND_NAMES[feature.kind]} "
                                    f"(dtype {_DTYPE_NAMES[feature.kind]})")
        if not feature.var_len:
            missing = np.flatnonzero(~present)
            if len(missing) and feature.default is None:
                i = int(missing[0])
                raise ExampleParseError(f"{locate(i)}: feature {feature.name!r} is missing and its "
                                        f"{feature.describe()} has no default_value ({has(i)})")
        if feature.kind == BYTES:
            values = [[buf[a:b] for a, b in pieces] for _, pieces in found]
            counts = np.fromiter(map(len, values), dtype=np.int64, count=n)
            flat = None
        else:  # a fixed-length float feature in every record goes straight into its column
            direct = out.reshape(-1).view(np.uint8) if feature.kind == FLOAT and out is not None \
                and present.all() else None
            flat, counts = self._numbers(feature, found, data, locate, direct)
            if flat is None:
                return out
        if feature.var_len:
            return self._ragged(feature, flat if flat is not None else values, counts)
        bad = np.flatnonzero(present & (counts != feature.size))
        if len(bad):
            i = int(bad[0])
            raise ExampleParseError(f"{locate(i)}: feature {feature.name!r} has {int(counts[i])} values, but "
                                    f"{feature.describe()} needs {feature.size} (shape {list(feature.shape)})")
        rows = out.reshape(n, feature.size)
        if feature.kind == BYTES:
            flat = np.empty(int(counts.sum()), dtype=object)
            flat[:] = [v for row in values for v in row]
        if present.all():
            rows[...] = flat.reshape(n, feature.size)
        else:
            rows[present] = flat.reshape(-1, feature.size)
            rows[~present] = feature.default.reshape(feature.size)
        return out

    @staticmethod
    def _numbers(feature: FeatureSpec, found, data: np.ndarray, locate: Locate,
                 direct: Optional[np.ndarray] = None) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """All values of a number feature in record order, and the count per record.  Floats are
        written into ``direct`` (the column's bytes) instead when every record has the number
        the column needs; the values returned are then None."""
        n = len(found)
        per_record = np.fromiter((len(p) for _, p in found), dtype=np.int64, count=n)
        spans = np.array([piece for _, pieces in found for piece in pieces], dtype=np.int64).reshape(-1, 2)
        owner = np.repeat(np.arange(n), per_record)
        lengths = spans[:, 1] - spans[:, 0]
        if feature.kind == FLOAT:
            odd = np.flatnonzero(lengths % 4)
            if len(odd):
                raise ExampleParseError(f"{locate(int(owner[odd[0]]))}: feature {feature.name!r}: a packed "
                                        f"float_list of {int(lengths[odd[0]])} bytes (not a multiple of 4)")
            counts = np.bincount(owner, weights=lengths, minlength=n).astype(np.int64) // 4
            if direct is not None and (counts == feature.size).all():
                _gather(data, spans[:, 0], spans[:, 1], out=direct)
                return None, counts
            return _gather(data, spans[:, 0], spans[:, 1]).view("<f4").astype(np.float32, copy=False), counts
        raw = _gather(data, spans[:, 0], spans[:, 1])
        if len(raw) == 0:
            return np.empty(0, feature.dtype), np.zeros(n, np.int64)
        ends = np.cumsum(lengths) - 1
        cut = np.flatnonzero((lengths > 0) & (raw[np.maximum(ends, 0)] >= 0x80))
        if len(cut):
            raise ExampleParseError(f"{locate(int(owner[cut[0]]))}: feature {feature.name!r}: an int64 varint "
                                    f"runs past the end of its int64_list")
        try:
            values, last = decode_varints(raw)
        except _Malformed as exc:
            i = int(owner[np.searchsorted(np.cumsum(lengths), exc.pos, side="right")])
            raise ExampleParseError(f"{locate(i)}: feature {feature.name!r}: {exc.what}") from None
        record_end = np.cumsum(np.bincount(owner, weights=lengths, minlength=n).astype(np.int64))
        counts = np.bincount(np.searchsorted(record_end, last, side="right"), minlength=n)[:n]
        return values, counts.astype(np.int64)

    @staticmethod
    def _ragged(feature: FeatureSpec, values, counts: np.ndarray) -> np.ndarray:
        """A 1-D object column of each record's values (1-D arrays; none for a missing feature)."""
        n = len(counts)
        col = np.empty(n, dtype=object)
        if feature.kind == BYTES:
            for i, row in enumerate(values):
                arr = np.empty(len(row), dtype=object)
                arr[:] = row
                col[i] = arr
            return col
        for i, part in enumerate(np.split(values, np.cumsum(counts)[:-1])):
            col[i] = part
        return col
