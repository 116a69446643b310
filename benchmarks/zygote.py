"""A fork server: import TensorFlow once, then run every benchmark row in a fresh forked child.

Importing TF costs ~3-4 s on the 2-core VM; a fresh interpreter per row would spend
minutes on imports.  A child forked from a process that has imported TF but never
created a session or a thread pool is as clean as a new interpreter for our purpose,
and its peak RSS (``ru_maxrss``) is its own.  ``--isolation spawn`` in benchmarks.run
starts one server per row instead (same protocol) if fork ever misbehaves.

Protocol (JSON lines): the server prints ``{"ready": ..., "errors": {...}}`` once its
preloads are imported, then for each request line
``{"func": "module:function", "ctx": {...}, "log": PATH, "result": PATH, "timeout": S}``
prints one response: the function's dict plus ``rss_mb`` (the row process's peak RSS),
``worker_rss_mb`` (the largest of its child processes, if any) and ``wall_s``.

Run: ``python -m benchmarks.zygote --preload tensorflow,h5py`` (in any virtualenv whose
``sys.path`` reaches this repository).  The client end, :class:`Zygote` (one server) and
:class:`Runner` (the servers of one run: the main venv's and the peers'), is used by
benchmarks.run.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------
# The server: forks one child per request
# --------------------------------------------------------------------------------------


def _child(req: Dict[str, Any]) -> None:
    """In the forked child: run the row, write its result file, never return."""
    code = 1
    try:
        os.setpgid(0, 0)
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        try:
            mod, fn = req["func"].split(":")
            out = getattr(importlib.import_module(mod), fn)(req["ctx"])
        except BaseException as exc:  # noqa: BLE001 - the row's error is its result
            traceback.print_exc()
            out = {"status": "error", "reason": f"{type(exc).__name__}: {exc}".strip()[:500]}
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out["worker_rss_mb"] = kids or None
        tmp = req["result"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, default=float)
        os.replace(tmp, req["result"])
        code = 0
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve_one(req: Dict[str, Any]) -> Dict[str, Any]:
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(req)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child did it first
    deadline = t0 + float(req.get("timeout", 600))
    timed_out = False
    try:
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                _kill_group(pid)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
    except BaseException:  # Ctrl-C or the client gone: take the row (in its own group) down too
        _kill_group(pid)
        raise
    wall = time.monotonic() - t0
    leftover = _kill_group(pid)  # anything the row left running (a leak worth reporting)
    try:
        with open(req["result"]) as f:
            out = json.load(f)
    except (OSError, ValueError):
        why = (f"timed out after {req.get('timeout')} s" if timed_out
               else f"row process died ({_describe(status)}); see {req['log']}")
        out = {"status": "error", "reason": why}
    out["wall_s"] = wall
    if leftover:
        out["leftover_processes"] = True
    return out


def _kill_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def versions() -> Dict[str, str]:
    """Versions of the interesting packages in this interpreter (not importing any)."""
    import platform
    from importlib import metadata
    out = {"python": platform.python_version()}
    for name in ("tensorflow", "numpy", "h5py", "queuepipe", "tensorpack", "tftables", "multitables", "tables",
                 "wrapt"):
        mod = sys.modules.get(name)
        for dist in (name, name + "-cpu") if name == "tensorflow" else (name,):
            if mod is not None and getattr(mod, "__version__", None):
                out[name] = str(mod.__version__)
                break
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                pass
    h5 = sys.modules.get("h5py")
    if h5 is not None:
        out["hdf5"] = h5.version.hdf5_version
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--preload", default="", help="comma-separated modules to import before serving")
    args = p.parse_args(argv)
    # SIGTERM from the client: leave through the exception path, which kills the row's group
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    errors = {}
    for name in filter(None, args.preload.split(",")):
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - reported to the client
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
    proto = sys.stdout
    sys.stdout = sys.stderr  # only protocol lines on the real stdout
    ready = {"ready": True, "pid": os.getpid(), "errors": errors, "versions": versions()}
    proto.write(json.dumps(ready) + "\n")
    proto.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        resp = serve_one(json.loads(line))
        proto.write(json.dumps(resp, default=float) + "\n")
        proto.flush()
    return 0


# --------------------------------------------------------------------------------------
# The client: benchmarks.run's end of the protocol
# --------------------------------------------------------------------------------------


class Zygote:
    """A benchmarks.zygote process under some python; ``run`` forks one row in it."""

    def __init__(self, python: str, preload: str, log_dir: Path, name: str):
        self.python, self.preload, self.log_dir, self.name = python, preload, log_dir, name
        self.proc: Optional[subprocess.Popen] = None
        self.ready: Dict[str, Any] = {}

    def start(self) -> Dict[str, Any]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        err = open(self.log_dir / f"zygote-{self.name}.log", "ab")
        self.proc = subprocess.Popen([self.python, "-m", "benchmarks.zygote", "--preload", self.preload],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=str(REPO),
                                     env=env, text=True, bufsize=1)
        err.close()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"{self.python} -m benchmarks.zygote exited ({code}); "
                               f"see {self.log_dir / f'zygote-{self.name}.log'}")
        self.ready = json.loads(line)
        return self.ready

    def run(self, func: str, ctx: Dict[str, Any], timeout: float, tag: str) -> Dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
        req = {"func": func, "ctx": ctx, "timeout": timeout, "log": str(self.log_dir / f"{safe}.log"),
               "result": str(self.log_dir / f"{safe}.json")}
        try:
            os.unlink(req["result"])
        except FileNotFoundError:
            pass
        self.proc.stdin.write(json.dumps(req, default=str) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            return {"status": "error", "reason": f"fork server died; see {req['log']}"}
        return json.loads(line)

    def close(self, abort: bool = False) -> None:
        """Let the server finish and exit; ``abort``: stop it now, with the row it is running."""
        if self.proc is not None:
            if abort and self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Runner:
    """Runs rows under the main venv or the peers' venv, forked (default) or one server per row."""

    def __init__(self, log_dir: Path, isolation: str, peers_python: Optional[str]):
        self.log_dir, self.isolation, self.peers_python = log_dir, isolation, peers_python
        self.servers: Dict[str, Zygote] = {}

    def _server(self, side: str) -> Zygote:
        if side not in self.servers:
            if side == "main":
                z = Zygote(sys.executable, "tensorflow,h5py,numpy,queuepipe,queuepipe.tf.session", self.log_dir,
                           "main")
            else:
                z = Zygote(self.peers_python, "tensorflow,h5py,numpy", self.log_dir, "peers")
            z.start()
            self.servers[side] = z
        return self.servers[side]

    def run(self, side: str, func: str, ctx: Dict[str, Any], timeout: float, tag: str) -> Dict[str, Any]:
        server = self._server(side)
        try:
            return server.run(func, ctx, timeout, tag)
        finally:
            if self.isolation == "spawn":
                server.close()
                del self.servers[side]

    def versions(self, side: str) -> Dict[str, Any]:
        return self._server(side).ready.get("versions", {})

    def close(self, abort: bool = False) -> None:
        for z in self.servers.values():
            z.close(abort)
        self.servers.clear()


if __name__ == "__main__":
    sys.exit(main())
