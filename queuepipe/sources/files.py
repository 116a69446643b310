"""The ``files`` argument every file source takes: a path, a glob pattern, or a list of them."""
from __future__ import annotations

import glob
import os
import re
from typing import Any, List, Type

_GLOB = re.compile(r"[*?\[]")


def resolve_paths(files: Any, kind: str, *, type_error: Type[Exception], input_error: Type[Exception],
                  not_found: Type[Exception]) -> List[str]:
    """Existing absolute paths, in the given order; a glob's matches sorted by name.

    ``kind`` names the files in messages ("HDF5", "TFRecord").  Refused here, at build time,
    with the source's own error classes: a value that is no path (``type_error``), no files or
    a directory (``input_error``), a missing file or a pattern that matches nothing
    (``not_found``)."""
    if isinstance(files, (str, bytes, os.PathLike)):
        items = [files]
    else:
        try:
            items = list(files)
        except TypeError:
            raise type_error(f"files must be a path, a glob pattern or a list of paths, "
                             f"got {type(files).__name__}") from None
    if not items:
        raise input_error(f"files is empty: pass at least one {kind} file")
    paths: List[str] = []
    for item in items:
        try:
            path = os.fsdecode(os.fspath(item))
        except TypeError:
            raise type_error(f"files: {item!r} is not a path") from None
        if not os.path.exists(path) and _GLOB.search(path):
            matches = sorted(glob.glob(path))
            if not matches:
                raise not_found(f"{path}: no file matches this glob pattern")
            paths.extend(matches)
        else:
            paths.append(path)
    for path in paths:
        if not os.path.exists(path):
            raise not_found(f"{path}: no such file")
        if os.path.isdir(path):
            raise input_error(f"{path}: is a directory, not {_article(kind)} {kind} file")
    return [os.path.abspath(p) for p in paths]


def _article(kind: str) -> str:
    """"an" before a word read with a vowel sound ("an HDF5 file"), else "a" ("a TFRecord file")."""
    return "an" if kind[:1] in "aeiouAEFHILMNORSX" else "a"
