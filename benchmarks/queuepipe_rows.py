"""queuepipe rows: from_hdf5 (W1, W3, W5) and from_generator (W2, W4), thread or process workers.

A pipeline that cannot be built, or fails before its first batch, makes the row
``not available: <error>`` instead of failing the run; a failure after the first batch
fails the row.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from .references import session_repeats
from .workloads import FEATURES, ProducerGen, load_rows, make_consumer


class NotAvailable(Exception):
    """Building the row's pipeline failed: the row is reported "not available"."""


def run(ctx: Dict[str, Any]) -> Dict[str, Any]:
    if ctx.get("inflate"):  # this row's own process (and its workers) only
        os.environ["QUEUEPIPE_INFLATE"] = ctx["inflate"]
    consumer = make_consumer(ctx)

    def build():
        try:
            if ctx["kind"] == "hdf5":
                from queuepipe.tools.limits import build_hdf5_pipeline
                pipe, tensors = build_hdf5_pipeline(
                    str(ctx["path"]), ["X", "y"], load_rows(ctx), batch_size=ctx["batch"],
                    workers=ctx["workers"], mode=ctx["mode"], shuffle=ctx["shuffle"],
                    num_epochs=ctx["epochs"], seed=ctx["seed"], allow_smaller_final_batch=True)
            else:
                import tensorflow as tf
                import queuepipe
                pipe = queuepipe.from_generator(
                    ProducerGen(ctx), (tf.float32, tf.int64), ((FEATURES,), ()), batch_size=ctx["batch"],
                    workers=ctx["workers"], mode=ctx["mode"], num_epochs=1, seed=ctx["seed"],
                    allow_smaller_final_batch=True)
                tensors = list(pipe.batch)
        except Exception as exc:  # noqa: BLE001 - reported as the row's status
            raise NotAvailable(f"{type(exc).__name__}: {exc}") from exc
        x, y = tensors[0], tensors[1]
        return [consumer([x, y]), y], None

    try:
        return session_repeats(ctx, build, runners="queuepipe")
    except NotAvailable as exc:
        return {"status": "not available", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "bench_batches", 0) == 0:  # failed before its first batch
            return {"status": "not available", "reason": f"{type(exc).__name__}: {exc}"}
        raise
