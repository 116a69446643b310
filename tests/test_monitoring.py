"""What a pipeline tells about its consumer: the three summaries and :class:`queuepipe.InputWaitHook`.

Real graphs, sessions, worker threads and processes; no clock limits are asserted.  The
verdict tests make the bottleneck unmistakable (a generator sleeping 20 ms per sample
against a trivial step, or a fast generator against a step sleeping 30 ms), so the wait
fraction lands near 1 or near 0, far from the threshold.
"""
from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Dict, List

import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import TESTS_DIR, drain, mode, rows  # noqa: F401
from queuepipe.tf.monitoring import INPUT_BOUND_ABOVE, PIPELINES_COLLECTION
from sample_gens import ShardedRange, SlowRange, WholeRange

tf1 = tf.compat.v1

def tags_of(pipe) -> Dict[str, str]:
    """The pipeline's three summary tags, by kind."""
    prefix, capacity = f"queue/{pipe.name}", pipe.capacity_batches * pipe.batch_size
    return {"fraction": f"{prefix}/fraction_of_{capacity}_full", "samples": f"{prefix}/samples_per_second",
            "input": f"{prefix}/input_wait_fraction"}


def read_scalars(logdir: str) -> Dict[str, List[float]]:
    """Every scalar summary in the events files under ``logdir``: tag -> values in step order."""
    out: Dict[str, List[float]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in tf1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append(value.simple_value)
    return out


def sleep_30ms(x):
    time.sleep(0.03)  # releases the GIL, like a step running on an accelerator
    return x


def slow_step(batch) -> tf.Tensor:
    """A step that takes ~30 ms whatever the input does."""
    out = tf1.numpy_function(sleep_30ms, [tf.reduce_sum(batch)], tf.int64, stateful=True)
    out.set_shape([])
    return out


# ---------------------------------------------------------------------------------------
# the summaries
# ---------------------------------------------------------------------------------------

def test_summaries_reach_the_events_file_with_sane_values(tmp_path):
    logdir = str(tmp_path)
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(400), tf.int64, (), batch_size=4, name="train")
        global_step = tf1.train.get_or_create_global_step()
        train_op = tf.group(tf1.assign_add(global_step, 1), tf.reduce_sum(pipe.batch))
        with tf1.train.MonitoredTrainingSession(checkpoint_dir=logdir, save_summaries_steps=1,
                                                save_checkpoint_secs=None, log_step_count_steps=None) as sess:
            for _ in range(12):
                sess.run(train_op)
    scalars = read_scalars(logdir)
    tags = tags_of(pipe)
    for tag in tags.values():
        assert tag in scalars, f"{tag} not in the events file (tags: {sorted(scalars)})"
        assert len(scalars[tag]) >= 10, (tag, scalars[tag])
    assert all(0.0 <= v <= 1.0 for v in scalars[tags["fraction"]]), scalars[tags["fraction"]]
    assert all(0.0 <= v <= 1.0 for v in scalars[tags["input"]]), scalars[tags["input"]]
    assert all(v >= 0.0 for v in scalars[tags["samples"]]), scalars[tags["samples"]]
    assert max(scalars[tags["samples"]]) > 0, scalars[tags["samples"]]


def test_running_the_summaries_alone_takes_no_batch():
    n = 60
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(ShardedRange(n), tf.int64, (), batch_size=4, workers=2)
        merged = tf1.summary.merge_all()
        with tf1.Session() as sess, queuepipe.running(sess):
            got = [sess.run(pipe.batch)]
            for _ in range(20):  # many evaluations between batches: none may dequeue
                summary = tf1.Summary.FromString(sess.run(merged))
            got.append(sess.run(pipe.batch))
            for _ in range(5):
                sess.run(merged)
            got += drain(sess, pipe.batch)
    assert sorted(rows(got)) == list(range(n))  # every row exactly once
    tags = {v.tag for v in summary.value}
    assert set(tags_of(pipe).values()) <= tags, tags


