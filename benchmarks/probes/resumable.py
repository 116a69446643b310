"""What ``resumable=True`` costs a W1 step: the position bookkeeping of issue 15.

``python -m benchmarks.probes.resumable [--rounds 30] [--burst 300]`` runs W1-like loops --
``from_hdf5`` over F1 (quick size, 8192 rows, in the page cache) in order, batch 128, one
thread worker, repeated epochs so the data never ends; the step is the harness's consumer op
-- in plain sessions under ``queuepipe.running``:

- ``plain``: the baseline;
- ``resumable``: the same pipeline with ``resumable=True``: every row carries a 4 x int64
  position label (32 bytes beside a 4 KiB row) and every dequeue adds its batch's labels to
  the position variable (one ``ResourceScatterAdd`` of 128 x 2 entries, after the error gate);
- ``resumable, shuffled``: the same with ``shuffle=True`` (labels shuffled with the rows).
- ``plain, shuffled``: its baseline.

All ways run at once, each in its own graph and session (built and warmed up first), and take
turns: a round gives every way one burst of ``--burst`` steps, the order rotated round by
round.  Per round each way's steps/s is divided by its baseline's in the same round; the
medians (and quartiles) of those ratios are reported, with each way's run-to-run spread (the
quartiles of its rounds over its median) for scale.  Not a harness row: a side probe for
BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import time
from typing import Dict, List, Optional

from queuepipe.tools.limits import consumer_op

from ..data import ensure_file, warm_page_cache

B = 128
ROWS = 8192


class Way:
    """One way's graph and open session, its workers running."""

    def __init__(self, stack: contextlib.ExitStack, path: str, *, resumable: bool, shuffle: bool, warmup: int = 50):
        import tensorflow as tf
        import queuepipe
        tf1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default():
            pipe = queuepipe.from_hdf5(path, ["X", "y"], batch_size=B, workers=1, mode="thread", num_epochs=None,
                                       shuffle=shuffle, seed=0, resumable=resumable)
            x, y = pipe.batch
            self.fetch = consumer_op([x, y])
            self.sess = stack.enter_context(tf1.Session())
            self.sess.run(tf1.global_variables_initializer())
            stack.enter_context(queuepipe.running(self.sess))
        for _ in range(warmup):
            self.sess.run(self.fetch)

    def steps_per_second(self, steps: int) -> float:
        run, fetch = self.sess.run, self.fetch
        t0 = time.perf_counter()
        for _ in range(steps):
            run(fetch)
        return steps / (time.perf_counter() - t0)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--burst", type=int, default=300, help="steps per way and round")
    args = parser.parse_args(argv)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    path = str(ensure_file("F1", ROWS))
    warm_page_cache(path)
    configs = {"plain": (False, False), "resumable": (True, False),
               "plain, shuffled": (False, True), "resumable, shuffled": (True, True)}
    baseline = {"resumable": "plain", "resumable, shuffled": "plain, shuffled"}
    names = list(configs)
    rates: Dict[str, List[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        ways = {name: Way(stack, path, resumable=r, shuffle=s) for name, (r, s) in configs.items()}
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                rates[name].append(ways[name].steps_per_second(args.burst))
    print(f"W1-like loop (F1 {ROWS} rows, batch {B}, thread x1, sess.run), {args.rounds} interleaved rounds "
          f"of {args.burst} steps per way:")
    for name in names:
        med = statistics.median(rates[name])
        q1, _, q3 = statistics.quantiles(rates[name], n=4)
        line = (f"  {name:22s} median {med:8,.0f} steps/s (its rounds' quartiles {q1 / med:.3f} .. "
                f"{q3 / med:.3f} of it)")
        if name in baseline:
            ratios = [v / b for v, b in zip(rates[name], rates[baseline[name]])]
            r1, _, r3 = statistics.quantiles(ratios, n=4)
            line += (f"; x {baseline[name]}: median {statistics.median(ratios):.3f} "
                     f"(quartiles {r1:.3f} .. {r3:.3f})")
        print(line)


if __name__ == "__main__":
    main()
