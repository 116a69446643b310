"""The one builder behind both front doors: a source, its spec and the options -> a Pipeline.

It plans the workers (:class:`~queuepipe.workers.worker.WorkerPlan`), picks their
backend (threads, or child processes), makes the pipeline's runtime and adds the
graph part (queue, enqueue ops, runner, gated dequeue).  TensorFlow is imported here,
so ``import queuepipe`` (which does not import this module) stays TF-free.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .errors import GraphModeError
from .options import PipelineOptions, Sizes
from .sources import Source
from .spec import Field, Spec
from .tf.pipeline import Pipeline, build_pipeline
from .workers.resume import StreamLedger
from .workers.runtime import BackendFactory, PipelineRuntime
from .workers.worker import ThreadBackend, WorkerPlan


def check_graph_mode() -> None:
    """Refuse to build in eager mode, before any worker or file is touched."""
    import tensorflow as tf
    if tf.executing_eagerly():
        raise GraphModeError(
            "queuepipe builds tf.compat.v1 graph ops (queues, queue runners) and TensorFlow is in eager "
            "mode here: build the pipeline inside `with tf.Graph().as_default():`, or call "
            "tf.compat.v1.disable_eager_execution() at program start")


def build(source: Source, output_types: Any, options: PipelineOptions, sizes: Sizes) -> Pipeline:
    """A pipeline whose workers run ``source``, its batches shaped by ``source.spec``.

    Resumable (``options.resumable``: the source has a ``ledger``), the data path's spec gets
    one more field, the rows' position labels (:mod:`queuepipe.workers.resume`), which the
    graph adds to the consumer's position and never shows the user."""
    check_graph_mode()
    user_spec: Spec = source.spec
    spec, position = user_spec, None
    ledger = getattr(source, "ledger", None) if options.resumable else None
    if ledger is not None:
        spec = user_spec.with_field(Field(name="position", dtype=np.dtype(np.int64), shape=(ledger.width,)))
        position = (ledger, sizes.seed, source_fingerprint(source, options))
    plan = WorkerPlan(source=source, spec=spec, count=options.workers, batch_size=options.batch_size,
                      batches_per_block=sizes.batches_per_block, shuffle_rows=sizes.shuffle_rows,
                      seed=sizes.seed, overlap_epochs=options.overlap_epochs,
                      stall_timeout=options.stall_timeout)
    capacity_batches = options.capacity_batches(sizes.batches_per_block)
    make_backend: BackendFactory
    if options.mode == "thread":
        def make_backend(index, stop, resume=None):
            return ThreadBackend(plan, index, stop, resume)
    else:
        from .workers.process.parent import ProcessWorkers
        pool = ProcessWorkers(plan, start_method=options.start_method,
                              n_slots=ProcessWorkers.slots_for_capacity(capacity_batches,
                                                                        sizes.batches_per_block))
        make_backend = pool.backend
    runtime = PipelineRuntime(spec, options.workers, options.batch_size, options.allow_smaller_final_batch,
                              make_backend, options.mode, batches_per_block=sizes.batches_per_block,
                              stall_timeout=options.stall_timeout,
                              merged_last=isinstance(ledger, StreamLedger))
    return build_pipeline(runtime, user_spec, output_types, batch_size=options.batch_size,
                          capacity_batches=capacity_batches, batches_per_block=sizes.batches_per_block,
                          allow_smaller_final_batch=options.allow_smaller_final_batch, name=options.name,
                          position=position)


def source_fingerprint(source: Source, options: PipelineOptions) -> int:
    """What a resumable pipeline's saved position is only valid for, as a 63-bit number: the
    selection of rows (HDF5: its runs and the files' row counts), or the number of generator
    workers (each resumes its own stream)."""
    digest = hashlib.blake2b(digest_size=8)
    selection = getattr(source, "selection", None)
    if selection is not None:
        digest.update(b"selection")
        digest.update(np.ascontiguousarray(selection.starts, np.int64).tobytes())
        digest.update(np.ascontiguousarray(selection.stops, np.int64).tobytes())
        digest.update(np.array([f.n_rows for f in source.layout.files], np.int64).tobytes())
    else:
        digest.update(b"generator workers %d" % options.workers)
    return int.from_bytes(digest.digest(), "little") >> 1
