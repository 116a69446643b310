"""TF-Slim's input helpers that multi-tower programs used, over queuepipe batches.

- :mod:`queuepipe.compat.slim.prefetch_queue`: ``prefetch_queue(tensors, capacity=8,
  num_threads=1, dynamic_pad=False, shared_name=None, name=None)``, slim's
  ``tf.contrib.slim.prefetch_queue.prefetch_queue`` (``tf.contrib`` is gone in TensorFlow 2.x):
  ``batch_queue.dequeue()`` once per tower, each a fresh gated batch of the pipeline.

So ``slim.prefetch_queue.prefetch_queue(...)`` keeps working with ``from queuepipe.compat import
slim`` -- for that one name; the rest of slim is not provided.  Importing this package imports
TensorFlow (through its submodule).
"""
from . import prefetch_queue

__all__ = ["prefetch_queue"]
