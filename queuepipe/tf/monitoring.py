"""What a pipeline tells TensorBoard: its queue's fill level, samples per second, input wait.

Every pipeline adds three scalar summaries to ``GraphKeys.SUMMARIES`` when it is built, so
``MonitoredTrainingSession(save_summaries_steps=...)`` (or any ``merge_all()``) writes them
with no extra code:

- ``queue/<name>/fraction_of_<capacity>_full``: the queue's size over its capacity, under
  the name ``tf.compat.v1.train.batch`` used (capacity in samples);
- ``queue/<name>/samples_per_second``: samples handed to the consumer per second since the
  previous evaluation of the summary (or since the run started);
- ``queue/<name>/input_wait_fraction``: the fraction of that time the consumer waited for
  input (0: the input keeps up; near 1: the step waits for the pipeline).

None of them dequeues: running the summary op alone never takes a batch.  The last two read
the consumer's statistics (:mod:`.consumer_stats`) in a ``py_func`` that runs only when the
summaries are evaluated.

The same statistics, as log lines and attributes instead of charts: :class:`InputWaitHook`,
a ``SessionRunHook`` that says every N steps whether training is *input-bound* (the step
waits for the pipeline: add workers, or use ``mode="process"``) or *compute-bound* (the
input keeps up).  It finds the pipelines of a graph through the ``queuepipe_pipelines``
collection (:data:`PIPELINES_COLLECTION`), which :func:`add_summaries` fills.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from ..errors import ArgumentError, ArgumentTypeError
from .consumer_stats import SAMPLES, WAIT_SECONDS

tf1 = tf.compat.v1
log = logging.getLogger("queuepipe")

# The graph collection of every pipeline's statistics tensor (``Pipeline.stats.value``, the
# variable ``[input wait seconds, samples delivered]``; reading it dequeues nothing).
# Tensors, not Pipeline objects: a collection of tensors survives ``export_meta_graph`` /
# ``import_meta_graph`` (saved by name), where arbitrary Python objects would be
# serialized as bogus node names or warned about on every checkpoint.
PIPELINES_COLLECTION = "queuepipe_pipelines"

# InputWaitHook's default threshold: a consumer that waited for input more than this
# fraction of the wall time is "input-bound".  At 0.15, infinitely fast input would make
# training at most ~18 % faster (1 / (1 - 0.15)); below it, the few tens of microseconds a
# dequeue of a ready batch takes (counted as waiting) cannot reach it unless steps take
# well under a millisecond, and a faster pipeline would gain little.
INPUT_BOUND_ABOVE = 0.15

INPUT_BOUND = "input-bound"
COMPUTE_BOUND = "compute-bound"
IDLE = "idle"


class RateMeter:
    """Differences of the consumer's statistics between two evaluations, per second of wall time."""

    def __init__(self, runner):
        self.runner = runner
        self._lock = threading.Lock()
        self._last: Optional[Tuple[float, float, float, int]] = None  # (time, wait, samples, run)

    def __call__(self, stats: np.ndarray) -> np.ndarray:
        now = time.monotonic()
        run_id = self.runner.runs_reset
        with self._lock:
            last = self._last
            if last is None or last[3] != run_id or stats[SAMPLES] < last[2]:
                last = (self.runner.reset_at or now, 0.0, 0.0, run_id)
            self._last = (now, float(stats[WAIT_SECONDS]), float(stats[SAMPLES]), run_id)
        elapsed = now - last[0]
        if elapsed <= 0:
            return np.zeros(2, np.float32)
        samples_per_second = (stats[SAMPLES] - last[2]) / elapsed
        wait_fraction = min(1.0, max(0.0, (stats[WAIT_SECONDS] - last[1]) / elapsed))
        return np.array([samples_per_second, wait_fraction], np.float32)


