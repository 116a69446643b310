"""Shims for migrating TF1-era input code onto queuepipe, one module per library replaced.

- :mod:`queuepipe.compat.keras`: Keras 3 ``PyDataset`` adapters (``PipelineDataset``,
  ``hdf5_dataset``) for ``model.fit/evaluate/predict``, replacing Keras 2's ``HDF5Matrix``
  and ``fit_generator`` / ``GeneratorEnqueuer``.
- :mod:`queuepipe.compat.tftables`: a tftables-compatible facade (``open_file``,
  ``load_dataset``, ``FIFOQueueLoader``...), so a tftables program runs with one import
  changed.
- :mod:`queuepipe.compat.slim`: slim's ``prefetch_queue`` over a pipeline (a fresh gated
  batch per tower, ``pipe.dequeue()``), keeping queuepipe's end-of-data and error delivery.
- :mod:`queuepipe.compat.feeding`: ``from_feeds``: a placeholder + enqueue-thread reader
  (WaveNet's ``AudioReader``) as a pipeline, from the generator that fed the placeholders.

Importing this package imports nothing else: each submodule imports its own dependencies
(Keras, TensorFlow) when it is imported itself.  The top-level ``compat/`` folder of the
repository holds migration notes and before/after programs.
"""
