"""The public entry points that build pipelines."""
from __future__ import annotations

import math
import random
from typing import Any, Optional

from .sources.generator import GeneratorSource
from .workers.worker import ThreadBackend, WorkerPlan
from .workers.runtime import PipelineRuntime
from .spec import Spec
from .tf.pipeline import Pipeline, build_pipeline, tf_dtypes_of

MODES = ("thread", "process")
BLOCK_TARGET_BYTES = 8 << 20


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def default_batches_per_block(spec: Spec, batch_size: int) -> int:
    """Batches per py_func call: about 8 MiB per call (fewer calls, less overhead), 1..32.

    8 rather than 4 MiB: shuffled partial HDF5 reads (W3) ran ~20 % faster with process workers
    and ~25 % with threads; in-order and compressed reads (W1, W5) did not change."""
    if spec.any_padded:
        return 1
    row = spec.row_nbytes()
    if not row:
        return 8
    return int(max(1, min(32, BLOCK_TARGET_BYTES // max(1, row * batch_size))))


def default_shuffle_rows(batch_size: int, batches_per_block: int) -> int:
    """Shuffle buffer rows when the user names none: 16 batches, and at least two blocks, so
    every draw mixes rows of two or more blocks (a source's read units)."""
    return max(16, 2 * batches_per_block) * batch_size


def make_pipeline(source: Any, spec: Spec, output_types: Any, *, batch_size: int, workers: int,
                  mode: str, shuffle: bool, min_after_dequeue: Optional[int], seed: Optional[int],
                  capacity: Optional[int], allow_smaller_final_batch: bool,
                  batches_per_block: Optional[int], name: Optional[str],
                  start_method: Optional[str] = None) -> Pipeline:
    """Shared tail of from_generator / from_hdf5: plan the workers, build the graph part."""
    import tensorflow as tf
    if tf.executing_eagerly():  # before any worker exists
        raise RuntimeError(
            "queuepipe builds tf.compat.v1 graph ops (queues, queue runners) and TensorFlow is in eager "
            "mode here: build the pipeline inside `with tf.Graph().as_default():`, or call "
            "tf.compat.v1.disable_eager_execution() at program start")
    batch_size = _positive_int("batch_size", batch_size)
    workers = _positive_int("workers", workers)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    per_block = (_positive_int("batches_per_block", batches_per_block) if batches_per_block is not None
                 else default_batches_per_block(spec, batch_size))
    if spec.any_padded:
        per_block = 1
    shuffle_rows = 0
    if shuffle:
        shuffle_rows = (default_shuffle_rows(batch_size, per_block) if min_after_dequeue is None
                        else max(0, int(min_after_dequeue)))
        shuffle_rows = max(shuffle_rows, 1)
    if seed is None:
        seed = random.SystemRandom().getrandbits(63)
    plan = WorkerPlan(source=source, spec=spec, count=workers, batch_size=batch_size,
                      max_batches=per_block, shuffle_rows=shuffle_rows, seed=int(seed))
    if capacity is None:
        capacity_batches = max(8, 2 * workers * per_block)
    else:
        capacity_batches = max(1, math.ceil(_positive_int("capacity", capacity) / batch_size))
    if mode == "thread":
        def make_backend(i: int):
            return ThreadBackend(plan, i)
    else:
        from .workers.process.parent import ProcessWorkers
        pool = ProcessWorkers(plan, start_method=start_method,
                              n_slots=ProcessWorkers.slots_for_capacity(capacity_batches, per_block))
        make_backend = pool.backend
    runtime = PipelineRuntime(spec, workers, batch_size, allow_smaller_final_batch, make_backend, mode,
                              batches_per_block=per_block)
    return build_pipeline(runtime, spec, output_types, batch_size=batch_size,
                          capacity_batches=capacity_batches, batches_per_block=per_block,
                          allow_smaller_final_batch=allow_smaller_final_batch, name=name)


def from_generator(generator: Any, output_types: Any, output_shapes: Any = None, *, batch_size: int,
                   workers: int = 1, mode: str = "thread", yields: str = "samples",
                   shuffle: bool = False, min_after_dequeue: Optional[int] = None,
                   seed: Optional[int] = None, num_epochs: Optional[int] = 1,
                   capacity: Optional[int] = None, allow_smaller_final_batch: bool = False,
                   dynamic_pad: bool = False, batches_per_block: Optional[int] = None,
                   name: Optional[str] = None, start_method: Optional[str] = None) -> Pipeline:
    """Batch tensors fed from a Python generator by ``workers`` background workers.

    generator: a callable returning an iterator -- called once per worker (and per
        epoch), so ``my_obj.generate_data`` works unchanged and every worker runs its
        own instance; use ``queuepipe.worker_info()`` inside it to shard or seed.  Or an
        iterator object, shared by all workers behind a lock (only conversion and
        enqueueing then overlap with training; ``num_epochs`` must be 1).
    output_types: a dtype, a tuple of dtypes or a dict of dtypes (TF or numpy); ``.batch``
        has the same structure.  ``tf.string`` fields take str/bytes.
    output_shapes: the per-sample shapes in the same structure (None dims allowed); static
        batch shapes follow from them.  Unknown dims take the first sample's shape unless
        ``dynamic_pad=True``, which pads each batch to its longest sample.
    yields: "samples" (each item one sample) or "blocks" (each item a structure of arrays
        with a leading row dimension -- many rows per Python step, the fast path).
    shuffle / min_after_dequeue / seed: shuffle rows within each worker through a buffer
        of at least ``min_after_dequeue`` rows (default: 16 batches or two blocks, whichever is
        more), seeded per worker.
    num_epochs: times each worker's generator is called and run to exhaustion (None:
        forever).  After the last one, the remaining rows are delivered (a final smaller
        batch with ``allow_smaller_final_batch``), then ``sess.run`` raises OutOfRangeError.
    capacity: samples buffered in the queue (rounded up to whole batches).
    mode: "thread" or "process" (a child process per worker; see README for when).
    """
    if yields not in ("samples", "blocks"):
        raise ValueError(f"yields must be 'samples' or 'blocks', got {yields!r}")
    if num_epochs is not None and (isinstance(num_epochs, bool) or not isinstance(num_epochs, int)
                                   or num_epochs < 1):
        raise ValueError(f"num_epochs must be a positive int or None, got {num_epochs!r}")
    _, np_types = tf_dtypes_of(output_types)
    spec = Spec.build(np_types, output_shapes, dynamic_pad=dynamic_pad)
    source = GeneratorSource(generator, spec, yields=yields, num_epochs=num_epochs,
                             chunk_rows=batch_size if isinstance(batch_size, int) and batch_size > 0 else 1)
    if source.shared is not None:
        if num_epochs != 1:
            raise ValueError("an iterator object can only be run once (num_epochs=1); pass a callable "
                             "that returns a new iterator (e.g. obj.generate_data) to repeat epochs")
        if mode == "process":
            raise ValueError("mode='process' needs a callable that returns an iterator (each child "
                             "process runs its own); an iterator object cannot be shared across processes")
    return make_pipeline(source, spec, output_types, batch_size=batch_size, workers=workers, mode=mode,
                         shuffle=shuffle, min_after_dequeue=min_after_dequeue, seed=seed,
                         capacity=capacity, allow_smaller_final_batch=allow_smaller_final_batch,
                         batches_per_block=batches_per_block, name=name, start_method=start_method)
