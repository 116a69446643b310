"""Workers in child processes: scale GIL-bound generators, preprocessing and decompression.

Each worker runs its WorkerLoop in a fresh interpreter (``python -m
queuepipe.workers.process.child``, never a fork of a TF process) and ships finished blocks
through fixed shared-memory slots.  The parent lends a slot's bytes to TensorFlow as
they are (64-byte-aligned views that TF adopts without a copy) and gives the slot
back to the child once the last tensor made from it is gone.  Only small metadata
is pickled.  A child that raises, or dies (signal, OOM killer, crash in C code), is
reported as a worker failure naming the worker and the signal within a poll period.
"""
from __future__ import annotations

import atexit
import logging
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Optional

from ...errors import (ArgumentError, ArgumentTypeError, EndOfStream, FailureSignal, RemoteTraceback,
                       WorkerDiedError, WorkerFailure, WorkerStalledError, worker_label)
from ..buffers import Block
from ..resume import ResumePoint
from ..worker import WorkerPlan
from .protocol import BlockInline, BlockInSlot, Doing, End, Failed, Free, Setup
from .slots import CHILD_RESERVE, SlotArena, create_memfd

log = logging.getLogger("queuepipe")

POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 2.0
DEFAULT_SLOTS = 4
MIN_SLOT_BYTES = 1 << 20

_live: "weakref.WeakSet[ProcessBackend]" = weakref.WeakSet()