def test_every_pipeline_is_in_the_collection_and_survives_a_meta_graph_round_trip():
    with tf.Graph().as_default() as graph:
        a = queuepipe.from_generator(ShardedRange(8), tf.int64, (), batch_size=4, name="a")
        b = queuepipe.from_generator(ShardedRange(8), tf.int64, (), batch_size=4, name="b")
        assert graph.get_collection(PIPELINES_COLLECTION) == [a.stats.value, b.stats.value]
        meta = tf1.train.export_meta_graph()
    with tf.Graph().as_default() as imported:
        tf1.train.import_meta_graph(meta)
        names = [t.name for t in imported.get_collection(PIPELINES_COLLECTION)]
    assert names == [a.stats.value.name, b.stats.value.name]


# ---------------------------------------------------------------------------------------
# InputWaitHook
# ---------------------------------------------------------------------------------------

def hook_records(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "queuepipe" and "InputWaitHook" in r.getMessage()]


def test_a_slow_generator_is_input_bound(mode, caplog):
    caplog.set_level(logging.INFO, logger="queuepipe")
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(SlowRange(10_000, 0.02), tf.int64, (), batch_size=2, mode=mode,
                                        name="slow")
        step = tf.reduce_sum(pipe.batch)
        hook = queuepipe.InputWaitHook(every_n_steps=5)
        assert hook.verdict is None and hook.wait_fraction is None
        with tf1.train.SingularMonitoredSession(hooks=[hook]) as sess:
            for _ in range(11):
                sess.run(step)
    assert hook.steps == 11
    m = hook.measurements["slow"]
    assert (m.steps, m.mode, m.workers, m.includes_startup) == (5, mode, 1, False)
    assert hook.verdict == m.verdict == "input-bound"
    assert hook.wait_fraction == m.wait_fraction and INPUT_BOUND_ABOVE < m.wait_fraction <= 1.0
    assert hook.samples_per_second == m.samples_per_second > 0
    messages = hook_records(caplog)
    assert len(messages) == 2, messages  # windows: steps 1-5, 6-10
    assert all("'slow'" in s and "input-bound" in s for s in messages), messages
    assert "start-up" in messages[0] and "start-up" not in messages[1], messages
    if mode == "thread":
        assert 'mode="process"' in m.advice, m.advice
    else:
        assert "more worker processes" in m.advice and 'mode="process"' not in m.advice, m.advice


def test_a_slow_step_is_compute_bound(caplog):
    caplog.set_level(logging.INFO, logger="queuepipe")
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WholeRange(100_000), tf.int64, (), batch_size=4, name="fast")
        step = slow_step(pipe.batch)
        hook = queuepipe.InputWaitHook(every_n_steps=5)
        with tf1.train.SingularMonitoredSession(hooks=[hook]) as sess:
            for _ in range(16):
                sess.run(step)
    m = hook.measurements["fast"]
    assert not m.includes_startup
    assert hook.verdict == m.verdict == "compute-bound", m
    assert 0.0 <= hook.wait_fraction <= INPUT_BOUND_ABOVE
    assert hook.samples_per_second > 0
    messages = hook_records(caplog)
    assert len(messages) == 3, messages
    assert "compute-bound" in messages[-1] and "input-bound" not in messages[-1], messages