def add_summaries(pipeline) -> None:
    """Add the pipeline's three summaries to ``GraphKeys.SUMMARIES``, and its statistics
    tensor to :data:`PIPELINES_COLLECTION` (where :class:`InputWaitHook` finds it)."""
    capacity = pipeline.capacity_batches * pipeline.batch_size
    prefix = f"queue/{pipeline.name}"
    pipeline.stats.value.graph.add_to_collection(PIPELINES_COLLECTION, pipeline.stats.value)
    with tf.control_dependencies(None):
        fraction = tf.cast(pipeline.runner.queue_size, tf.float32) * (1.0 / pipeline.capacity_batches)
        tf1.summary.scalar(f"{prefix}/fraction_of_{capacity}_full", fraction)
        rates = tf1.numpy_function(RateMeter(pipeline.runner), [pipeline.stats.value], tf.float32,
                                   stateful=True, name=f"{pipeline.name}_rates")
        rates.set_shape([2])
        tf1.summary.scalar(f"{prefix}/samples_per_second", rates[0])
        tf1.summary.scalar(f"{prefix}/input_wait_fraction", rates[1])


# --------------------------------------------------------------------------------------
# InputWaitHook
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputWaitMeasurement:
    """What one pipeline's consumer saw over one window of steps.

    ``wait_fraction``: seconds the step waited for this pipeline's batches over the
    window's wall time, in [0, 1].  ``verdict``: ``"input-bound"`` (the wait fraction is
    above the hook's threshold), ``"compute-bound"`` (the input keeps up) or ``"idle"``
    (no batch was taken from this pipeline in the window).  ``advice``: what to do about it,
    in words.  ``includes_startup``: the window began with the session, so it includes
    the wait for the pipeline's first batches (workers starting, an empty queue).
    """

    pipeline: str
    steps: int
    seconds: float
    wait_fraction: float
    samples_per_second: float
    steps_per_second: float
    verdict: str
    advice: str
    mode: Optional[str] = None
    workers: Optional[int] = None
    includes_startup: bool = False

    def message(self) -> str:
        """The log line: the numbers, the verdict and the advice."""
        startup = ", includes the pipeline's start-up" if self.includes_startup else ""
        return (f"pipeline {self.pipeline!r} over the last {self.steps} steps ({self.seconds:.2f} s{startup}): "
                f"waited for input {self.wait_fraction:.0%} of the time, {self.samples_per_second:,.0f} samples/s, "
                f"{self.steps_per_second:,.1f} steps/s -- {self.verdict}: {self.advice}")


@dataclasses.dataclass(frozen=True)
class _Watched:
    """One pipeline the hook reads: its statistics tensor and what the advice needs."""

    name: str
    value: tf.Tensor
    mode: Optional[str]
    workers: Optional[int]


def _advice(verdict: str, mode: Optional[str], workers: Optional[int]) -> str:
    now = f" (now workers={workers})" if workers else ""
    if verdict == IDLE:
        return "no batch was taken from it in these steps"
    if verdict == COMPUTE_BOUND:
        return "the input keeps up; more workers would not make training faster"
    if mode == "process":
        return f"the step waits for data; add more worker processes{now}"
    if mode == "thread":
        return (f"the step waits for data; add workers{now} or use mode=\"process\" "
                f"(workers in their own processes, not sharing the GIL with the training loop)")
    return "the step waits for data; add workers or use mode=\"process\""


def _pipelines_of_graph(graph: tf.Graph) -> List[_Watched]:
    """Every pipeline of ``graph``: the tensors of :data:`PIPELINES_COLLECTION`, each named
    (and given its mode and workers) by the queue runner that carries the same tensor."""
    from .session import pipeline_runners  # session -> runner: keep this module's import light
    runners = {id(r.stats_value): r for r in pipeline_runners(graph) if r.stats_value is not None}
    watched = []
    for value in graph.get_collection(PIPELINES_COLLECTION):
        runner = runners.get(id(value))
        if runner is not None:
            watched.append(_Watched(runner.pipeline_name, value, runner.runtime.mode, runner.runtime.workers))
        else:  # e.g. a graph from import_meta_graph: its runners are plain QueueRunners
            watched.append(_Watched(value.name.split("/")[0], value, None, None))
    return watched


def _given_pipelines(graph: tf.Graph, pipelines: Iterable[Any]) -> List[_Watched]:
    from .pipeline import Pipeline  # pipeline imports this module
    watched = []
    for pipe in pipelines:
        if not isinstance(pipe, Pipeline):
            raise ArgumentTypeError(f"InputWaitHook(pipelines=...): expected queuepipe Pipelines, got {pipe!r}")
        if pipe.stats.value.graph is not graph:
            raise ArgumentError(f"InputWaitHook: pipeline {pipe.name!r} belongs to another graph than the "
                                f"session's; build the hook's pipelines in the graph the session runs")
        if any(w.value is pipe.stats.value for w in watched):
            continue
        watched.append(_Watched(pipe.name, pipe.stats.value, pipe.mode, pipe.workers))
    return watched


