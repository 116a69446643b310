"""Staging: batches copied onto the device ahead of the step that uses them.

Without staging the step that dequeues batch N also copies it to the GPU, so the copy sits
on the critical path of every step.  :meth:`queuepipe.Pipeline.staged` moves batches from
the pipeline's host queue into a ``StagingArea`` on the device from a thread of the
pipeline's queue runner (the *stager*), so the copy of batch N+1 overlaps step N.

Why a stager thread and three small structures, rather than TF's usual "put and get in the
same step": a put in the step needs the put op fetched by every ``sess.run`` (a hook in a
monitored session, extra fetches in a plain one), and its end of data fails the step that
also took the last staged batch.  And a StagingArea cannot be closed: an ``Unstage`` on an
empty area blocks its thread for good, uncancellable, so a consumer must never ask unless
an element is there.  Hence:

- **area** (on the device): the staged batches, unbounded itself (a bounded ``Stage``
  blocks an inter-op thread while full);
- **tokens** (host ``FIFOQueue`` of ``depth``): a free place on the device.  The stager
  takes one before it takes a batch from the host queue; the consumer gives it back when it
  takes its batch.  So at most ``depth`` batches are on the device beyond the one in use;
- **tickets** (host ``FIFOQueue``): one per element the stager moved, written *after* its
  ``Stage`` ended, carrying the element's error string ("" for data) and its number of
  samples.  The consumer dequeues a ticket first (an asynchronous, cancellable wait that
  holds no thread), passes it through the same error gate as an unstaged batch, and only
  then ``Unstage``s: the element is certainly there.  A poison element (a worker failure)
  becomes a ticket only, so the failure reaches ``sess.run`` with its original type.

End of data: the host queue closes, the stager's dequeue ends, the stager closes the
tickets (no cancel): the consumer gets every staged batch, then ``OutOfRangeError``.
Stopping: the runner's watcher closes the tokens (the stager's wait for a free place ends),
then the queue, then -- once the stager has ended -- the tickets, so neither the stager nor
a consumer waits on them any more; if that takes over 2 s it cancels all three (as Ctrl-C
does).  Staged batches left on the device at a stop are freed with the session.
"""
from __future__ import annotations

import itertools
import uuid
from typing import Any, List, Optional

import tensorflow as tf

from ..errors import ArgumentError
from .compat import quiet_deprecations
from .consumer_stats import step_started

tf1 = tf.compat.v1

_areas = itertools.count()


def _device_type(device: Optional[str]) -> Optional[str]:
    if not device:
        return None
    return tf.DeviceSpec.from_string(device).device_type


class Staging:
    """The graph side of one pipeline's staging: the stager's ``move_op``, the consumer's
    ``outputs``, and the ops the queue runner uses to start and stop it."""

    def __init__(self, pipeline, device: str, depth: int):
        from .pipeline import batch_outputs, close_if_open, error_gate  # pipeline imports this module lazily
        self.device = device
        self.depth = depth
        queue = pipeline.queue
        n_fields = len(pipeline.spec.fields)
        dtypes = list(queue.dtypes[:n_fields])  # the user's fields (not a resumable pipeline's labels)
        position = pipeline.position
        if (_device_type(device) or "").upper() == "GPU":
            strings = [f.name for f, d in zip(pipeline.spec.fields, dtypes) if d == tf.string]
            if strings:
                raise ArgumentError(
                    f"staged(device={device!r}): field(s) {strings} are tf.string, which cannot live in GPU "
                    f"memory; stage on a CPU device or leave the strings out of the pipeline")
        shared_name = f"queuepipe_staging_{next(_areas)}_{uuid.uuid4().hex[:8]}"
        area_args = dict(capacity=0, memory_limit=0, container="", shared_name=shared_name)
        with quiet_deprecations(), tf1.name_scope(f"{pipeline.name}/staging"):
            with tf1.colocate_with(queue.queue_ref):
                tokens = tf1.FIFOQueue(depth, [tf.int32], shapes=[[]], name="tokens")
                if position is None:
                    tickets = tf1.FIFOQueue(depth + 1, [tf.string, tf.int32], shapes=[[], []], name="tickets")
                else:  # the position labels stay on the host, with the ticket
                    tickets = tf1.FIFOQueue(depth + 1, [tf.string, tf.int32, tf.int64], name="tickets")
                self.fill_op = tokens.enqueue_many([tf.zeros([depth], tf.int32)], name="fill")
                self.close_op = close_if_open(tickets, "close")
                self.close_tokens_op = close_if_open(tokens, "close_tokens")
                self.cancel_op = tf.group(tokens.close(cancel_pending_enqueues=True),
                                          tickets.close(cancel_pending_enqueues=True), name="cancel")

            # The stager: a free place, a batch from the queue, onto the device, a ticket.  One
            # ``sess.run`` of it per batch, from the stager thread.  (A ``while_loop`` running
            # it in the graph for the whole run needs no Python per batch, but measured slower on
            # W4 with thread workers: ~10 loop-control ops per batch competing for TF's inter-op
            # threads, BENCHMARKS.md "Staging".)
            made = {}
            with tf1.name_scope("stager"):
                token = tokens.dequeue(name="free_place")
                with tf.control_dependencies([token]):
                    items = queue.dequeue(name="batch")
                data, error = list(items[:n_fields]), items[-1]
                labels = [items[n_fields]] if position is not None else []

                def put():
                    with tf.device(device):
                        made["stage"] = tf.raw_ops.Stage(values=data, name="put", **area_args)
                    with tf.control_dependencies([made["stage"]]):
                        return tf.constant(True)

                def give_back():  # a poison element: nothing staged, the place stays free
                    with tf.control_dependencies([tokens.enqueue(token, name="give_back")]):
                        return tf.constant(False)

                done = tf.cond(tf.equal(error, ""), put, give_back, name="staged")
                with tf.control_dependencies([done]):
                    self.move_op = tickets.enqueue([error, tf.shape(data[0], out_type=tf.int32)[0]] + labels,
                                                   name="ticket")

            # The consumer: a ticket, the error gate, give the place back, take the batch.
            with tf1.name_scope("dequeue"):
                started = step_started()
                ticket = tickets.dequeue(name="ticket")
                error, rows = ticket[0], ticket[1]
                gate = error_gate(error, pipeline.runtime)
                with tf.control_dependencies([gate]):
                    given_back = tokens.enqueue(tf.constant(0), name="give_back")
                with tf.control_dependencies([given_back]), tf.device(device):
                    values = tf.raw_ops.Unstage(dtypes=dtypes, name="get", **area_args)
                recorded = [pipeline.stats.record(started, [error, rows], rows)]
                if position is not None:  # after the gate: a poison element is no row of data
                    with tf.control_dependencies([gate]):
                        recorded.append(position.record(ticket[2]))
                with tf.device(device):
                    outputs = batch_outputs(values, recorded, pipeline.spec, pipeline.batch_size,
                                            pipeline.allow_smaller_final_batch)
        self.stage_op = made["stage"]
        self.unstage_op = values[0].op if values else None
        self.batch: Any = pipeline.spec.pack(outputs)

    def ops(self) -> List[tf.Operation]:
        """The ops that live in the device's memory (each carries the requested device)."""
        return [op for op in (self.stage_op, self.unstage_op) if op is not None]
