"""Entry point of a worker process: run one WorkerLoop, ship its blocks through shared memory.

Started by :mod:`queuepipe.workers.process.parent` as ``python -m
queuepipe.workers.process.child CONN_FD SHM_FD PARENT_PID`` (a fresh interpreter: never a ``fork`` of a parent that already
runs TensorFlow or HDF5 threads).  It imports only the TF-free core, plus whatever
module defines the user's generator (and the parent's ``__main__`` only when the
generator lives there).
"""
from __future__ import annotations

import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Deque, List, Optional, Set

import numpy as np

from ...errors import EndOfStream, FailureSignal
from .. import info as wi
from ..buffers import Block, Wanted, aligned_block
from .protocol import BlockInline, BlockInSlot, Doing, End, Failed, Free, Setup, pickled_exception
from .slots import CHILD_RESERVE, SlotArena

PARENT_POLL_SECONDS = 0.5


def _exit_when_orphaned(parent_pid: int) -> None:
    """Leave as soon as the parent is gone (killed, crashed) -- never linger as an orphan."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(PARENT_POLL_SECONDS)


def _keep_to_ourselves(*fds: int) -> None:
    """Make the descriptors the parent passed (control socket, slot memory) non-inheritable.

    ``pass_fds`` hands them over inheritable; a process the user's code starts in this
    worker (``subprocess.Popen(..., close_fds=False)``, ``os.system``) would otherwise get
    them too -- and hold the parent's socket open, or the slots' memory, after we are gone."""
    for fd in fds:
        os.set_inheritable(fd, False)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def _load_parent_main(main_info: dict) -> None:
    """Import the parent's ``__main__`` as ``__mp_main__`` (only if the generator lives there)."""
    import runpy
    import types

    if main_info.get("module"):
        namespace = runpy.run_module(main_info["module"], run_name="__mp_main__", alter_sys=False)
    elif main_info.get("path"):
        namespace = runpy.run_path(main_info["path"], run_name="__mp_main__")
    else:
        return
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def _failed(exc: BaseException, traceback_text: str) -> Failed:
    """The :class:`Failed` message for ``exc``: the exception itself when it can be rebuilt in
    the parent (:func:`.protocol.pickled_exception`), always its type, text and traceback."""
    return Failed(pickled_exception(exc), type(exc).__name__, str(exc), traceback_text)


