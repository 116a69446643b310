"""queuepipe: feed tf.compat.v1 session graphs from generators and HDF5 files on many workers.

The public surface is this module: :func:`from_generator`, :func:`from_hdf5`,
:func:`tfrecords` and :func:`fixed_length_records` (TF1 record files), :func:`per_sample`
(a TF1 per-example function over a dequeued batch), :func:`running`, :func:`worker_info` / :class:`WorkerInfo`, :class:`Pipeline`,
:class:`InputWaitHook` (is training input-bound?) and the
errors (:mod:`queuepipe.errors` lists them all).  Importing queuepipe imports neither
TensorFlow nor h5py (worker processes import only the TF-free parts); the entry points
that build graph ops import them on first use.  Importing never changes TensorFlow's
global state.  How the pieces fit: DESIGN.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import from_generator, from_hdf5, running
from .errors import (ArgumentError, ArgumentTypeError, ExampleParseError, GraphModeError, HDF5FileNotFoundError,
                     HDF5FilterError, HDF5InputError, HDF5ReadError, HDF5SelectionError, HDF5TypeError,
                     MissingDependencyError, QueuepipeError, RecordFileNotFoundError, RecordInputError,
                     RecordReadError, ResumeError, SpecError, WorkerDiedError, WorkerFailure, WorkerStalledError,
                     original_error, worker_failure)
from .preprocessing import per_sample
from .records import fixed_length_records, tfrecords
from .workers.info import WorkerInfo, worker_info

if TYPE_CHECKING:  # for annotations only: importing the TF layer here would import TensorFlow
    from .tf.monitoring import InputWaitHook
    from .tf.pipeline import Pipeline

__version__ = "0.1.0"

__all__ = ["from_generator", "from_hdf5", "tfrecords", "fixed_length_records", "running", "worker_info", "WorkerInfo",
           "Pipeline", "InputWaitHook", "per_sample", "RecordInputError", "RecordFileNotFoundError",
           "RecordReadError", "ExampleParseError",
           "QueuepipeError", "ArgumentError", "ArgumentTypeError", "GraphModeError", "MissingDependencyError",
           "SpecError", "WorkerDiedError", "WorkerStalledError", "HDF5InputError", "HDF5FileNotFoundError", "HDF5SelectionError",
           "HDF5FilterError", "HDF5TypeError", "HDF5ReadError", "ResumeError", "WorkerFailure", "worker_failure",
           "original_error", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Pipeline":  # the class lives in the TF layer: import it only when asked for
        from .tf.pipeline import Pipeline
        return Pipeline
    if name == "InputWaitHook":  # a tf.compat.v1 SessionRunHook: importing it imports TensorFlow
        from .tf.monitoring import InputWaitHook
        return InputWaitHook
    raise AttributeError(f"module 'queuepipe' has no attribute {name!r}")
