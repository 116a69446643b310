"""What :class:`queuepipe.InputWaitHook` costs the training loop it watches.

``python -m benchmarks.probes.input_wait_hook [--rounds 30] [--burst 300]`` runs a W1-like
loop -- ``from_hdf5`` over F1 (quick size, 8192 rows, in the page cache) in order, batch
128, one thread worker, repeated epochs so the data never ends; the step is the harness's
consumer op with ``y`` fetched -- in a ``SingularMonitoredSession``:

- ``no hook``: the baseline;
- ``no-op hook``: a ``SessionRunHook`` that does nothing (what any hook costs the
  monitored session's Python per step: two calls);
- ``InputWaitHook(100)``: the default window, the configuration being judged;
- ``InputWaitHook(1)``: a statistics fetch on every step (the worst case, for scale).

All four run at once, each in its own graph and session (built and warmed up first), and
take turns: a round gives every way one burst of ``--burst`` steps, the order rotated round
by round, so a change in the machine's load (other programs) hits all ways alike.  Per
round each hooked way's steps/s is divided by that round's ``no hook``; the medians of
those ratios are reported.  A W1 step is about the cheapest step there is (a sum over a
512 KiB batch), so the ratios bound the hook's relative cost on real models from above.
Then the ``InputWaitHook(100)`` session runs 1000 steps on its own and its verdict on this
loop is printed.

Also reported: the hook's own Python per step, called directly without a session (its
``before_run``/``after_run`` over many windows, a measurement's arithmetic and log line
included, the log line going to a disabled logger) -- a number the machine's noise does
not swamp.  Not a harness row: a side probe for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from queuepipe.tools.limits import consumer_op

from ..data import ensure_file, warm_page_cache

B = 128
ROWS = 8192


class Way:
    """One way's graph and open SingularMonitoredSession (``hook``: None, or the hook object)."""

    def __init__(self, path: str, hook: Optional[object], warmup: int = 50):
        import tensorflow as tf
        import queuepipe
        tf1 = tf.compat.v1
        self.hook = hook
        self.graph = tf.Graph()
        with self.graph.as_default():
            pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, workers=1, mode="thread",
                                       num_epochs=None)
            x, y = pipe.batch
            self.fetch = [consumer_op([x, y]), y]
            self.sess = tf1.train.SingularMonitoredSession(hooks=[hook] if hook is not None else [])
        for _ in range(warmup):
            self.sess.run(self.fetch)

    def steps_per_second(self, steps: int) -> float:
        run, fetch = self.sess.run, self.fetch
        t0 = time.perf_counter()
        for _ in range(steps):
            run(fetch)
        return steps / (time.perf_counter() - t0)

    def close(self) -> None:
        self.sess.close()


def hook_python_per_step(every_n_steps: int, steps: int = 200_000) -> float:
    """Microseconds of the hook's own ``before_run`` + ``after_run`` per step, called directly
    (a real graph with one pipeline for ``begin``; the statistics a measuring step would fetch
    are made up, growing by one batch a step)."""
    import tensorflow as tf
    import queuepipe
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        queuepipe.from_generator(lambda: iter(range(10)), tf.int64, (), batch_size=2)
        hook = queuepipe.InputWaitHook(every_n_steps=every_n_steps)
        hook.begin()
    hook.after_create_session(None, None)
    stats = np.zeros((1, 2), np.float64)
    values = tf1.train.SessionRunValues(results=[stats[0]], options=None, run_metadata=None)
    none = tf1.train.SessionRunValues(results=None, options=None, run_metadata=None)
    quiet = logging.getLogger("queuepipe").level
    logging.getLogger("queuepipe").setLevel(logging.WARNING)
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            args = hook.before_run(None)
            stats[0] += (0.00001, B)
            hook.after_run(None, values if args is not None else none)
        elapsed = time.perf_counter() - t0
    finally:
        logging.getLogger("queuepipe").setLevel(quiet)
    return elapsed / steps * 1e6


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--burst", type=int, default=300, help="steps per way and round")
    args = parser.parse_args(argv)
    import tensorflow as tf
    import queuepipe
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("queuepipe").setLevel(logging.WARNING)  # the hook's lines are not the point here

    class NoOpHook(tf.compat.v1.train.SessionRunHook):
        """A hook that does nothing: what one more hook costs the monitored session."""

    path = str(ensure_file("F1", ROWS))
    warm_page_cache(path)
    makers: Dict[str, Callable[[], Optional[object]]] = {
        "no hook": lambda: None,
        "no-op hook": NoOpHook,
        "InputWaitHook(every_n_steps=100)": lambda: queuepipe.InputWaitHook(every_n_steps=100),
        "InputWaitHook(every_n_steps=1)": lambda: queuepipe.InputWaitHook(every_n_steps=1),
    }
    names = list(makers)
    rates: Dict[str, List[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        ways: Dict[str, Way] = {}
        for name in names:
            ways[name] = Way(path, makers[name]())
            stack.callback(ways[name].close)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                rates[name].append(ways[name].steps_per_second(args.burst))
        judged = ways["InputWaitHook(every_n_steps=100)"]
        judged.steps_per_second(1000)
        verdict = judged.hook.bottleneck
    print(f"W1-like loop (F1 {ROWS} rows, batch {B}, thread x1, SingularMonitoredSession), "
          f"{args.rounds} interleaved rounds of {args.burst} steps per way:")
    base = rates["no hook"]
    print(f"  {'no hook':34s} median {statistics.median(base):8,.0f} steps/s")
    for name in names[1:]:
        ratios = [v / b for v, b in zip(rates[name], base)]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        print(f"  {name:34s} median {statistics.median(rates[name]):8,.0f} steps/s, x no hook: median "
              f"{statistics.median(ratios):.3f} (quartiles {q1:.3f} .. {q3:.3f})")
    for n in (100, 1):
        per_step = statistics.median(hook_python_per_step(n) for _ in range(3))
        print(f"InputWaitHook(every_n_steps={n}) own Python per step, no session: {per_step:.2f} us")
    if verdict is not None:
        print(f"InputWaitHook's verdict on this loop: {verdict.message()}")


if __name__ == "__main__":
    main()
