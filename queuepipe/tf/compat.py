"""Small shims over TensorFlow internals that the TF layer needs, in one place."""
from __future__ import annotations

import contextlib


def quiet_deprecations():
    """Silence TF's deprecation notices for the TF1 APIs we use on purpose (scoped, not global)."""
    try:
        from tensorflow.python.util import deprecation
        return deprecation.silence()
    except Exception:  # pragma: no cover - private module moved
        return contextlib.nullcontext()
