"""The HDF5 source: selected rows of HDF5 datasets, read inside each worker (TensorFlow-free).

Modules, each with one job:

* :mod:`.inspect` -- build-time checks of files/datasets/filters, dtype mapping, the batch
  layout, and which readers apply to each dataset;
* :mod:`.selection` -- the ``rows=`` argument as ordered runs of global row ids; sharding;
* :mod:`.planning` -- blocks, their per-epoch order, and the slab reads of one block;
* :mod:`.reader` -- a worker's own file handles, the ``RowReader`` protocol and the reads;
  the readers: :mod:`.raw_rows` (plain rows with ``preadv``), :mod:`.chunk_decode` (+
  :mod:`.chunk_table`: deflate/shuffle chunks decoded by queuepipe), :mod:`.h5py_rows`;
* :mod:`.source` -- the picklable source every worker runs, and its sizes (``plan_source``).

The public entry point is :func:`queuepipe.from_hdf5`; its errors are in :mod:`queuepipe.errors`.
Nothing here imports TensorFlow: worker processes import this package.
"""
