"""``in_processes``: run a row's producer in several forked processes started together.

The harness forks on purpose: a row process (itself forked by benchmarks.zygote) calls
this before it creates any TensorFlow session or thread pool, so a fork is as clean as a
fresh interpreter and costs no imports.  The queuepipe package never forks; its own
limit-read runs extra processes as fresh interpreters (queuepipe.tools.limits).
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Tuple


def in_processes(fn: Callable[[int, int], int], parts: int) -> Tuple[int, float]:
    """Run ``fn(part, parts) -> rows`` in ``parts`` forked processes started together;
    returns (total rows, seconds from the common start to the last finish).

    Fork, so call it before any TensorFlow session or thread pool exists in this process.
    ``parts == 1`` runs ``fn`` here.  A child's exception is raised as a ``RuntimeError``."""
    if parts == 1:
        t0 = time.perf_counter()
        rows = fn(0, 1)
        return rows, time.perf_counter() - t0
    go_r, go_w = os.pipe()
    kids = []
    for k in range(parts):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(r)
                os.close(go_w)
                os.read(go_r, 1)
                t0 = time.monotonic()
                got = fn(k, parts)
                t1 = time.monotonic()
                os.write(w, json.dumps([t0, t1, got]).encode())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                os.write(w, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        kids.append((pid, r))
    os.close(go_r)
    os.write(go_w, b"g" * parts)
    os.close(go_w)
    results = []
    for pid, r in kids:
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        os.waitpid(pid, 0)
        results.append(json.loads(b"".join(chunks) or b'{"error": "child died"}'))
    errors = [x["error"] for x in results if isinstance(x, dict)]
    if errors:
        raise RuntimeError("; ".join(errors))
    start = min(x[0] for x in results)
    end = max(x[1] for x in results)
    return sum(x[2] for x in results), end - start