def _unique_names(watched: List[_Watched]) -> List[_Watched]:
    """Pipelines built with the same ``name=`` get ``#2``, ``#3``... (the keys of
    :attr:`InputWaitHook.measurements` must differ)."""
    seen: Dict[str, int] = {}
    out = []
    for w in watched:
        seen[w.name] = seen.get(w.name, 0) + 1
        out.append(w if seen[w.name] == 1 else dataclasses.replace(w, name=f"{w.name}#{seen[w.name]}"))
    return out


class InputWaitHook(tf1.train.SessionRunHook):
    """Every ``every_n_steps`` steps, log whether training waits for its input.

    For a ``MonitoredTrainingSession`` or ``SingularMonitoredSession`` (``hooks=[...]``).
    For each pipeline it logs (Python ``logging``, logger ``"queuepipe"``, at ``log_level``)
    the fraction of the wall time over the last ``every_n_steps`` steps that the step waited
    for that pipeline's batches, the samples per second it was handed, and a verdict:

    - ``input-bound`` when the wait fraction is above ``input_bound_above`` (default 0.15,
      :data:`INPUT_BOUND_ABOVE`): the pipeline is the bottleneck; the advice is to add
      workers, or to use ``mode="process"`` for a thread pipeline (more worker processes
      for one that already uses them);
    - ``compute-bound`` otherwise: the input keeps up, more workers would not help;
    - ``idle`` for a pipeline no step took a batch from in the window (logged at DEBUG).

    The same numbers are attributes, for programs: :attr:`measurements` (the latest
    :class:`InputWaitMeasurement` per pipeline name), and :attr:`wait_fraction`,
    :attr:`samples_per_second`, :attr:`verdict` of the pipeline the step waited on most;
    :attr:`steps` counts the steps run under the hook.  All are None before the first
    measurement.

    ``pipelines``: the Pipelines to watch; None (default): every queuepipe pipeline of the
    session's graph (:data:`PIPELINES_COLLECTION`).

    Cost: nothing is added to the steps between two measurements (``before_run`` returns
    no fetches, ``after_run`` counts); a measuring step also fetches each pipeline's small
    statistics variable (no dequeue) and reads the clock.  Windows: the first begins at the
    first step after the session is created (so it includes the wait for the first
    batches: its line says so), each next one where the previous ended; a session
    re-created by the monitored session starts over.  The statistics are read while the
    measuring step runs, so a window may count one batch of its neighbour's; with tens of
    steps per window that is noise.  A last window shorter than ``every_n_steps`` is not
    reported.
    """

    def __init__(self, every_n_steps: int = 100, pipelines: Optional[Union[Any, Iterable[Any]]] = None, *,
                 input_bound_above: float = INPUT_BOUND_ABOVE, log_level: int = logging.INFO):
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ArgumentError(f"InputWaitHook(every_n_steps={every_n_steps!r}): need an int >= 1")
        if isinstance(input_bound_above, bool) or not isinstance(input_bound_above, (int, float)) \
                or not 0.0 < input_bound_above < 1.0:
            raise ArgumentError(f"InputWaitHook(input_bound_above={input_bound_above!r}): need a fraction "
                                f"between 0 and 1 (exclusive)")
        if pipelines is not None and (hasattr(pipelines, "stats") or not hasattr(pipelines, "__iter__")):
            pipelines = [pipelines]  # one Pipeline (or one wrong thing, refused in begin())
        self.every_n_steps = every_n_steps
        self.input_bound_above = float(input_bound_above)
        self.log_level = log_level
        self.steps = 0
        self.measurements: Dict[str, InputWaitMeasurement] = {}
        self._given = None if pipelines is None else list(pipelines)
        self._watched: List[_Watched] = []
        self._fetches: List[tf.Tensor] = []
        self._countdown = 0                       # steps to run before the next measuring step
        self._requested_at: Optional[float] = None  # perf_counter() of the measuring step in flight
        self._last: Optional[Tuple[float, int, np.ndarray]] = None  # (time, steps, statistics)
        self._startup = True

    # -- the numbers --------------------------------------------------------------------

    @property
    def bottleneck(self) -> Optional[InputWaitMeasurement]:
        """The latest measurement of the pipeline the step waited on most (None before the first)."""
        active = [m for m in self.measurements.values() if m.verdict != IDLE] or list(self.measurements.values())
        return max(active, key=lambda m: m.wait_fraction, default=None)

    @property
    def wait_fraction(self) -> Optional[float]:
        """Fraction of the last window's wall time the step waited for input (:attr:`bottleneck`)."""
        m = self.bottleneck
        return None if m is None else m.wait_fraction

    @property
    def samples_per_second(self) -> Optional[float]:
        """Samples per second the :attr:`bottleneck` pipeline delivered in the last window."""
        m = self.bottleneck
        return None if m is None else m.samples_per_second

    @property
    def verdict(self) -> Optional[str]:
        """``"input-bound"``, ``"compute-bound"`` or ``"idle"``: the :attr:`bottleneck`'s verdict."""
        m = self.bottleneck
        return None if m is None else m.verdict

    # -- SessionRunHook -----------------------------------------------------------------

    def begin(self) -> None:
        """Find the pipelines' statistics tensors in the graph about to be finalized."""
        graph = tf1.get_default_graph()
        if self._given is not None:
            watched = _given_pipelines(graph, self._given)
        else:
            watched = _pipelines_of_graph(graph)
        self._watched = _unique_names(watched)
        self._fetches = [w.value for w in self._watched]
        if not self._watched:
            log.warning("InputWaitHook: the graph has no queuepipe pipeline; the hook measures nothing")

    def after_create_session(self, session: tf1.Session, coord: tf1.train.Coordinator) -> None:
        """A new session (and a new run of the pipelines, statistics zeroed): start over."""
        self._countdown = 0
        self._requested_at = None
        self._last = None
        self._startup = True

    def before_run(self, run_context: tf1.train.SessionRunContext) -> Optional[tf1.train.SessionRunArgs]:
        """On a measuring step only: fetch the statistics (and note the time); else add nothing."""
        if self._countdown > 0 or not self._fetches:
            return None
        self._requested_at = time.perf_counter()
        return tf1.train.SessionRunArgs(self._fetches)

    def after_run(self, run_context: tf1.train.SessionRunContext, run_values: tf1.train.SessionRunValues) -> None:
        """Count the step; after a measuring step, close the window that ends there."""
        self.steps += 1
        if self._requested_at is None:
            self._countdown -= 1
            return
        now, self._requested_at = self._requested_at, None
        stats = np.asarray(run_values.results, np.float64).reshape(len(self._fetches), 2)
        last, self._last = self._last, (now, self.steps - 1, stats)
        self._countdown = self.every_n_steps - 1
        if last is not None:
            self._measure(now - last[0], self.steps - 1 - last[1], stats - last[2])

    # -- measuring ----------------------------------------------------------------------

    def _measure(self, seconds: float, steps: int, deltas: np.ndarray) -> None:
        startup, self._startup = self._startup, False
        if seconds <= 0 or steps <= 0:
            return
        for w, (waited, samples) in zip(self._watched, deltas[:, [WAIT_SECONDS, SAMPLES]].tolist()):
            if samples < 0:  # the statistics were zeroed in between (a new run): no window
                continue
            wait_fraction = min(1.0, max(0.0, waited / seconds))
            if samples == 0:
                verdict = IDLE
            elif wait_fraction > self.input_bound_above:
                verdict = INPUT_BOUND
            else:
                verdict = COMPUTE_BOUND
            m = InputWaitMeasurement(
                pipeline=w.name, steps=steps, seconds=seconds, wait_fraction=wait_fraction,
                samples_per_second=samples / seconds, steps_per_second=steps / seconds, verdict=verdict,
                advice=_advice(verdict, w.mode, w.workers), mode=w.mode, workers=w.workers,
                includes_startup=startup)
            self.measurements[w.name] = m
            log.log(logging.DEBUG if verdict == IDLE else self.log_level, "InputWaitHook: %s", m.message())
