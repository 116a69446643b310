"""Entry point of a worker process: run one WorkerLoop, ship its blocks through shared memory.

Started by :mod:`queuepipe.core.process_backend` as ``python -m queuepipe.core.child
CONN_FD SHM_FD`` (a fresh interpreter: never a ``fork`` of a parent that already
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
from multiprocessing.connection import Connection
from typing import List

import numpy as np

from . import worker_info as wi
from .batching import Block
from .shm_slots import SlotArena
from .worker import EndOfStream, WorkerFailed

PARENT_POLL_SECONDS = 0.5


def _exit_when_orphaned(parent_pid: int) -> None:
    """Leave as soon as the parent is gone (killed, crashed) -- never linger as an orphan."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(PARENT_POLL_SECONDS)


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


def _pickled_error(exc: BaseException):
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return None


class _Shipper:
    """Sends blocks to the parent through free slots, waiting for one when all are in use."""

    def __init__(self, conn: Connection, arena: SlotArena, batch_size: int):
        self.conn = conn
        self.arena = arena
        self.batch_size = batch_size
        self.free: List[int] = list(range(arena.n_slots))

    def _take_slot(self) -> int:
        while not self.free:
            msg = self.conn.recv()  # EOFError when the parent is gone
            if msg[0] == "free":
                self.free.append(msg[1])
        return self.free.pop()

    def _drain_nonblocking(self) -> None:
        while self.conn.poll():
            msg = self.conn.recv()
            if msg[0] == "free":
                self.free.append(msg[1])

    def ship(self, block: Block) -> None:
        self._drain_nonblocking()
        for piece in self._pieces(block):
            metas, nbytes = SlotArena.layout(piece.columns)
            objects = [c if c.dtype == object else None for c in piece.columns]
            header = (piece.n_rows, piece.n_batches, piece.tail)
            if nbytes <= self.arena.slot_bytes:
                slot = self._take_slot()
                self.arena.write(slot, piece.columns, metas)
                self.conn.send(("block", slot, header, metas, objects))
            else:  # a single batch larger than a slot: pickle it (rare; logged by the parent)
                self.conn.send(("inline", header, list(piece.columns)))

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
            yield Block(cols, rows, rows // self.batch_size)


def main(argv: List[str]) -> int:
    # Ctrl-C reaches the whole process group; it is the parent's to handle (it then stops us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent stops us with SIGTERM: unwind (the generator's finally blocks run), then exit.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    conn_fd, shm_fd, parent_pid = int(argv[0]), int(argv[1]), int(argv[2])
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True,
                     name="queuepipe-orphan-watch").start()
    conn = Connection(conn_fd)
    try:
        setup = pickle.loads(conn.recv_bytes())
        sys.path[:] = setup["sys_path"]
        if setup["needs_main"]:
            _load_parent_main(setup["main"])
        plan = pickle.loads(setup["plan"])
        index = setup["index"]
        arena = SlotArena(shm_fd, setup["n_slots"], setup["slot_bytes"])
    except (EOFError, OSError, SystemExit):
        return 0
    except BaseException as exc:  # cannot even start: report like any worker failure
        conn.send(("error", _pickled_error(exc), type(exc).__name__, str(exc), traceback.format_exc()))
        return 1

    loop = plan.make_loop(index, "process")
    wi.set_process_worker(loop.info)
    random.seed(loop.info.seed)
    np.random.seed(loop.info.seed % (2 ** 32))
    shipper = _Shipper(conn, arena, plan.batch_size)
    try:
        while True:
            try:
                block = loop.next_block()
            except EndOfStream:
                conn.send(("end",))
                return 0
            except WorkerFailed as failed:
                f = failed.failure
                conn.send(("error", _pickled_error(f.exception), type(f.exception).__name__,
                           str(f.exception), f.traceback_text))
                return 1
            shipper.ship(block)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0  # the parent stopped listening: it is shutting down
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
