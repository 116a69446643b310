"""The ``files`` argument of the record front doors: a path, a glob pattern, or a list of them."""
from __future__ import annotations

import glob
import os
import re
from typing import Any, List

from ...errors import ArgumentTypeError
from ...errors import RecordFileNotFoundError, RecordInputError

_GLOB = re.compile(r"[*?\[]")


def resolve_paths(files: Any, kind: str) -> List[str]:
    """Existing absolute paths, in the given order; a glob's matches sorted by name.

    ``kind`` names the files in messages ("TFRecord", "fixed-length record").  A pattern
    that matches nothing, a missing file or a directory is refused here, at build time.
    """
    if isinstance(files, (str, bytes, os.PathLike)):
        items = [files]
    else:
        try:
            items = list(files)
        except TypeError:
            raise ArgumentTypeError(f"files must be a path, a glob pattern or a list of paths, "
                                    f"got {type(files).__name__}") from None
    if not items:
        raise RecordInputError(f"files is empty: pass at least one {kind} file")
    paths: List[str] = []
    for item in items:
        try:
            path = os.fsdecode(os.fspath(item))
        except TypeError:
            raise ArgumentTypeError(f"files: {item!r} is not a path") from None
        if not os.path.exists(path) and _GLOB.search(path):
            matches = sorted(glob.glob(path))
            if not matches:
                raise RecordFileNotFoundError(f"{path}: no file matches this glob pattern")
            paths.extend(matches)
        else:
            paths.append(path)
    for path in paths:
        if not os.path.exists(path):
            raise RecordFileNotFoundError(f"{path}: no such file")
        if os.path.isdir(path):
            raise RecordInputError(f"{path}: is a directory, not a {kind} file")
    return [os.path.abspath(p) for p in paths]