def _main_module_info() -> dict:
    """How a child can import the parent's ``__main__`` (as multiprocessing's spawn does)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None) and spec.name != "__main__":
        return {"module": spec.name}
    path = getattr(main, "__file__", None)
    if path and os.path.exists(path):
        return {"path": os.path.abspath(path)}
    return {}


class ProcessWorkers:
    """Factory of process backends for one pipeline; checks picklability at build time."""

    def __init__(self, plan: WorkerPlan, start_method: Optional[str] = None, n_slots: int = DEFAULT_SLOTS):
        """``n_slots`` per worker bounds its shared memory; blocks lent to TensorFlow hold their
        slot while their batches wait in the queue, so it must exceed the queue's capacity in
        blocks (see :func:`slots_for_capacity`) or the child waits on the consumer."""
        if start_method not in (None, "spawn"):
            raise ArgumentError("queuepipe starts worker processes as fresh interpreters ('spawn'); "
                             f"start_method={start_method!r} is not supported (fork is unsafe once "
                             "TensorFlow or HDF5 threads exist)")
        self.plan = plan
        self.n_slots = n_slots
        try:
            self.plan_bytes = pickle.dumps(plan)
        except Exception as exc:
            raise ArgumentTypeError(
                "mode='process' sends the generator to each worker process, so it must be picklable, "
                f"but pickling failed: {exc}. Use a top-level function, functools.partial(top_level_fn, "
                "...), a bound method of a picklable object (e.g. obj.generate_data), or a class with "
                "__call__ -- not a lambda or a function defined inside another function.") from None
        self.needs_main = b"__main__" in self.plan_bytes
        self.main_info = _main_module_info() if self.needs_main else {}
        if self.needs_main and not self.main_info:
            raise ArgumentTypeError("mode='process': the generator is defined in __main__ of an interactive "
                            "session, which worker processes cannot import; move it into a module")
        row = plan.spec.row_nbytes()
        block_bytes = (row or 0) * plan.batch_size * plan.batches_per_block
        self.slot_bytes = max(MIN_SLOT_BYTES, block_bytes + 64 * (len(plan.spec.fields) + 1))

    @staticmethod
    def slots_for_capacity(capacity_batches: int, batches_per_block: int) -> int:
        """Slots per worker: enough that a steady pipeline never runs out of slots to lend.

        Lent at once: the queue's capacity in blocks, one block being consumed, one whose
        last tensors await TF's delayed release, one waiting to enqueue; then one the child
        is writing, one it may still view, and the reserve the parent never lends."""
        return max(DEFAULT_SLOTS, -(-capacity_batches // batches_per_block) + 5 + CHILD_RESERVE)

    def backend(self, index: int, stop: threading.Event, resume: Optional[ResumePoint] = None) -> "ProcessBackend":
        """The backend factory of the runtime: worker ``index`` of a run whose stop event is ``stop``
        (``resume``: where a resumable pipeline's run starts)."""
        return ProcessBackend(self, index, stop, resume)


class ProcessBackend:
    """The parent's end of one worker process."""

    def __init__(self, workers: ProcessWorkers, index: int, stop: threading.Event,
                 resume: Optional[ResumePoint] = None):
        self.index = index
        self.count = workers.plan.count
        self._stall_timeout = workers.plan.stall_timeout
        self._activity = "starting"
        self._slot_bytes = workers.slot_bytes
        self._stop = stop      # the run's stop event: a waiting next_block checks it every poll
        self._closed = False   # close() has run (guarded by _lock; _free checks it under _send_lock)
        self._ended = False    # the child sent its last message (End / Failed) or died
        self._inline_warned = False
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        # Slots lent to TF come back when their last tensor is gone -- which may be never
        # while the user keeps fetched batches (fetches share the tensors' memory).  So at
        # most n_slots - 1 - CHILD_RESERVE are lent; beyond that a block is copied and its
        # slot freed at once, and the child can always get a slot back.
        self._released: "queue.SimpleQueue" = queue.SimpleQueue()
        shm_fd = create_memfd(workers.n_slots * workers.slot_bytes, f"queuepipe-w{index}")
        parent_sock, child_sock = socket.socketpair()
        try:
            self.arena = SlotArena(shm_fd, workers.n_slots, workers.slot_bytes)
            # No preexec_fn: it is unsafe in a process that already runs (TF) threads.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "queuepipe.workers.process.child", str(child_sock.fileno()), str(shm_fd),
                 str(os.getpid())],
                pass_fds=(child_sock.fileno(), shm_fd), stdin=subprocess.DEVNULL)
        finally:
            child_sock.close()
            os.close(shm_fd)
        self.conn = Connection(os.dup(parent_sock.fileno()))
        parent_sock.close()
        self.conn.send(Setup(sys_path=list(sys.path), main=workers.main_info, plan=workers.plan_bytes,
                             index=index, n_slots=workers.n_slots, slot_bytes=workers.slot_bytes,
                             resume=None if resume is None else pickle.dumps(resume)))
        self._releaser = threading.Thread(target=self._give_back_released_slots, daemon=True,
                                          name=f"queuepipe-w{index}-release")
        self._releaser.start()
        _live.add(self)

    @property
    def where(self) -> str:
        return f"{worker_label(self.index, self.count)} (process {self.proc.pid})"

    # -- WorkerBackend -------------------------------------------------------------
    def next_block(self) -> Block:
        if self._ended:
            raise EndOfStream()
        waiting_since = time.monotonic()
        while True:
            if self._stop.is_set() or self._closed:
                raise EndOfStream()
            if self._stall_timeout is not None and time.monotonic() - waiting_since > self._stall_timeout:
                self._stalled(time.monotonic() - waiting_since)
            try:
                ready = self.conn.poll(POLL_SECONDS)
            except (OSError, EOFError):
                ready = True
            if ready:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    self._fail(self._death())
                if isinstance(msg, Doing):
                    self._activity = msg.activity
                    continue
                return self._handle(msg)
            if self.proc.poll() is not None and not self.conn.poll(0):
                self._fail(self._death())

    def _handle(self, msg) -> Block:
        if isinstance(msg, BlockInSlot):
            lent = len(self.arena.leased_slots())  # only the releaser lowers it meanwhile: safe
            if lent < self.arena.n_slots - 1 - CHILD_RESERVE and SlotArena.native(msg.metas):
                columns = self.arena.lend(msg.slot, msg.metas, self._released.put)
            else:  # every other slot is still held (e.g. fetched batches kept by the user): copy
                columns = self.arena.read(msg.slot, msg.metas)
                self._free(msg.slot)
            columns = [o if o is not None else c for c, o in zip(columns, msg.objects)]
            return Block(columns, msg.n_rows, msg.n_batches, tail=msg.tail, epoch=msg.epoch)
        if isinstance(msg, BlockInline):
            if not self._inline_warned:
                log.warning("queuepipe: %s sent a block that did not fit a free %d-byte shared-memory "
                            "slot; it was pickled instead", self.where, self._slot_bytes)
                self._inline_warned = True
            return Block(msg.columns, msg.n_rows, msg.n_batches, tail=msg.tail, epoch=msg.epoch)
        if isinstance(msg, End):
            self._ended = True
            raise EndOfStream()
        if isinstance(msg, Failed):
            exc = None
            if msg.exception is not None:
                try:
                    exc = pickle.loads(msg.exception)
                except Exception:
                    exc = None
            if exc is None:
                exc = RuntimeError(f"{msg.type_name}: {msg.message}")
            exc.__cause__ = RemoteTraceback(msg.traceback_text)
            self._ended = True
            raise FailureSignal(WorkerFailure(exc, self.index, self.count, "process",
                                              traceback_text=msg.traceback_text))
        raise RuntimeError(f"queuepipe: unexpected message from {self.where}: {msg!r:.200}")

    def _give_back_released_slots(self) -> None:
        """Thread: hand each lent slot back to the child once its last tensor is gone.

        TF drops tensors inside the user's ``sess.run`` (its delayed numpy decref); only a
        C-level ``SimpleQueue.put`` runs there, and the Python work happens here, off the
        main thread, where no Ctrl-C can be raised (and lost)."""
        while True:
            token = self._released.get()
            if token is None:
                return
            self._free(self.arena.released(token))

    def _free(self, slot: int) -> None:
        """Let the child reuse ``slot``."""
        with self._send_lock:
            if self._closed:
                return
            try:
                self.conn.send(Free(slot))
            except (OSError, ValueError):
                pass  # the child is gone or going; nothing to give back to

    def _death(self) -> WorkerDiedError:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            if -code == signal.SIGKILL:
                how += " (e.g. the OOM killer or kill -9)"
        else:
            how = f"exited with code {code}" if code is not None else "closed its connection"
        return WorkerDiedError(f"queuepipe {self.where} died unexpectedly: {how}")

    def _stalled(self, waited: float) -> None:
        """The child has not delivered a block for ``waited`` > ``stall_timeout`` seconds: kill it
        (it may be stuck inside HDF5, deaf to SIGTERM) and report what it was doing."""
        pid = self.proc.pid
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._fail(WorkerStalledError(
            f"{self.where} made no progress for {waited:.1f} s (stall_timeout={self._stall_timeout:g}): "
            f"{self._activity}. The process {pid} was killed"))

    def _fail(self, exc: BaseException) -> None:
        self._ended = True
        raise FailureSignal(WorkerFailure(exc, self.index, self.count, "process", traceback_text=str(exc)))

    def close(self) -> None:
        """Stop the child now (SIGTERM unwinds its generator; SIGKILL if it lingers), free memory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _live.discard(self)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._released.put(None)
        self._releaser.join()
        with self._send_lock:
            self.conn.close()
        self.arena.close()  # a slot still lent to TF stays mapped until its last tensor is gone


@atexit.register
def _stop_all_children() -> None:
    """At interpreter exit, end every worker process still running (no orphans)."""
    for backend in list(_live):
        try:
            backend.close()
        except Exception:
            pass
