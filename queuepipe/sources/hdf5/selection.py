"""Which rows to read, in which order: the ``rows=`` argument as an ordered list of runs.

A :class:`Selection` is an ordered sequence of row ids kept as *runs* ``[start, stop)``
(two int64 arrays), so "all rows" of a billion-row file costs two numbers and a
sorted index array costs one run per gap.  The ids are *global*: positions in the
concatenation of all files' rows.  A selection's *positions* 0..size-1 number its
rows in delivery order; blocks and shards are position ranges.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence, Tuple

import numpy as np

from ...errors import HDF5SelectionError, HDF5TypeError


def runs_to_ids(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The row ids of runs, concatenated in run order (vectorised, no Python loop)."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    if len(starts) == 1:
        return np.arange(starts[0], stops[0], dtype=np.int64)
    first = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - first, lengths)


def ids_to_runs(ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive ids (``i, i+1, ...``) of an id sequence, order kept."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    heads = np.concatenate([[0], breaks])
    tails = np.concatenate([breaks, [len(ids)]])
    return ids[heads], ids[tails - 1] + 1


def _compact(starts: np.ndarray, stops: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Drop empty runs and merge runs where one ends exactly where the next begins."""
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    if len(starts) < 2:
        return starts, stops
    joins = stops[:-1] == starts[1:]
    if not joins.any():
        return starts, stops
    heads = np.concatenate([[True], ~joins])
    tails = np.concatenate([~joins, [True]])
    return starts[heads], stops[tails]


class Selection:
    """An ordered sequence of row ids, as runs ``[starts[i], stops[i])``.

    Runs may repeat or overlap (an index array with duplicates delivers a row once
    per occurrence).  ``cum[i]`` is the position of run ``i``'s first row.
    """

    def __init__(self, starts: Any, stops: Any):
        starts, stops = _compact(np.asarray(starts, np.int64).reshape(-1),
                                 np.asarray(stops, np.int64).reshape(-1))
        self.starts = starts
        self.stops = stops
        self.cum = np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int64)

    @classmethod
    def all_rows(cls, n_rows: int) -> "Selection":
        return cls([0], [n_rows])

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> "Selection":
        return cls(*ids_to_runs(ids))

    @property
    def size(self) -> int:
        """Number of rows delivered per epoch."""
        return int(self.cum[-1])

    @property
    def is_monotonic(self) -> bool:
        """Ids strictly increase (no repeats): the order is the files' order."""
        return bool(np.all(self.starts[1:] >= self.stops[:-1]))

    def runs(self, p: int, q: int) -> Tuple[np.ndarray, np.ndarray]:
        """The runs covering positions ``[p, q)``, clipped to them."""
        if q <= p:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        i0 = int(np.searchsorted(self.cum, p, side="right")) - 1
        i1 = int(np.searchsorted(self.cum, q, side="left"))
        starts = self.starts[i0:i1].copy()
        stops = self.stops[i0:i1].copy()
        starts[0] += p - self.cum[i0]
        stops[-1] -= self.cum[i1] - q
        return starts, stops

    def ids(self, p: int = 0, q: int | None = None) -> np.ndarray:
        """Row ids at positions ``[p, q)`` (all by default), in delivery order."""
        return runs_to_ids(*self.runs(p, self.size if q is None else q))

    def ids_at(self, positions: np.ndarray) -> np.ndarray:
        """Row ids at any ``positions`` (an int array, any order): one ``searchsorted``."""
        positions = np.asarray(positions, dtype=np.int64)
        run = np.searchsorted(self.cum, positions, side="right") - 1
        return self.starts[run] + (positions - self.cum[run])

    def part(self, p: int, q: int) -> "Selection":
        """The sub-selection at positions ``[p, q)``."""
        return Selection(*self.runs(p, q))

    def sorted(self) -> "Selection":
        """The same multiset of rows in file order (reads best; used when shuffling anyway)."""
        if self.is_monotonic:
            return self
        order = np.argsort(self.starts, kind="stable")
        by_start = Selection(self.starts[order], self.stops[order])
        if by_start.is_monotonic:
            return by_start
        return Selection.from_ids(np.sort(self.ids()))  # overlapping runs (repeated rows)

    def shard(self, index: int, count: int) -> "Selection":
        """Part ``index`` of ``count`` disjoint, contiguous parts of near-equal size (±1 row).

        Contiguous parts keep each shard's reads local; their union is the selection.
        """
        p = index * self.size // count
        q = (index + 1) * self.size // count
        if q <= p:
            raise HDF5SelectionError(f"shard=({index}, {count}) is empty: the selection has only "
                                     f"{self.size} rows for {count} shards")
        return self.part(p, q)

    def offset(self, delta: int) -> "Selection":
        return Selection(self.starts + delta, self.stops + delta)

    @classmethod
    def concat(cls, parts: Sequence["Selection"]) -> "Selection":
        return cls(np.concatenate([p.starts for p in parts]), np.concatenate([p.stops for p in parts]))

    def __getstate__(self):
        return {"starts": self.starts, "stops": self.stops}

    def __setstate__(self, state):
        self.__init__(state["starts"], state["stops"])

    def __repr__(self) -> str:
        return f"<Selection {self.size} rows in {len(self.starts)} runs>"


ROWS_HELP = ("rows must be None (all rows), a slice, an index array (any order), a boolean mask, "
             "a list of (start, stop) ranges, or a callable (path, n_rows) -> one of these")


