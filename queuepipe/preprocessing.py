"""``per_sample``: a TF1 program's per-example preprocessing, applied to a dequeued batch.

In TF1 such code sat between the reader and ``shuffle_batch``: ``fn(image)`` built ops
for *one* example (``tf.image.random_crop``, ``random_flip_left_right``,
``per_image_standardization``) and the batching queue ran it once per example.  With
queuepipe the batch arrives already batched, so ``per_sample(fn, pipe.batch)`` runs the
same ``fn`` on every example of it (``tf.map_fn``), drawing its random numbers per
example as before.

Trade-off (see also :mod:`queuepipe.records`): this runs inside the training step, on
TensorFlow's threads -- no Python per example, and on the GPU when the batch is
``pipe.staged()``, but it lengthens every step.  ``map_fn`` in the workers (numpy, beside
training, on as many cores as workers) takes that work off the step, at the cost of
rewriting ``fn`` in numpy.  Ops that take a whole batch (most of ``tf.image``) are
faster still, when ``fn`` allows it.
"""
from __future__ import annotations

from typing import Any, Callable, Optional


def per_sample(fn: Callable[[Any], Any], batch: Any, *, output_signature: Any = None,
               parallel_iterations: Optional[int] = None, name: Optional[str] = None) -> Any:
    """``fn`` applied to every example of ``batch``, in the graph: the batched results.

    batch: a tensor, or a tuple/dict of tensors with the same leading (batch) dim --
        ``pipe.batch`` or ``pipe.staged()``.  ``fn`` receives one example in the same
        structure (each tensor without its leading dim) and returns a tensor or a
        tuple/dict of tensors: the structure of the result, each with a leading batch dim.
    output_signature: what ``fn`` returns (a ``tf.TensorSpec`` structure, as
        ``tf.map_fn``'s ``fn_output_signature``).  By default it is found by building
        ``fn`` once on placeholders in a scratch graph -- which fails if ``fn`` uses
        tensors or variables of your graph: then pass it.
    parallel_iterations: examples processed concurrently (``tf.map_fn``'s default: 10).

    Static shapes are kept: a batch of known size gives results of known size.
    """
    import tensorflow as tf

    if not callable(fn):
        from .errors import ArgumentTypeError
        raise ArgumentTypeError(f"per_sample: fn must be callable, got {type(fn).__name__}")
    if output_signature is None:
        output_signature = _traced_signature(fn, batch)
    kwargs = {} if parallel_iterations is None else {"parallel_iterations": parallel_iterations}
    with tf.name_scope(name or "per_sample"):
        return tf.map_fn(fn, batch, fn_output_signature=output_signature, **kwargs)


def _traced_signature(fn: Callable[[Any], Any], batch: Any) -> Any:
    """``fn``'s output structure of ``tf.TensorSpec`` s, from one call on per-example placeholders
    in a graph of its own (nothing is added to the caller's graph)."""
    import tensorflow as tf
    tf1 = tf.compat.v1

    flat = tf.nest.flatten(batch)
    if not flat:
        from .errors import ArgumentError
        raise ArgumentError("per_sample: batch holds no tensor")
    with tf.Graph().as_default():
        example = tf.nest.pack_sequence_as(
            batch, [tf1.placeholder(t.dtype, tf.TensorShape(t.shape)[1:]) for t in flat])
        try:
            result = fn(example)
        except Exception as exc:
            from .errors import ArgumentError
            raise ArgumentError(
                f"per_sample: could not find what fn returns by building it on one example in a scratch "
                f"graph ({type(exc).__name__}: {exc}); pass output_signature=tf.TensorSpec(shape, dtype) "
                f"(or a tuple/dict of them) describing one example's result") from exc
        return tf.nest.map_structure(
            lambda t: tf.TensorSpec(tf.convert_to_tensor(t).shape, tf.convert_to_tensor(t).dtype), result)
