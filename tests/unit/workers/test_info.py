"""queuepipe.workers.info: ``worker_info()`` tells user code which worker runs it -- ``None``
outside a worker, the identity given to ``acting_as`` inside it (per thread, restored after)
-- and ``derive_seed`` gives each worker a stable, distinct 63-bit seed."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import queuepipe
from queuepipe.workers.info import WorkerInfo, acting_as, derive_seed, set_process_worker, worker_info


def test_acting_as_sets_worker_info_for_the_block_and_restores_it_after_even_on_error():
    assert worker_info() is None and queuepipe.worker_info is worker_info
    info = WorkerInfo(index=2, count=4, seed=99, mode="thread", epoch=1)
    with acting_as(info):
        assert worker_info() is info
        inner = WorkerInfo(index=3, count=4, seed=7)
        with acting_as(inner):
            assert worker_info() is inner
        assert worker_info() is info
    assert worker_info() is None
    with pytest.raises(KeyError):
        with acting_as(info):
            raise KeyError("boom")
    assert worker_info() is None


def test_the_identity_belongs_to_the_thread_that_acts_as_the_worker():
    seen = {}
    started, release = threading.Event(), threading.Event()

    def other():
        with acting_as(WorkerInfo(1, 2, 11)):
            started.set()
            release.wait(10)
            seen["other"] = worker_info()

    t = threading.Thread(target=other)
    t.start()
    try:
        assert started.wait(10)
        assert worker_info() is None, "another thread's identity does not leak here"
        with acting_as(WorkerInfo(0, 2, 10)):
            release.set()
            t.join(10)
            assert worker_info().index == 0
    finally:
        release.set()
        t.join(10)
    assert seen["other"].index == 1


def test_a_process_wide_identity_applies_where_no_thread_identity_is_set():
    proc = WorkerInfo(5, 8, 123, mode="process")
    set_process_worker(proc)
    try:
        assert worker_info() is proc
        with acting_as(WorkerInfo(6, 8, 1)):
            assert worker_info().index == 6, "the thread's own identity wins"
        assert worker_info() is proc
    finally:
        set_process_worker(None)
    assert worker_info() is None


def test_derive_seed_is_stable_for_a_given_pipeline_seed():
    assert derive_seed(42, 3) == derive_seed(42, 3) == derive_seed(42, 3, salt=0)
    # pinned to numpy's SeedSequence: the same seeds in every process and every run
    expected = int(np.random.SeedSequence([42, 3, 0]).generate_state(1, dtype=np.uint64)[0] >> 1)
    assert derive_seed(42, 3) == expected
    assert derive_seed(None, 0) == derive_seed(None, 0), "no pipeline seed: still deterministic"


def test_derive_seed_is_distinct_per_worker_salt_and_pipeline_seed_and_fits_63_bits():
    seeds = {derive_seed(base, i, salt) for base in (0, 1, 42, None) for i in range(16) for salt in (0, 1)}
    assert len(seeds) == 4 * 16 * 2
    assert all(0 <= s < 2 ** 63 for s in seeds)
