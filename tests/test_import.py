"""Importing queuepipe is cheap and side-effect free (checked in fresh interpreters)."""
from __future__ import annotations

import json

from helpers import describe, mode, run_python  # noqa: F401

IMPORT_WITHOUT_TF = r"""
import sys
import queuepipe
assert "tensorflow" not in sys.modules, "importing queuepipe imported tensorflow"
# the TF-free parts of the public API are usable without TensorFlow
assert queuepipe.worker_info() is None
assert issubclass(queuepipe.SpecError, queuepipe.QueuepipeError) and issubclass(queuepipe.SpecError, ValueError)
assert queuepipe.__version__
assert callable(queuepipe.from_generator) and callable(queuepipe.running)
assert "tensorflow" not in sys.modules, "touching the TF-free API imported tensorflow"
print("OK")
"""


def test_import_does_not_import_tensorflow():
    proc = run_python(IMPORT_WITHOUT_TF, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout, describe(proc)


GLOBAL_STATE = r"""
import json, sys
import tensorflow as tf
from tensorflow.python import tf2
from tensorflow.python.util import deprecation

def state():
    return {
        "executing_eagerly": tf.executing_eagerly(),
        "executing_eagerly_outside_functions": tf.compat.v1.executing_eagerly_outside_functions(),
        "tf2_enabled": tf2.enabled(),
        "print_deprecation_warnings": deprecation._PRINT_DEPRECATION_WARNINGS,
        "default_graph_ops": len(tf.compat.v1.get_default_graph().get_operations()),
        "tf_log_level": tf.get_logger().level,
    }

mode = sys.argv[1]
out = {"before": state()}
import queuepipe
out["after_import"] = state()
from sample_gens import ShardedRange
with tf.Graph().as_default():
    p = queuepipe.from_generator(ShardedRange(10), tf.int64, (), batch_size=5, workers=2, mode=mode)
    out["inside_graph"] = {"executing_eagerly": tf.executing_eagerly()}
    with tf.compat.v1.Session() as sess, queuepipe.running(sess):
        got = sorted(int(v) for _ in range(2) for v in sess.run(p.batch))
assert got == list(range(10)), got
out["after_pipeline"] = state()
print("STATE " + json.dumps(out))
"""


def test_import_and_use_do_not_change_global_tf_state(mode):
    proc = run_python(GLOBAL_STATE, mode, timeout=120)
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.split("STATE ", 1)[1])
    before = out["before"]
    assert before["executing_eagerly"] is True and before["tf2_enabled"] is True  # TF2 defaults
    assert out["after_import"] == before, "importing queuepipe changed TF's global state"
    assert out["after_pipeline"] == before, "building/running a pipeline changed TF's global state"
    assert out["inside_graph"]["executing_eagerly"] is False
