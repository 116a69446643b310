"""Shared fixtures: every test must leave no queuepipe thread, child process or /dev/shm segment."""
from __future__ import annotations

import os
import threading
import time

import pytest


def _queuepipe_threads():
    return [t for t in threading.enumerate()
            if t.name.startswith("queuepipe") or "QueueRunner" in t.name]


def _children():
    """Live child processes of this process (Linux /proc)."""
    me = os.getpid()
    kids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z":
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            if "resource_tracker" not in cmd and "forkserver" not in cmd:
                kids.append((int(pid), cmd))
    return kids


def _shm():
    try:
        return {n for n in os.listdir("/dev/shm") if "queuepipe" in n or n.startswith("psm_")}
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves queuepipe threads, worker processes or shared memory behind."""
    shm_before = _shm()
    yield
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_queuepipe_threads() or _children()):
        time.sleep(0.05)
    threads = [t.name for t in _queuepipe_threads()]
    kids = _children()
    leaked_shm = _shm() - shm_before
    assert not threads, f"queuepipe threads still alive after the test: {threads}"
    assert not kids, f"child processes still alive after the test: {kids}"
    assert not leaked_shm, f"shared-memory segments left in /dev/shm: {sorted(leaked_shm)}"
