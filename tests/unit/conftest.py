"""The TF-free unit tier: fast tests of queuepipe's TensorFlow-free modules, one test file per module.

Run it with ``python -m pytest tests/unit`` (seconds, no TensorFlow needed, none imported).
This conftest blocks ``import tensorflow`` for a unit-only session and fails the session if
TensorFlow got imported anyway; the repository's ``tests/conftest.py`` leak check applies too.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent
BLOCKED = "the unit tier must not import tensorflow"


class _NoTensorFlow:
    """A ``sys.meta_path`` finder that refuses ``tensorflow`` and its submodules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "tensorflow" or fullname.startswith("tensorflow."):
            raise ImportError(BLOCKED, name=fullname)
        return None


_BLOCKER = _NoTensorFlow()
sys.meta_path.insert(0, _BLOCKER)  # at import time: before any unit test module is imported
_guarding = True


def _tensorflow_imported() -> bool:
    # a ``None`` entry is an import blocker (``sys.modules['tensorflow'] = None``), not TensorFlow
    return sys.modules.get("tensorflow") is not None


def _unit_only(config: pytest.Config) -> bool:
    """Whether every path this session was asked to collect lies inside the unit tier."""
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = Path(str(arg).split("::", 1)[0])
        path = (path if path.is_absolute() else base / path).resolve()
        if path != UNIT_DIR and UNIT_DIR not in path.parents:
            return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    """A session that also runs the TF suites (e.g. ``pytest tests``) keeps TensorFlow importable."""
    global _guarding
    if not _unit_only(config):
        _guarding = False
        if _BLOCKER in sys.meta_path:
            sys.meta_path.remove(_BLOCKER)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _guarding and _tensorflow_imported():
        sys.stderr.write("\nERROR: tensorflow was imported during the unit tier "
                         "(tests/unit must stay TF-free)\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
