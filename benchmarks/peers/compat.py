"""What the peers need to run on current TensorFlow (2.x, graph mode via tf.compat.v1) and NumPy 2.

Applied at run time, in the peers' own process; no installed file is patched.
Each shim is listed in NOTES.md with the error it avoids.
"""
from __future__ import annotations

import os
from typing import List

APPLIED: List[str] = []
_SHARED_SEGMENTS: List[str] = []  # names of the multitables /dev/shm segments this process created


def numpy2_aliases() -> None:
    """multitables (tftables' reader) uses ``np.unicode_``, removed in NumPy 2.0."""
    import numpy as np
    if not hasattr(np, "unicode_"):
        np.unicode_ = np.str_
        APPLIED.append("np.unicode_ = np.str_ (multitables, removed in NumPy 2.0)")


def multitables_wrapt2() -> None:
    """multitables releases a block by assigning a ``ReleasedResource`` to a wrapt
    ``ObjectProxy``'s ``__wrapped__``; wrapt 2 then asks the new object for
    ``__wrapped_setattr_fixups__``, which ReleasedResource answers with
    ReleasedResourceError instead of AttributeError -- so every block read fails (and
    tftables' reader thread dies, leaving its queue open forever).  Answer AttributeError
    for wrapt's own probes, as multitables already does for ``__qualname__``."""
    from multitables import resource_wrapper as rw
    original = rw.ReleasedResource.__getattr__
    if getattr(original, "_queuepipe_bench_shim", False):
        return

    def __getattr__(self, name):
        if name == "__qualname__" or name.startswith("__wrapped"):
            raise AttributeError(name)
        return original(self, name)
    __getattr__._queuepipe_bench_shim = True
    rw.ReleasedResource.__getattr__ = __getattr__
    APPLIED.append("multitables ReleasedResource: AttributeError for wrapt 2's __wrapped_* probes")


def tftables_streamer_per_dataset(tftables) -> None:
    """multitables' ``Streamer.get_queue`` keeps its reader in ``self._dataset_reader``
    and its stop event in ``self._stop``: a second ``get_queue`` on the same Streamer
    replaces the first queue's reader, and whichever queue finishes first closes the
    other's reader ("This reader has been closed", the loader then blocks forever).
    tftables' ``FileReader`` calls ``get_queue`` once per ``get_batch`` on one Streamer
    -- so reading examples and labels, its documented use, races.  Give every
    ``get_batch`` a Streamer of its own (same file, same options)."""
    original = tftables.FileReader.get_batch
    if getattr(original, "_queuepipe_bench_shim", False):
        return

    def get_batch(self, path, **kw_args):
        old = self.streamer
        self.streamer = type(old)(old._filename, **old._h5_kw_args)
        return original(self, path, **kw_args)
    get_batch._queuepipe_bench_shim = True
    tftables.FileReader.get_batch = get_batch
    APPLIED.append("tftables FileReader.get_batch: one multitables Streamer per dataset (shared-state race)")


def multitables_track_shared_memory() -> None:
    """Not a fix of multitables: the benchmark's row processes end with ``os._exit`` (they are
    forked), so multitables' ``__del__``-driven unlinking of its /dev/shm segments never
    runs.  Record the segments this process creates; :func:`release_shared_memory` unlinks
    them at the end of the row."""
    from multitables import shared_mem
    original = shared_mem.SharedBuffer.__init__
    if getattr(original, "_queuepipe_bench_shim", False):
        return

    def __init__(self, map_id, size_nbytes):
        original(self, map_id, size_nbytes)
        if map_id is None:  # created here: this process owns it
            name = self.name.decode() if isinstance(self.name, bytes) else str(self.name)
            _SHARED_SEGMENTS.append(name.lstrip("/"))
    __init__._queuepipe_bench_shim = True
    shared_mem.SharedBuffer.__init__ = __init__


def release_shared_memory() -> None:
    """Unlink the multitables segments this process created (its readers have stopped)."""
    for name in _SHARED_SEGMENTS:
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except FileNotFoundError:
            pass
    _SHARED_SEGMENTS.clear()


def import_tftables():
    """tftables, with its module-level ``tf`` pointed at ``tf.compat.v1`` (it calls
    ``tf.placeholder``/``tf.FIFOQueue``, which TF 2 has only under compat.v1)."""
    numpy2_aliases()
    import wrapt
    if int(wrapt.__version__.split(".")[0]) >= 2:
        multitables_wrapt2()
    multitables_track_shared_memory()
    import tensorflow as tf
    import tftables
    if tftables.tf is not tf.compat.v1:
        tftables.tf = tf.compat.v1
        APPLIED.append("tftables.tf = tf.compat.v1 (tf.placeholder / tf.FIFOQueue are TF1-only names)")
    tftables_streamer_per_dataset(tftables)
    return tftables


def import_tensorpack():
    """tensorpack 0.11 runs on TF 2 as is (it picks ``tf.compat.v1`` itself); nothing to patch."""
    import tensorpack
    return tensorpack
