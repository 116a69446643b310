"""Quiet TensorFlow start-up for queuepipe's programs (the CLI and the examples) -- never the library.

TensorFlow's C++ log honours ``TF_CPP_MIN_LOG_LEVEL`` (0: everything, 1: no INFO, 2: no
WARNING either, 3: no ERROR either), but only once it has read it: lines logged while its
shared libraries load -- the ``I0000 ... port.cc] oneDNN custom operations are on`` notice
and absl's ``WARNING: All log messages before absl::InitializeLog() is called ...`` -- come
out whatever the level (TensorFlow 2.21).  A program that wants a clean terminal therefore

1. sets the level before TensorFlow is imported, with ``os.environ.setdefault`` so a level the
   user set wins (:func:`quiet_tensorflow_logs`), and
2. imports TensorFlow inside :func:`quiet_tensorflow_import`, which applies that same level to
   the lines TensorFlow prints while loading (:func:`drop_log_lines`) and passes every other
   line through.

Importing this module imports neither TensorFlow nor anything that does, and changes nothing.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, List, Mapping, MutableMapping, Optional

#: The level the programs use unless the user set one: no INFO and no WARNING lines (TF's
#: start-up notices, and the warnings TF logs for every cancelled op at shutdown).
PROGRAM_LOG_LEVEL = "2"

# A C++ log record starts with the severity letter and the month-day (absl/glog prefix):
# "I0000 00:00:1796498399.445737    6254 port.cc:153] ...".  Lines that do not start a record
# continue the one above (multi-line messages).
_RECORD = re.compile(r"^([IWEF])\d{4} ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def quiet_tensorflow_logs(environ: Optional[MutableMapping[str, str]] = None) -> None:
    """Set ``TF_CPP_MIN_LOG_LEVEL`` to :data:`PROGRAM_LOG_LEVEL` unless it is set already.

    For programs only (queuepipe's CLI, the examples), before TensorFlow is imported: the
    library itself never touches TensorFlow's settings."""
    env = os.environ if environ is None else environ
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", PROGRAM_LOG_LEVEL)


def min_log_level(environ: Optional[Mapping[str, str]] = None) -> int:
    """TensorFlow's C++ minimum log level from ``TF_CPP_MIN_LOG_LEVEL`` (0 when unset or not a number)."""
    value = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "0")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


def drop_log_lines(text: str, level: int) -> str:
    """``text`` without the C++ log records below ``level`` (and their continuation lines),
    nor absl's pre-initialisation notice when ``level`` >= 1; every other line is kept.

    This is what ``TF_CPP_MIN_LOG_LEVEL`` would have done to the lines TensorFlow logs before
    it reads the variable."""
    if level <= 0:
        return text
    kept: List[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        record = _RECORD.match(line)
        if record:
            dropping = _SEVERITY[record.group(1)] < level
        elif line.rstrip("\r\n") == _ABSL_PREINIT:
            dropping = True
        elif not (dropping and _continues(line)):
            dropping = False
        if not dropping:
            kept.append(line)
    return "".join(kept)


def _continues(line: str) -> bool:
    """Whether an unprefixed line after a record belongs to it: indented (the ``[[{{node ...}}]]``
    under a failed op's status), or the second sentence of TF's CPU-feature notice."""
    return line.startswith((" ", "\t", "To enable the following instructions"))


@contextlib.contextmanager
def quiet_tensorflow_import() -> Iterator[None]:
    """``with quiet_tensorflow_import(): import tensorflow as tf`` -- the import, with the lines
    TensorFlow writes to stderr while it loads filtered by ``TF_CPP_MIN_LOG_LEVEL``
    (:func:`drop_log_lines`); everything else (a real error included) is written out after.

    Does nothing when TensorFlow is imported already, when the level is 0, or when stderr has
    no file descriptor to redirect."""
    level = min_log_level()
    if level <= 0 or "tensorflow" in sys.modules:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as captured:  # unlinked at once: nothing is left in TMPDIR
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            rest = drop_log_lines(text, level)
            if rest:
                os.write(2, rest.encode("utf-8"))
