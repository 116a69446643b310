"""Errors of the HDF5 source.

Build-time errors subclass the built-in type a caller would catch anyway
(``FileNotFoundError``, ``ValueError``, ``TypeError``) and :class:`QueuepipeError`.
Every message names the file, the dataset and the reason.  Each class takes a single
message argument, so instances pickle and travel from worker processes unchanged.
"""
from __future__ import annotations

from ..core.errors import QueuepipeError


class HDF5InputError(QueuepipeError, ValueError):
    """Files, datasets or a row selection that cannot be read as asked (found while building)."""


class HDF5FileNotFoundError(HDF5InputError, FileNotFoundError):
    """A file (or a glob pattern, or an external link's target file) does not exist."""


class HDF5SelectionError(HDF5InputError, IndexError):
    """A row selection reaches outside the rows there are, or selects nothing."""


class HDF5TypeError(QueuepipeError, TypeError):
    """A dataset's dtype has no TensorFlow equivalent, or an argument has an unsupported type."""


class HDF5FilterError(HDF5InputError):
    """A dataset needs an HDF5 filter (compression plugin) this process cannot decode."""


class HDF5ReadError(QueuepipeError, OSError):
    """A read failed while the pipeline ran (corrupt chunk, file changed or vanished)."""
