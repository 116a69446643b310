"""Reading selected rows of HDF5 datasets for queuepipe workers (TensorFlow-free).

Modules, each with one job:

* :mod:`.inspect` -- build-time checks of files/datasets/filters, dtype mapping, the batch layout;
* :mod:`.selection` -- the ``rows=`` argument as ordered runs of global row ids; sharding;
* :mod:`.planning` -- blocks, their per-epoch order, and the slab reads of one block;
* :mod:`.reader` -- a worker's own file handles and the reads themselves;
* :mod:`.source` -- the picklable source the core drives in every worker;
* :mod:`.errors` -- the errors raised.

The public entry point is :func:`queuepipe.from_hdf5` (``queuepipe.hdf5_api``).
Nothing here imports TensorFlow: worker processes import this package.
"""
from ...errors import (HDF5FileNotFoundError, HDF5FilterError, HDF5InputError, HDF5ReadError, HDF5SelectionError, HDF5TypeError)

__all__ = ["HDF5FileNotFoundError", "HDF5FilterError", "HDF5InputError", "HDF5ReadError",
           "HDF5SelectionError", "HDF5TypeError"]