def select(rows: Any, files: Sequence[Tuple[str, int]]) -> Selection:
    """The ``rows=`` argument for ``files`` [(path, n_rows)] as a Selection of global row ids.

    A callable is asked per file, ``rows(path, n_rows)``, for file-local rows (a file may
    contribute none); anything else selects among the global ids of the concatenation.
    """
    total = sum(n for _, n in files)
    if callable(rows):
        parts, offset = [], 0
        for path, n in files:
            local = rows(path, n)
            where = f"{path}: rows({path!r}, {n}) returned {_short(local)}"
            parts.append(normalise_rows(local, n, where, allow_empty=True).offset(offset))
            offset += n
        sel = Selection.concat(parts)
        if sel.size == 0:
            raise HDF5SelectionError(f"rows={rows!r} selected no rows in any of the {len(files)} file(s)")
        return sel
    names = files[0][0] if len(files) == 1 else f"{files[0][0]} and {len(files) - 1} more file(s)"
    return normalise_rows(rows, total, f"{names} ({total} rows in all)")


def normalise_rows(rows: Any, n_rows: int, where: str, allow_empty: bool = False) -> Selection:
    """The ``rows=`` argument as a :class:`Selection` of ids in ``[0, n_rows)``.

    ``where`` names the rows in errors (e.g. the files they belong to).  Out-of-range
    ids, masks of the wrong length and empty selections are refused here, at build time.
    """
    if rows is None:
        sel = Selection.all_rows(n_rows)
    elif isinstance(rows, slice):
        sel = _from_slice(rows, n_rows, where)
    elif isinstance(rows, (bool, np.bool_)) or isinstance(rows, (numbers.Integral, np.integer)):
        raise HDF5TypeError(f"{where}: rows={rows!r}: {ROWS_HELP} (for one row use [i])")
    elif isinstance(rows, (str, bytes)) or callable(rows):
        raise HDF5TypeError(f"{where}: rows={rows!r}: {ROWS_HELP}")
    elif _looks_like_ranges(rows):
        sel = _from_ranges(rows, n_rows, where)
    else:
        try:
            arr = np.asarray(rows)
        except Exception as exc:  # ragged nested lists and the like
            raise HDF5TypeError(f"{where}: rows: {ROWS_HELP} ({exc})") from None
        sel = _from_array(arr, n_rows, where)
    if sel.size == 0 and not allow_empty:
        raise HDF5SelectionError(f"{where}: rows={_short(rows)} selects no rows")
    return sel


def _short(rows: Any) -> str:
    text = repr(rows)
    return text if len(text) <= 80 else text[:77] + "..."


def _from_slice(s: slice, n: int, where: str) -> Selection:
    step = 1 if s.step is None else s.step
    if step == 0:
        raise HDF5SelectionError(f"{where}: rows={s!r}: slice step cannot be zero")
    for bound in (s.start, s.stop):
        if bound is not None and (bound > n or bound < -n):
            raise HDF5SelectionError(f"{where}: rows={s!r} is out of range: there are {n} rows "
                                     f"(valid bounds -{n}..{n})")
    start, stop, step = s.indices(n)
    if step == 1:
        return Selection([start], [max(start, stop)])
    return Selection.from_ids(np.arange(start, stop, step, dtype=np.int64))


def _looks_like_ranges(rows: Any) -> bool:
    if isinstance(rows, np.ndarray):
        return rows.ndim == 2 and rows.shape[1] == 2 and rows.dtype.kind in "iu"
    if isinstance(rows, (list, tuple)) and rows:
        return all(isinstance(r, (tuple, list)) and len(r) == 2 for r in rows)
    return False


def _from_ranges(rows: Any, n: int, where: str) -> Selection:
    try:
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise HDF5TypeError(f"{where}: rows: ranges must be (start, stop) pairs of ints, got "
                            f"{_short(rows)}") from None
    starts, stops = arr[:, 0], arr[:, 1]
    bad = np.flatnonzero((starts < 0) | (stops > n) | (starts > stops))
    if len(bad):
        i = int(bad[0])
        raise HDF5SelectionError(f"{where}: rows: range #{i} ({int(starts[i])}, {int(stops[i])}) is out of "
                                 f"range: ranges are (start, stop) with 0 <= start <= stop <= {n}")
    return Selection(starts, stops)


def _from_array(arr: np.ndarray, n: int, where: str) -> Selection:
    if arr.dtype == np.bool_:
        if arr.ndim != 1 or len(arr) != n:
            raise HDF5SelectionError(f"{where}: rows: a boolean mask needs one entry per row ({n}), "
                                     f"got shape {arr.shape}")
        return Selection.from_ids(np.flatnonzero(arr))
    if arr.size == 0:
        return Selection([], [])
    if arr.dtype.kind not in "iu":
        raise HDF5TypeError(f"{where}: rows: an index array must hold integers, got dtype {arr.dtype} "
                            f"({ROWS_HELP})")
    if arr.ndim != 1:
        raise HDF5TypeError(f"{where}: rows: an index array must be 1-D, got shape {arr.shape} "
                            f"({ROWS_HELP})")
    ids = arr.astype(np.int64, copy=False)
    bad = np.flatnonzero((ids < 0) | (ids >= n))
    if len(bad):
        i = int(bad[0])
        raise HDF5SelectionError(f"{where}: rows: index {int(ids[i])} (at position {i}) is out of range: "
                                 f"valid row ids are 0..{n - 1}")
    return Selection.from_ids(ids)
