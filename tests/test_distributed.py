"""TensorFlow's own distributed runtime: sessions on a tf.compat.v1.train.Server, one shard per worker.

Between-graph replication: every worker process builds its own graph with its own shard of the
data (``from_hdf5(..., shard=(task_index, num_tasks))``) under ``replica_device_setter`` and runs
it in a session on its own server.  The shards must be disjoint and cover the selection.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import tensorflow as tf

import queuepipe

tf1 = tf.compat.v1
pytestmark = pytest.mark.timeout(150)


def _write_file(path, n):
    with h5py.File(path, "w") as f:
        f.create_dataset("y", data=np.arange(n, dtype=np.int64), chunks=(64,))
        f.create_dataset("X", data=np.arange(n * 4, dtype=np.float32).reshape(n, 4), chunks=(64, 4))


def _free_ports(k):
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_pipeline_runs_in_a_session_on_a_server(tmp_path):
    path = str(tmp_path / "d.h5")
    _write_file(path, 1000)
    server = tf1.train.Server.create_local_server()
    with tf.Graph().as_default():
        pipe = queuepipe.from_hdf5(path, ("X", "y"), batch_size=32, workers=2,
                                   allow_smaller_final_batch=True)
        with tf1.train.MonitoredTrainingSession(master=server.target) as sess:
            seen = []
            while not sess.should_stop():
                X, y = sess.run(pipe.batch)
                assert (X[:, 0] == 4 * y).all()
                seen.extend(y.tolist())
    assert sorted(seen) == list(range(1000))


WORKER = textwrap.dedent("""
    import json, sys
    import tensorflow as tf, queuepipe
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    cluster_def, task, path, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cluster = tf1.train.ClusterSpec(cluster_def)
    server = tf1.train.Server(cluster, job_name="worker", task_index=task)
    with tf1.device(tf1.train.replica_device_setter(worker_device=f"/job:worker/task:{task}", cluster=cluster)):
        pipe = queuepipe.from_hdf5(path, "y", rows=slice(0, 900), shard=(task, 2), batch_size=16,
                                   workers=2, mode="thread", allow_smaller_final_batch=True)
        total = tf.reduce_sum(pipe.batch)
    assert pipe.queue.queue_ref.device.startswith(f"/job:worker/task:{task}"), pipe.queue.queue_ref.device
    seen = []
    with tf1.Session(server.target) as sess, queuepipe.running(sess):
        try:
            while True:
                y, _ = sess.run([pipe.batch, total])
                seen.extend(y.tolist())
        except tf.errors.OutOfRangeError:
            pass
    json.dump(seen, open(out, "w"))
""")


def test_between_graph_replication_shards_are_disjoint_and_cover_the_selection(tmp_path):
    path = str(tmp_path / "d.h5")
    _write_file(path, 1000)
    ports = _free_ports(3)
    cluster = {"ps": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{p}" for p in ports[1:]]}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ps = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, tensorflow as tf
        tf1 = tf.compat.v1
        server = tf1.train.Server(tf1.train.ClusterSpec(json.loads({json.dumps(json.dumps(cluster))})),
                                  job_name="ps", task_index=0)
        server.join()
    """)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        outs = [str(tmp_path / f"seen{i}.json") for i in range(2)]
        logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]  # files: TF logs a lot, pipes fill
        workers = [subprocess.Popen([sys.executable, str(script), json.dumps(cluster), str(i), path, outs[i]],
                                    stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
        try:
            for i, w in enumerate(workers):
                w.wait(timeout=120)
                assert w.returncode == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
            for f in logs:
                f.close()
    finally:
        ps.kill()
        ps.wait()
    shards = [json.load(open(o)) for o in outs]
    assert all(len(s) == 450 for s in shards), [len(s) for s in shards]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(900))