class CountingHook(queuepipe.InputWaitHook):
    """Records which steps the hook added fetches to."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetching_steps: List[int] = []

    def before_run(self, run_context):
        args = super().before_run(run_context)
        if args is not None:
            self.fetching_steps.append(self.steps + 1)
        return args


def test_the_hook_fetches_only_on_measuring_steps_and_starts_over_with_a_session():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WholeRange(100_000), tf.int64, (), batch_size=4)
        hook = CountingHook(every_n_steps=4, pipelines=pipe)
        for _ in range(2):  # a second session: the first window starts again at its first step
            with tf1.train.SingularMonitoredSession(hooks=[hook]) as sess:
                for _ in range(10):
                    sess.run(pipe.batch)
    assert hook.fetching_steps == [1, 5, 9, 11, 15, 19]
    assert hook.steps == 20
    assert hook.measurements[pipe.name].steps == 4


def test_the_hook_finds_every_pipeline_and_reports_an_unused_one_as_idle():
    with tf.Graph().as_default():
        used = queuepipe.from_generator(WholeRange(100_000), tf.int64, (), batch_size=4, name="used")
        queuepipe.from_generator(WholeRange(100), tf.int64, (), batch_size=4, workers=2, name="unused")
        hook = queuepipe.InputWaitHook(every_n_steps=3)
        with tf1.train.SingularMonitoredSession(hooks=[hook]) as sess:
            for _ in range(7):
                sess.run(used.batch)
    assert sorted(hook.measurements) == ["unused", "used"]
    idle = hook.measurements["unused"]
    assert (idle.verdict, idle.samples_per_second, idle.wait_fraction) == ("idle", 0.0, 0.0)
    assert (idle.mode, idle.workers) == ("thread", 2)
    assert hook.measurements["used"].samples_per_second > 0
    assert hook.bottleneck is hook.measurements["used"]  # an idle pipeline is never the bottleneck


def test_the_hook_refuses_bad_arguments():
    with pytest.raises(queuepipe.ArgumentError):
        queuepipe.InputWaitHook(every_n_steps=0)
    with pytest.raises(queuepipe.ArgumentError):
        queuepipe.InputWaitHook(input_bound_above=1.5)
    with tf.Graph().as_default():
        other = queuepipe.from_generator(WholeRange(8), tf.int64, (), batch_size=4)
    with tf.Graph().as_default():
        hook = queuepipe.InputWaitHook(pipelines=[other])
        with pytest.raises(queuepipe.ArgumentError, match="another graph"):
            hook.begin()
        with pytest.raises(queuepipe.ArgumentTypeError):
            queuepipe.InputWaitHook(pipelines=["not a pipeline"]).begin()


def test_the_hook_measures_a_staged_pipeline():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WholeRange(100_000), tf.int64, (), batch_size=4, name="staged")
        batch = pipe.staged("/cpu:0")
        hook = queuepipe.InputWaitHook(every_n_steps=3)
        with tf1.train.SingularMonitoredSession(hooks=[hook]) as sess:
            for _ in range(7):
                sess.run(batch)
    m = hook.measurements["staged"]
    assert m.verdict in ("input-bound", "compute-bound") and m.samples_per_second > 0, m


def test_the_numbers_are_plain_python_floats():
    with tf.Graph().as_default():
        pipe = queuepipe.from_generator(WholeRange(1000), tf.int64, (), batch_size=2)
        hook = queuepipe.InputWaitHook(every_n_steps=2)
        with tf1.train.SingularMonitoredSession(hooks=[hook]) as sess:
            for _ in range(3):
                sess.run(pipe.batch)
    m = hook.bottleneck
    assert type(m.wait_fraction) is float and type(m.samples_per_second) is float
    assert np.isfinite([m.wait_fraction, m.samples_per_second, m.seconds]).all()


# ---------------------------------------------------------------------------------------
# the example
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_tensorboard_example_writes_events_and_a_chart(tmp_path):
    example = os.path.join(os.path.dirname(TESTS_DIR), "examples", "tensorboard_input.py")
    proc = subprocess.run([sys.executable, example, "--logdir", str(tmp_path), "--steps", "80",
                           "--save-summaries-steps", "5", "--every-n-steps", "20"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "InputWaitHook" in proc.stderr and "bound" in proc.stderr, proc.stderr[-3000:]
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
    svg = ET.parse(tmp_path / "queuepipe_input.svg").getroot()
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text") if t.text.startswith("queue/")]
    assert sorted(titles) == ["queue/train/fraction_of_8192_full", "queue/train/input_wait_fraction",
                              "queue/train/samples_per_second"], titles
    lines = list(svg.iter("{http://www.w3.org/2000/svg}polyline"))
    assert len(lines) == 3 and all(len(line.get("points").split()) >= 10 for line in lines)