class Shipper:
    """Owns this worker's slots: lends free ones to the loop for new blocks, ships blocks.

    A slot is free when neither side holds it: the parent gives it back (``free``) once
    TensorFlow is done with the block, and the lease on its views here ends when this
    process drops them (the batcher may keep rows of a chunk after shipping part of it).
    A block written in a slot ships as it is; any other block is copied into a free slot.
    """

    def __init__(self, conn: Connection, arena: SlotArena, batch_size: int):
        self.conn = conn
        self.arena = arena
        self.batch_size = batch_size
        self.free: Deque[int] = deque(range(arena.n_slots))
        self.at_parent: Set[int] = set()
        self._ended: Deque = deque()  # tokens of leases whose views are all gone (appended from C)

    # -- slot states ---------------------------------------------------------------------
    def _release(self, slot: int) -> None:
        if slot not in self.at_parent and slot not in self.arena.leased_slots() and slot not in self.free:
            self.free.append(slot)

    def _collect_ended_leases(self) -> None:
        while self._ended:
            self._release(self.arena.released(self._ended.popleft()))

    def _receive(self, wait: bool) -> None:
        self._collect_ended_leases()
        while wait or self.conn.poll():
            msg = self.conn.recv()  # EOFError when the parent is gone
            if isinstance(msg, Free):
                self.at_parent.discard(msg.slot)
                self._release(msg.slot)
            wait = False

    def _may_wait(self) -> bool:
        """Whether waiting for a slot is safe, i.e. one is sure to come back (DESIGN.md, "The
        slot protocol"): the parent lends TensorFlow at most ``n - 1 - CHILD_RESERVE`` slots,
        so when ``n - CHILD_RESERVE`` slots are at the parent and not viewed here, at least
        one of them is not lent and the parent is about to free it."""
        return len(self.at_parent - self.arena.leased_slots()) >= self.arena.n_slots - CHILD_RESERVE

    def _wait_for_free_slot(self) -> bool:
        """Block until a slot is free, when one is sure to come back; else False at once."""
        self._receive(wait=False)
        while not self.free:
            if not self._may_wait():
                return False
            self._receive(wait=True)
        return True

    # -- the loop's side -------------------------------------------------------------------
    def lease_slot(self, wanted: Wanted) -> Optional[List[np.ndarray]]:
        """A new block's buffers in a free slot, or None when none can be had without risk
        of waiting forever (or the block does not fit a slot)."""
        if not self._wait_for_free_slot():
            return None
        slot = self.free.pop()  # the most recently freed: its pages are warm, and a run touches few slots
        columns = self.arena.lease(slot, wanted, self._ended.append)
        if columns is None:
            self.free.append(slot)
        return columns

    def allocate(self, wanted: Wanted) -> List[np.ndarray]:
        """The block allocator of this process: a slot when one can be had, else plain
        aligned memory (:meth:`ship` then copies the block into a slot, or pickles it)."""
        columns = self.lease_slot(wanted)
        return columns if columns is not None else aligned_block(wanted)

    def ship(self, block: Block) -> None:
        self._receive(wait=False)
        for piece in self._pieces(block):
            objects = [c if c.dtype == object else None for c in piece.columns]
            found = self.arena.locate(piece.columns)
            if found is not None and found[0] in self.arena.leased_slots() and found[0] not in self.at_parent:
                slot, metas = found  # written in place: no copy
            else:
                metas, nbytes = SlotArena.layout(piece.columns)
                if nbytes > self.arena.slot_bytes or not self._wait_for_free_slot():
                    # larger than a slot, or every slot is held here: pickle it (rare; logged)
                    self.conn.send(BlockInline(piece.n_rows, piece.n_batches, piece.tail, list(piece.columns),
                                                piece.epoch))
                    continue
                slot = self.free.pop()
                self.arena.write(slot, piece.columns, metas)
            self.at_parent.add(slot)
            self.conn.send(BlockInSlot(slot, piece.n_rows, piece.n_batches, piece.tail, metas, objects,
                                       piece.epoch))

    def _pieces(self, block: Block):
        """Split a many-batch block at batch boundaries so that each piece fits a slot."""
        _, nbytes = SlotArena.layout(block.columns)
        if nbytes <= self.arena.slot_bytes or block.n_batches <= 1 or block.tail:
            yield block
            return
        row_bytes = max(1, nbytes // block.n_rows)
        per_piece = max(1, self.arena.slot_bytes // (row_bytes * self.batch_size)) * self.batch_size
        for start in range(0, block.n_rows, per_piece):
            cols = [c[start:start + per_piece] for c in block.columns]
            rows = len(cols[0])
            yield Block(cols, rows, rows // self.batch_size, epoch=block.epoch)


def main(argv: List[str]) -> int:
    # Ctrl-C reaches the whole process group; it is the parent's to handle (it then stops us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent stops us with SIGTERM: unwind (the generator's finally blocks run), then exit.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    conn_fd, shm_fd, parent_pid = int(argv[0]), int(argv[1]), int(argv[2])
    _keep_to_ourselves(conn_fd, shm_fd)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True,
                     name="queuepipe-orphan-watch").start()
    conn = Connection(conn_fd)
    try:
        setup: Setup = conn.recv()
        sys.path[:] = setup.sys_path
        if setup.main:
            _load_parent_main(setup.main)
        plan = pickle.loads(setup.plan)
        arena = SlotArena(shm_fd, setup.n_slots, setup.slot_bytes)
        shipper = Shipper(conn, arena, plan.batch_size)
        loop = plan.make_loop(setup.index, "process", allocate=shipper.allocate,
                              resume=None if setup.resume is None else pickle.loads(setup.resume))
    except (EOFError, OSError, SystemExit):
        return 0
    except BaseException as exc:  # cannot even start: report like any worker failure
        conn.send(_failed(exc, traceback.format_exc()))
        return 1

    if plan.stall_timeout is not None:  # the parent watches the time; tell it what we are at
        loop.progress.listener = lambda activity: conn.send(Doing(activity))
    wi.set_process_worker(loop.info)
    random.seed(loop.info.seed)
    np.random.seed(loop.info.seed % (2 ** 32))
    try:
        while True:
            try:
                block = loop.next_block()
            except EndOfStream:
                conn.send(End())
                return 0
            except FailureSignal as failed:
                conn.send(_failed(failed.failure.exception, failed.failure.traceback_text))
                return 1
            shipper.ship(block)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0  # the parent stopped listening: it is shutting down
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
