"""Is training waiting for its input?  queuepipe's summaries and InputWaitHook, end to end.

Every queuepipe pipeline adds three scalar summaries that a
``MonitoredTrainingSession(save_summaries_steps=...)`` writes with no extra code:
``queue/<name>/fraction_of_<capacity>_full``, ``queue/<name>/samples_per_second`` and
``queue/<name>/input_wait_fraction``; ``queuepipe.InputWaitHook`` logs the same verdict as
text every N steps ("input-bound": add workers or use ``mode="process"``; "compute-bound":
the input keeps up).

This trains a tiny classifier for a few hundred steps on a generator whose first blocks
come slowly (a cold cache, simulated with a sleep) and the rest fast, so the run shows
both verdicts: the hook's lines flip from input-bound to compute-bound, and the chart's
input-wait curve drops while samples/s rise.  It then reads the events file back and
draws the three summaries over the steps into ``queuepipe_input.svg`` next to it -- a
dependency-free stand-in for a TensorBoard screenshot (``tensorboard --logdir DIR`` shows
the same curves under "queue/").

Run: ``python examples/tensorboard_input.py [--logdir DIR]`` (without ``--logdir`` the
events and the chart go to a temporary folder, removed at the end).  CPU only, a few
seconds.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

# Before TensorFlow loads: no C++ INFO/WARNING lines (set TF_CPP_MIN_LOG_LEVEL=0 to see them all).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from queuepipe.tools.quiet import quiet_tensorflow_import  # noqa: E402

with quiet_tensorflow_import():  # the same level for the lines TF prints while it loads
    import tensorflow as tf

import queuepipe  # noqa: E402

tf1 = tf.compat.v1

FEATURES = 16
BATCH = 64


class WarmingSource:
    """Blocks of ``BATCH`` labelled samples, forever: the first ``slow_blocks`` of each worker
    take ``slow_seconds`` each (reading through a cold cache), the rest are instant."""

    def __init__(self, slow_blocks: int = 60, slow_seconds: float = 0.02):
        self.slow_blocks = slow_blocks
        self.slow_seconds = slow_seconds

    def __call__(self):
        info = queuepipe.worker_info()
        rng = np.random.default_rng(info.seed if info else 0)
        block = 0
        while True:
            if block < self.slow_blocks:
                time.sleep(self.slow_seconds)
            x = rng.standard_normal((BATCH, FEATURES), dtype=np.float32)
            y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)  # a rule the model can learn
            yield x, y
            block += 1


def train(logdir: str, steps: int, save_summaries_steps: int, every_n_steps: int) -> float:
    """Train with summaries written to ``logdir`` and the InputWaitHook logging; the final loss."""
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WarmingSource(), (tf.float32, tf.int64), ((FEATURES,), ()),
                                        yields="blocks", batch_size=BATCH, workers=2, name="train")
        x, y = pipe.batch
        w1 = tf1.get_variable("w1", [FEATURES, 32])
        w2 = tf1.get_variable("w2", [32, 2])
        logits = tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        train_op = tf1.train.AdamOptimizer(0.01).minimize(loss, global_step=tf1.train.get_or_create_global_step())
        hook = queuepipe.InputWaitHook(every_n_steps=every_n_steps)
        value = float("nan")
        with tf1.train.MonitoredTrainingSession(checkpoint_dir=logdir, save_summaries_steps=save_summaries_steps,
                                                save_checkpoint_secs=None, log_step_count_steps=None,
                                                hooks=[hook]) as sess:
            for _ in range(steps):
                _, value = sess.run([train_op, loss])
    print(f"final loss {value:.3f}; last verdict: {hook.verdict} (waited {hook.wait_fraction:.0%}, "
          f"{hook.samples_per_second:,.0f} samples/s)")
    return value


def read_queue_summaries(logdir: str) -> Dict[str, List[Tuple[int, float]]]:
    """Every ``queue/...`` scalar in the events files of ``logdir``: tag -> [(step, value)]."""
    series: Dict[str, List[Tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in tf1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.tag.startswith("queue/") and v.HasField("simple_value"):
                    series.setdefault(v.tag, []).append((int(event.step), float(v.simple_value)))
    return {tag: sorted(points) for tag, points in sorted(series.items())}


def svg_chart(series: Dict[str, List[Tuple[int, float]]], width: int = 640, panel: int = 150) -> str:
    """One panel per tag, stacked: the values over the steps as a polyline, with the value and
    step ranges written at the axes.  Plain SVG: no plotting library needed."""
    left, right, top, gap = 60, 20, 28, 40
    plot_w = width - left - right
    height = len(series) * (panel + gap) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>']
    for i, (tag, points) in enumerate(series.items()):
        y0 = i * (panel + gap) + top
        steps = [s for s, _ in points]
        values = [v for _, v in points]
        lo = min(0.0, min(values))
        hi = max(values) if max(values) > lo else lo + 1.0
        s_lo, s_hi = min(steps), max(max(steps), min(steps) + 1)

        def xy(step: int, value: float) -> str:
            return (f"{left + (step - s_lo) / (s_hi - s_lo) * plot_w:.1f},"
                    f"{y0 + panel - (value - lo) / (hi - lo) * panel:.1f}")

        out.append(f'<text x="{left}" y="{y0 - 8}" font-size="13" font-weight="bold">{tag}</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{left - 6}" y="{y0 + 10}" text-anchor="end">{hi:.3g}</text>')
        out.append(f'<text x="{left - 6}" y="{y0 + panel}" text-anchor="end">{lo:.3g}</text>')
        out.append(f'<text x="{left}" y="{y0 + panel + 14}">step {s_lo}</text>')
        out.append(f'<text x="{left + plot_w}" y="{y0 + panel + 14}" text-anchor="end">step {s_hi}</text>')
        out.append(f'<polyline fill="none" stroke="#d2691e" stroke-width="2" '
                   f'points="{" ".join(xy(s, v) for s, v in points)}"/>')
    out.append("</svg>")
    return "\n".join(out)


def run(logdir: str, steps: int, save_summaries_steps: int, every_n_steps: int) -> str:
    """Train, read the events back, write the chart next to them; the chart's path."""
    train(logdir, steps, save_summaries_steps, every_n_steps)
    series = read_queue_summaries(logdir)
    if len(series) != 3:
        raise RuntimeError(f"expected queuepipe's three summaries in {logdir}, found {sorted(series)}")
    for tag, points in series.items():
        print(f"{tag}: {len(points)} points, first {points[0][1]:.3g}, last {points[-1][1]:.3g}")
    chart = os.path.join(logdir, "queuepipe_input.svg")
    with open(chart, "w") as f:
        f.write(svg_chart(series))
    return chart


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", help="keep the events and the chart here (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--save-summaries-steps", type=int, default=10)
    parser.add_argument("--every-n-steps", type=int, default=50, help="InputWaitHook's window")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("queuepipe").setLevel(logging.INFO)  # the hook's lines
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if args.logdir:
        os.makedirs(args.logdir, exist_ok=True)
        chart = run(args.logdir, args.steps, args.save_summaries_steps, args.every_n_steps)
        print(f"chart: {chart}  (events: tensorboard --logdir {args.logdir})")
    else:
        with tempfile.TemporaryDirectory(prefix="queuepipe-tensorboard-") as logdir:
            chart = run(logdir, args.steps, args.save_summaries_steps, args.every_n_steps)
            print(f"chart: {chart} ({os.path.getsize(chart)} bytes; removed now: pass --logdir to keep it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
