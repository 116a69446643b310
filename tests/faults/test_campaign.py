"""A short seeded subset of the fault campaign (``python -m reliability``, RELIABILITY.md).

Each test runs one trial ``(kind, seed)`` -- the same trial functions as the campaign, in a fresh
interpreter under the campaign's hard timeout, with real TF sessions and real HDF5 files -- and
asserts that its outcome is acceptable.  A failure message gives the reasons and the command that
reruns the trial alone with every detail (``python -m reliability --kind K --seed S -v``).

The subset covers every kind and its main variants (bit flips, truncation and metadata flips of
real-format files, a file truncated and one deleted mid-epoch, thread and process workers, a
killed worker and Ctrl-C, a session closed with and without ``running()``, a failing ``map_fn``);
churn and soak run their ``--quick`` size.  The campaign runs the rest (zeroed pages, SIGTERM,
per-block ``map_fn``, ...).  Seeds were chosen for that coverage and for a short run (under 2
minutes on 2 cores); trials on which h5py alone hangs (HDF5's own limit, reported by the
campaign) are left to the campaign, since each costs about a minute.
"""
from __future__ import annotations

import pytest

from reliability.campaign import show
from reliability.supervisor import ORACLE_TIMEOUT_S, run_trial, trial_timeout

# (kind, seed): what each covers is in the comment
SUBSET = [
    ("mutant", 8),          # vector_1d, bit flips anywhere, 2 threads
    ("mutant", 7),          # vector_1d, truncated file, 2 processes
    ("mutant", 9),          # fixed strings, flips next to structure signatures, 2 threads
    ("file_change", 2),     # vlen strings truncated mid-epoch, 2 threads
    ("file_change", 5),     # deleted mid-epoch, process worker
    ("signal", 0),          # SIGKILL one of 2 worker processes
    ("signal", 4),          # SIGINT from outside during a training loop, thread worker
    ("session_close", 1),   # start_queue_runners without a coordinator, sess.close(), process
    ("session_close", 8),   # sess.close() inside queuepipe.running(), slow generator, 2 threads
    ("map_fn", 3),          # map_fn raising a user-defined exception per sample, 2 processes
    ("churn", 0),           # 10 pipelines built, run and torn down (--quick)
    ("soak", 0),            # 10^4 batches, exactly once (--quick)
]


def _limit(kind: str) -> float:
    """pytest-timeout per test: beyond the trial's own hard timeout, so the harness reports first."""
    return trial_timeout(kind, quick=True) + ORACLE_TIMEOUT_S + 60


@pytest.mark.parametrize("kind,seed", [pytest.param(k, s, id=f"{k}-{s}", marks=pytest.mark.timeout(_limit(k)))
                                       for k, s in SUBSET])
def test_trial_outcome_is_acceptable(kind, seed):
    verdict = run_trial(kind, seed, quick=True)
    if not verdict.passed:
        pytest.fail(f"{kind} seed={seed} is not acceptable:\n  " + "\n  ".join(verdict.reasons)
                    + f"\nreproduce: {verdict.repro}\n\n{show(verdict)[:5000]}", pytrace=False)
