"""h5py's own reading of a (possibly damaged) file: the reference a trial's batches are judged by.

Run in its own interpreter (``python -m reliability.oracle FILE OUT.pkl DATASET...``) with a
timeout, because HDF5 itself may crash or hang on a damaged file: that must not be mistaken
for queuepipe's behaviour.  For each dataset it tries ``f[ds][:]``; if that fails, it reads
row by row (``f[ds][i]``) and records, per row, the value or h5py's error.

Result (pickled dict): ``{"open_error": str|None, "datasets": {path: {"full": bool,
"error": str|None, "rows": n, "values": list (None where unreadable), "row_errors": {i: str}}}}``.
"""
from __future__ import annotations

import pickle
import sys
from typing import Any, Dict, List


def read_reference(path: str, datasets: List[str]) -> Dict[str, Any]:
    import h5py

    out: Dict[str, Any] = {"open_error": None, "datasets": {}}
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - any failure to open is the reference's answer
        out["open_error"] = f"{type(exc).__name__}: {exc}"
        return out
    with f:
        for ds in datasets:
            rec: Dict[str, Any] = {"full": False, "error": None, "rows": None, "values": None, "row_errors": {}}
            out["datasets"][ds] = rec
            try:
                d = f[ds]
                n = int(d.shape[0])
                rec["rows"] = n
                rec["dtype"] = str(d.dtype)
            except Exception as exc:  # noqa: BLE001
                rec["error"] = f"{type(exc).__name__}: {exc}"
                continue
            try:
                rec["values"] = list(d[:])
                rec["full"] = True
                continue
            except Exception as exc:  # noqa: BLE001
                rec["error"] = f"{type(exc).__name__}: {exc}"
            values: List[Any] = []
            for i in range(n):
                try:
                    values.append(d[i])
                except Exception as exc:  # noqa: BLE001
                    values.append(None)
                    rec["row_errors"][i] = f"{type(exc).__name__}: {exc}"
            rec["values"] = values
    return out


def main(argv: List[str]) -> int:
    path, out_path, *datasets = argv
    result = read_reference(path, datasets)
    with open(out_path, "wb") as fh:
        pickle.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
