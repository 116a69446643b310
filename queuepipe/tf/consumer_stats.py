"""What the consumer of a pipeline saw: seconds it waited for input, samples it was handed.

Every dequeue of a batch (plain or staged) adds two numbers to a small variable kept next
to the pipeline's queue: the time between the start of the step's dequeue and the batch's
arrival (two ``tf.timestamp`` ops around the wait), and the batch's number of samples.
It runs in the graph, beside the error gate (never in Python, never a ``py_func``), so it
costs a few native ops per step and no extra ``sess.run``.  The summaries and
:class:`queuepipe.InputWaitHook` read the variable every N steps and turn differences into
"fraction of time waited for input" and "samples per second".

The variable is a *local* variable (``GraphKeys.LOCAL_VARIABLES``): ``Saver``s never see it
(a checkpoint stays the model's), and ``local_variables_initializer`` -- which monitored
sessions and ``Supervisor`` run, and which TF1 programs with ``num_epochs`` already call --
initializes it.  Besides, each run of the pipeline's queue runner zeroes it before the first
batch (:attr:`ConsumerStats.reset_op`), so a plain session needs no initializer of the user's.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

tf1 = tf.compat.v1

WAIT_SECONDS = 0      # index of the consumer's input wait (seconds) in the variable
SAMPLES = 1           # index of the samples handed to the consumer


class ConsumerStats:
    """A float64 vector ``[input wait seconds, samples delivered]`` placed with ``queue``."""

    def __init__(self, queue_ref):
        with tf1.colocate_with(queue_ref), tf1.name_scope("consumer_stats"):
            self.variable = tf1.Variable(tf.zeros([2], tf.float64), trainable=False,
                                         collections=[tf1.GraphKeys.LOCAL_VARIABLES],
                                         use_resource=True, name="wait_and_samples")
            self.reset_op = self.variable.initializer
            self.value = self.variable.read_value()

    def record(self, started: tf.Tensor, arrived: Sequence[tf.Tensor], rows: tf.Tensor) -> tf.Operation:
        """The op that adds one dequeue: ``started`` is a timestamp taken when the step began,
        ``arrived`` the dequeued tensors (the wait ends when they are there), ``rows`` their
        number of samples."""
        with tf.control_dependencies(list(arrived)):
            ended = tf.timestamp(name="arrived")
        delta = tf.stack([ended - started, tf.cast(rows, tf.float64)])
        return self.variable.assign_add(delta, read_value=False)


def step_started() -> tf.Tensor:
    """A timestamp with no inputs: TF runs it as soon as a step that needs it starts."""
    return tf.timestamp(name="step_started")
