"""The consumer's input position, in graph variables that checkpoints save with the model.

A resumable pipeline (``from_hdf5(..., resumable=True)``, ``from_generator(...,
resumable=True)``) keeps two small *global* variables beside its queue:

- ``<name>/position/used``: the ledger (:mod:`queuepipe.workers.resume`): which rows the
  consumer was handed.  Every dequeue adds its batch's position labels to it with one
  ``scatter_add`` (HDF5) or ``scatter_max`` (generators), in the graph, before the batch
  tensors are ready -- so any step that uses a batch records it, and a step that was never
  run records nothing.  The producer never touches it: batches read ahead in the queue are
  not counted, and after a restore they are delivered again, as the model's updates for them
  were lost too.
- ``<name>/position/config``: ``[version, seed, fingerprint]``: the seed the interrupted run
  shuffled with (a restored run uses it, whatever seed this process drew) and what the
  ledger was made for (the selection, or the number of generator workers).

Being global variables, ``tf.compat.v1.train.Saver()`` and ``MonitoredTrainingSession``'s
checkpoints save and restore them with no extra code; a Saver given an explicit
``var_list`` must include ``pipe.position_variables``.  When the pipeline's queue runner
starts, it reads both (:meth:`InputPosition.resume_point`) and the workers begin where
the checkpoint's consumer stopped.
"""
from __future__ import annotations

from typing import List, Union

import numpy as np
import tensorflow as tf

from ..errors import ResumeError
from ..workers.resume import LEDGER_VERSION, ResumePoint, SelectionLedger, StreamLedger

tf1 = tf.compat.v1

Ledger = Union[SelectionLedger, StreamLedger]


class InputPosition:
    """The graph side of one resumable pipeline's position (see module doc)."""

    def __init__(self, ledger: Ledger, seed: int, fingerprint: int, queue_ref, pipeline_name: str):
        self.ledger = ledger
        self.pipeline_name = pipeline_name
        self.fingerprint = int(fingerprint)
        with tf1.colocate_with(queue_ref), tf1.name_scope("position"):
            self.used = tf1.Variable(tf.zeros([ledger.length], tf.int64), trainable=False, name="used",
                                     collections=[tf1.GraphKeys.GLOBAL_VARIABLES], use_resource=True)
            self.config = tf1.Variable(np.array([LEDGER_VERSION, int(seed), self.fingerprint], np.int64),
                                       trainable=False, name="config",
                                       collections=[tf1.GraphKeys.GLOBAL_VARIABLES], use_resource=True)
            self.read_op = [self.used.read_value(), self.config.read_value()]

    @property
    def variables(self) -> List[tf1.Variable]:
        return [self.used, self.config]

    def record(self, labels: tf.Tensor) -> tf.Operation:
        """The op that adds one dequeued batch's ``labels`` (``[rows, width]`` int64) to the ledger."""
        with tf1.colocate_with(self.used.handle):
            if isinstance(self.ledger, SelectionLedger):
                return tf.raw_ops.ResourceScatterAdd(resource=self.used.handle, indices=labels[:, 0:2],
                                                     updates=labels[:, 2:4], name="record_position")
            return tf.raw_ops.ResourceScatterMax(resource=self.used.handle, indices=labels[:, 0],
                                                 updates=labels[:, 1], name="record_position")

    def resume_point(self, sess) -> ResumePoint:
        """Where this session's run starts: read the variables and decode them.  Raises
        :class:`~queuepipe.errors.ResumeError` naming the pipeline when they are not
        initialised or were saved for other data."""
        where = f"pipeline {self.pipeline_name!r} (resumable=True)"
        try:
            used, config = sess.run(self.read_op)
        except tf.errors.FailedPreconditionError:
            raise ResumeError(
                f"{where}: its input position variables are not initialised when its queue runner starts: "
                f"run tf.compat.v1.global_variables_initializer() or restore a checkpoint first (a "
                f"MonitoredTrainingSession does both)") from None
        version, seed, fingerprint = (int(v) for v in config)
        if version != LEDGER_VERSION:
            raise ResumeError(f"{where}: the checkpoint's input position has format {version}; this queuepipe "
                              f"reads format {LEDGER_VERSION}")
        if fingerprint != self.fingerprint:
            raise ResumeError(f"{where}: the checkpoint's input position was saved for different input "
                              f"({self._fingerprint_meaning()}); restoring it here would deliver the wrong rows")
        try:
            return self.ledger.resume_point(used, seed, where)
        except ValueError as exc:
            raise ResumeError(str(exc)) from None

    def _fingerprint_meaning(self) -> str:
        if isinstance(self.ledger, SelectionLedger):
            return f"another selection of rows: this one has {self.ledger.size} rows over the same files, shards and rows="
        return f"another number of generator workers: this pipeline has {self.ledger.workers}"
