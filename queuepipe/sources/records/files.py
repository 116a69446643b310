"""The ``files`` argument of the record front doors: a path, a glob pattern, or a list of them."""
from __future__ import annotations

from typing import Any, List

from ...errors import ArgumentTypeError, RecordFileNotFoundError, RecordInputError
from ..files import resolve_paths as resolve_any


def resolve_paths(files: Any, kind: str) -> List[str]:
    """Existing absolute paths, in the given order; a glob's matches sorted by name.

    ``kind`` names the files in messages ("TFRecord", "fixed-length record").  A pattern
    that matches nothing, a missing file or a directory is refused here, at build time."""
    return resolve_any(files, kind, type_error=ArgumentTypeError, input_error=RecordInputError,
                       not_found=RecordFileNotFoundError)
