"""The shared-memory slots that carry blocks from worker processes, without TensorFlow.

A block is written once, in a slot, by the child and read in place by the parent (and by
TF, which adopts the aligned views).  These tests drive both ends of the slot protocol in
one process over a real socket pair and a real memfd: a slot must never be reused while
either side still holds a view of it, or delivered data would be overwritten.
"""
import gc
import socket
from multiprocessing.connection import Connection

import numpy as np
import pytest

from queuepipe.workers.buffers import Block, aligned_block
from queuepipe.workers.process.child import Shipper
from queuepipe.workers.process.protocol import BlockInSlot, Free
from queuepipe.workers.process.slots import SlotArena, create_memfd

pytestmark = pytest.mark.timeout(60)

SLOT_BYTES = 1 << 16
WANTED = [((16, 8), np.dtype(np.float32)), ((16,), np.dtype(np.int64))]


@pytest.fixture
def ends():
    """(shipper, parent_conn, parent_arena): a child's shipper and the parent's view of 3 slots."""
    fd = create_memfd(3 * SLOT_BYTES)
    child_arena, parent_arena = SlotArena(fd, 3, SLOT_BYTES), SlotArena(fd, 3, SLOT_BYTES)
    a, b = socket.socketpair()
    child_conn, parent_conn = Connection(a.detach()), Connection(b.detach())
    yield Shipper(child_conn, child_arena, batch_size=16), parent_conn, parent_arena
    child_conn.close()
    parent_conn.close()
    gc.collect()
    child_arena.close()
    parent_arena.close()


def _filled(columns, value):
    for c in columns:
        c[...] = value
    return Block(columns, 16, 1)


def test_block_written_in_a_slot_ships_in_place_and_parent_views_are_the_slot_bytes(ends):
    shipper, parent, arena = ends
    block = _filled(shipper.lease_slot(WANTED), 7)
    shipper.ship(block)
    msg = parent.recv()
    slot, metas = msg.slot, msg.metas
    assert isinstance(msg, BlockInSlot) and (msg.n_rows, msg.n_batches, msg.tail) == (16, 1, False)
    released = []
    views = arena.lend(slot, metas, released.append)
    assert [v.shape for v in views] == [(16, 8), (16,)]
    assert all(v.ctypes.data % 64 == 0 for v in views)
    assert (views[0] == 7).all() and (views[1] == 7).all()
    block.columns[0][0, 0] = 99  # same bytes: nothing was copied
    assert views[0][0, 0] == 99
    part = views[0][3:5]
    del views
    assert released == []          # a slice still holds the slot
    del part
    assert [arena.released(t) for t in released] == [slot]  # the last view gone: the slot goes back


def test_slot_freed_by_parent_is_not_reused_while_the_child_still_holds_views(ends):
    shipper, parent, _ = ends
    first = shipper.lease_slot(WANTED)
    keep = first[0][8:]             # e.g. a batcher keeping the rest of a chunk it shipped part of
    shipper.ship(_filled(first, 1))
    slot = parent.recv().slot
    parent.send(Free(slot))
    del first
    others = [shipper.lease_slot(WANTED) for _ in range(2)]  # the two other slots
    assert all(o is not None for o in others)
    assert shipper.lease_slot(WANTED) is None  # slot 0 is still viewed here: fall back, never wait
    del keep
    again = shipper.lease_slot(WANTED)
    assert again is not None
    assert SlotArena.locate(shipper.arena, again)[0] == slot


def test_allocation_waits_for_the_parent_and_never_deadlocks_on_its_own_leases(ends):
    shipper, parent, _ = ends
    shipped = []
    for value in range(3):
        block = _filled(shipper.lease_slot(WANTED), value)
        shipper.ship(block)
        shipped.append(parent.recv().slot)
        del block
    assert sorted(shipped) == [0, 1, 2]
    parent.send(Free(shipped[1]))  # queued before the child asks: allocate must read it
    got = shipper.lease_slot(WANTED)
    assert SlotArena.locate(shipper.arena, got)[0] == shipped[1]


def test_block_not_in_a_slot_is_copied_and_the_allocator_gives_slots(ends):
    shipper, parent, arena = ends
    private = [np.arange(128, dtype=np.float32).reshape(16, 8), np.arange(16, dtype=np.int64)]
    shipper.ship(Block(private, 16, 1))
    msg = parent.recv()
    slot, metas = msg.slot, msg.metas
    views = arena.lend(slot, metas, [].append)
    np.testing.assert_array_equal(views[0], private[0])
    np.testing.assert_array_equal(views[1], private[1])
    columns = shipper.allocate(WANTED)        # the block allocator a process worker's loop is given
    assert shipper.arena.locate(columns) is not None
    assert shipper.arena.locate(aligned_block(WANTED)) is None


def test_big_endian_columns_are_not_lent_but_read_as_native_copies(ends):
    shipper, parent, arena = ends
    col = np.arange(16, dtype=">i4")
    shipper.ship(Block([col], 16, 1))
    msg = parent.recv()
    slot, metas = msg.slot, msg.metas
    assert not SlotArena.native(metas)
    (view,) = arena.read(slot, metas)
    assert view.dtype == np.dtype("=i4") and view.ctypes.data % 64 == 0
    np.testing.assert_array_equal(view, np.arange(16))


def test_release_notice_runs_no_python_code_so_ctrl_c_is_never_swallowed(ends):
    """The notice fires inside TF's delayed decref in the user's sess.run: a KeyboardInterrupt
    raised in Python code there would be printed and lost.  C-level callables only."""
    import queue
    shipper, parent, arena = ends
    shipper.ship(_filled(shipper.lease_slot(WANTED), 1))
    msg = parent.recv()
    slot, metas = msg.slot, msg.metas
    released = queue.SimpleQueue()
    views = arena.lend(slot, metas, released.put)
    del views
    assert arena.released(released.get(timeout=1)) == slot


def test_allocation_waits_only_for_a_slot_that_is_sure_to_come_back(ends):
    """The parent keeps at most n - 2 slots lent to TF (the user may keep fetched batches, and
    with them the slots, forever): the child waits only when one of the slots at the parent
    must be in transit, and otherwise falls back to its own memory at once."""
    import threading
    shipper, parent, _ = ends
    held = [shipper.lease_slot(WANTED) for _ in range(2)]   # both viewed here
    block = _filled(shipper.lease_slot(WANTED), 0)
    shipper.ship(block)
    del block
    assert shipper.lease_slot(WANTED) is None  # the one at the parent may stay lent: do not wait
    shipper.ship(_filled(held.pop(), 5))
    slots = [parent.recv().slot for _ in range(2)]
    timer = threading.Timer(0.2, parent.send, args=(Free(slots[1]),))
    timer.start()                         # 2 at the parent: one must be in transit; wait for it
    got = shipper.lease_slot(WANTED)
    timer.join()
    assert SlotArena.locate(shipper.arena, got)[0] == slots[1]
