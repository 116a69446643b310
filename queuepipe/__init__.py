"""queuepipe: feed tf.compat.v1 session graphs from generators and HDF5 files on many workers.

Importing queuepipe does not import TensorFlow (worker processes import only the
TF-free core); the entry points that build graph ops import it on first use.
Importing never changes TensorFlow's global state.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import QueuepipeError, SpecError, WorkerDiedError
from .workers.info import WorkerInfo, worker_info

if TYPE_CHECKING:  # for annotations only: importing the TF layer here would import TensorFlow
    from .tf.pipeline import Pipeline

__version__ = "0.1.0"

__all__ = ["from_generator", "from_hdf5", "running", "worker_info", "WorkerInfo", "Pipeline",
           "QueuepipeError", "SpecError", "WorkerDiedError", "__version__"]


def from_generator(*args: Any, **kwargs: Any) -> Pipeline:
    """Batch tensors fed from a Python generator by background workers.

    ``from_generator(generator, output_types, output_shapes=None, *, batch_size, workers=1,
    mode="thread", yields="samples", shuffle=False, seed=None, num_epochs=1, ...)``; the full
    documentation is :func:`queuepipe.api.from_generator`.
    """
    from .api import from_generator as impl
    return impl(*args, **kwargs)


def from_hdf5(*args: Any, **kwargs: Any) -> Pipeline:
    """Batch tensors of selected rows of HDF5 datasets, read by background workers.

    ``from_hdf5(files, datasets, *, rows=None, batch_size, workers=1, shuffle=False, seed=None,
    num_epochs=1, map_fn=None, shard=None, with_row_ids=False, ...)``; the full documentation
    is :func:`queuepipe.hdf5_api.from_hdf5`.
    """
    from .hdf5_api import from_hdf5 as impl
    return impl(*args, **kwargs)


def running(*args: Any, **kwargs: Any):
    """``with queuepipe.running(sess) as coord:`` -- start every queue runner of the session's
    graph; on exit stop, cancel, join, and re-raise a worker failure.  See :func:`queuepipe.session.running`.
    """
    from .tf.session import running as impl
    return impl(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Pipeline":
        from .tf.pipeline import Pipeline
        return Pipeline
    raise AttributeError(f"module 'queuepipe' has no attribute {name!r}")
