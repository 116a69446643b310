"""queuepipe: feed tf.compat.v1 session graphs from generators and HDF5 files on many workers.

Importing queuepipe does not import TensorFlow (worker processes import only the
TF-free core); the entry points that build graph ops import it on first use.
Importing never changes TensorFlow's global state.
"""
from __future__ import annotations

from typing import Any

from .core.errors import QueuepipeError, SpecError, WorkerDiedError
from .core.worker_info import WorkerInfo, worker_info

__version__ = "0.1.0"

__all__ = ["from_generator", "from_hdf5", "running", "worker_info", "WorkerInfo", "Pipeline",
           "QueuepipeError", "SpecError", "WorkerDiedError", "__version__"]


def from_generator(*args: Any, **kwargs: Any):
    from .api import from_generator as impl
    return impl(*args, **kwargs)


def from_hdf5(*args: Any, **kwargs: Any):
    from .hdf5_api import from_hdf5 as impl
    return impl(*args, **kwargs)


def running(*args: Any, **kwargs: Any):
    from .session import running as impl
    return impl(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Pipeline":
        from .tf.pipeline import Pipeline
        return Pipeline
    raise AttributeError(f"module 'queuepipe' has no attribute {name!r}")




from_generator.__doc__ = "Batch tensors fed from a Python generator. See queuepipe.api.from_generator."
from_hdf5.__doc__ = "Batch tensors read from selected rows of HDF5 datasets. See queuepipe.hdf5_api.from_hdf5."
running.__doc__ = "Context manager: start the session's queue runners, stop and join on exit. See queuepipe.session."
