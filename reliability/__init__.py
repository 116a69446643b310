"""queuepipe's seeded fault campaign (RELIABILITY.md).

A trial is ``(kind, seed)``: every choice it makes comes from that pair, it runs in a fresh
interpreter under a hard timeout with a real TF1 session and real HDF5 files, and it is judged
against what queuepipe promises (values equal h5py's, rows exactly once, errors naming the file
within seconds, no hang, no crash, no leak).

* :mod:`reliability.kinds` -- the trial kinds (mutant, file_change, signal, session_close,
  map_fn, churn, soak): plan / prepare / observe / judge each;
* :mod:`reliability.supervisor` -- runs one trial in its own process and judges it;
* :mod:`reliability.campaign` -- many trials, 2 at a time, and the results table;
* :mod:`reliability.files`, :mod:`reliability.oracle` -- HDF5 files, mutations, h5py's reading;
* :mod:`reliability.payloads` -- TF-free generators / map_fns for worker processes.

This package's top level imports neither TensorFlow nor h5py (worker processes import
:mod:`reliability.payloads`).
"""
from .kinds import FULL_COUNTS, ORDER as KINDS

__all__ = ["KINDS", "FULL_COUNTS"]
