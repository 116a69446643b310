"""What the trial process and the supervisor share: limits, the stdout protocol, leak scans, and
the child-side :class:`TrialContext` (blocking-call watchdog, leak checks, result file).

TF-free: the supervisor imports it without TensorFlow.
"""
from __future__ import annotations

import faulthandler
import os
import pickle
import re
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

# -- the acceptance limits (RELIABILITY.md states them; never loosened to make a trial pass) ----------
PROMPT_S = 10.0        # errors surface, threads/children end, Ctrl-C/SIGTERM exits: within this
HANG_S = 30.0          # a blocking call this long is reported as a hang (with every thread's stack)
EXIT_HANG_S = 10.0     # the interpreter must exit this soon after the trial wrote its result
HANG_EXIT_CODE = 97    # the trial process's exit code after its watchdog reported a hang

TOKEN_ENV = "QUEUEPIPE_RELIABILITY_TOKEN"   # every process of a trial inherits it (leak scan)
EVENT = "@@reliability"                     # stdout protocol: "@@reliability NAME MONOTONIC [TEXT]"
CRASH_SIGNALS = {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGSYS", "SIGTRAP"}


# ---------------------------------------------------------------------------------------------
# process / thread / shm scans (Linux /proc)
# ---------------------------------------------------------------------------------------------

def _stat(pid: int) -> Optional[Tuple[str, int]]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def children(pid: Optional[int] = None) -> List[Tuple[int, str]]:
    """Live (non-zombie) children of ``pid`` (default: this process), as tests/conftest.py counts them."""
    me = os.getpid() if pid is None else pid
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st and st[1] == me and st[0] != "Z":
            cmd = cmdline(int(name))
            if "resource_tracker" not in cmd and "forkserver" not in cmd:
                kids.append((int(name), cmd))
    return kids


def worker_children() -> List[int]:
    """queuepipe worker processes that are children of this process."""
    return [pid for pid, cmd in children() if "queuepipe.workers.process.child" in cmd]


def processes_with_token(token: str) -> List[Tuple[int, str]]:
    """Live processes whose environment carries ``token`` (a trial's whole process tree)."""
    needle = f"{TOKEN_ENV}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            st = _stat(int(name))
            if st and st[0] != "Z":
                found.append((int(name), cmdline(int(name))))
    return found


def is_campaign_shm(name: str) -> bool:
    return "queuepipe" in name or name.startswith("psm_")


def shm_entries() -> set:
    try:
        return {n for n in os.listdir("/dev/shm") if is_campaign_shm(n)}
    except OSError:
        return set()


def shm_held_by(pid: int) -> set:
    """/dev/shm names ``pid`` maps or holds open."""
    names = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                at = line.find("/dev/shm/")
                if at >= 0:
                    names.add(line[at + 9:].split()[0])
    except OSError:
        pass
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/dev/shm/"):
                names.add(target[9:].split()[0])
    except OSError:
        pass
    return {n for n in names if is_campaign_shm(n)}


def shm_held_by_anyone() -> set:
    held = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            held |= shm_held_by(int(name))
    return held


def queuepipe_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("queuepipe")]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------------------------
# stack dumps (faulthandler text) -> one line
# ---------------------------------------------------------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')
_HEADER = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-f]+(?: \(([^)]*)\))?", re.M)


def _where(path: str) -> str:
    for pkg in ("queuepipe", "h5py", "tensorflow", "reliability"):
        if f"/{pkg}/" in path:
            return pkg
    return "python"


def summarize_stacks(text: str) -> str:
    """One line from a stack dump (faulthandler's, or :func:`python_stacks`'): where the main thread
    waits (its innermost frame and the first frame of our code calling it) and where the other
    threads with queuepipe or h5py frames are."""
    heads = list(_HEADER.finditer(text))
    stacks = []
    for i, h in enumerate(heads):
        body = text[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        fr = _FRAME.findall(body)
        if fr:
            name = h.group(1) or ""
            stacks.append(("" if name == "most recent call first" else name, fr))
    if not stacks:
        return ""
    main = next((s for s in stacks if s[0] == "MainThread"), None) or \
        next((s for s in stacks if any(fn == "<module>" for _, _, fn in s[1])), stacks[0])

    def frame(f) -> str:
        return f"{os.path.basename(f[0])}:{f[1]} {f[2]}"

    fr = main[1]
    inner = fr[0]
    caller = next((f for f in fr if _where(f[0]) in ("reliability", "queuepipe") and f is not inner
                   and not f[0].endswith("reliability/core.py")), None)
    out = f"main thread in {_where(inner[0])} {frame(inner)}" + (f" (from {frame(caller)})" if caller else "")
    others = []
    for name, fr in stacks:
        if fr is main[1]:
            continue
        ours = [f for f in fr if _where(f[0]) in ("queuepipe", "h5py")]
        if ours:
            label = f"{name}: " if name else ""
            others.append(label + " <- ".join(frame(f) for f in ours[:2]))
    if others:
        out += "; other threads: " + " | ".join(sorted(set(others))[:3])
    return out


def python_stacks() -> str:
    """Every thread's Python stack, in faulthandler's format (for :func:`summarize_stacks`)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        out.append(f"Thread 0x{ident:x} ({names.get(ident, '?')}) (most recent call first):")
        for fs in reversed(traceback.extract_stack(frame)):
            out.append(f'  File "{fs.filename}", line {fs.lineno} in {fs.name}')
        out.append("")
    return "\n".join(out)


def describe_exc(exc: BaseException) -> Dict[str, Any]:
    """A picklable record of an exception: type, module, message (OpError: its .message)."""
    msg = getattr(exc, "message", None)
    if not isinstance(msg, str):
        msg = str(exc)
    return {"type": type(exc).__name__, "module": type(exc).__module__, "message": msg,
            "mro": [c.__name__ for c in type(exc).__mro__]}


def one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# the trial process's side
# ---------------------------------------------------------------------------------------------

def emit(name: str, text: str = "") -> float:
    """Tell the supervisor (stdout line) that ``name`` happened now; returns the monotonic time."""
    t = time.monotonic()
    sys.stdout.write(f"{EVENT} {name} {t:.6f} {text}\n")
    sys.stdout.flush()
    return t


class Hang(Exception):
    pass


class TrialContext:
    """Given to a kind's ``observe``: records what happened, watches blocking calls, writes the result.

    ``obs`` is the observation dict the kind fills; it is pickled to ``result_path`` at the end --
    or by the watchdog when a blocking call exceeds its limit (then the process exits with
    :data:`HANG_EXIT_CODE`, so a hang is reported with the stacks, never waited out)."""

    def __init__(self, result_path: str, workdir: str):
        self.result_path = result_path
        self.workdir = workdir
        self.obs: Dict[str, Any] = {"events": [], "calls": 0}
        self._blocking: Optional[Tuple[str, float, float]] = None
        self._lock = threading.Lock()
        self._written = False
        self._watchdog = threading.Thread(target=self._watch, name="reliability-watchdog", daemon=True)
        self._watchdog.start()

    # -- time and events
    def event(self, name: str, **info: Any) -> float:
        t = time.monotonic()
        self.obs["events"].append((round(t, 6), name, info))
        return t

    # -- blocking sections
    @contextmanager
    def blocking(self, label: str, limit: float = HANG_S) -> Iterator[None]:
        with self._lock:
            self._blocking = (label, time.monotonic(), limit)
        try:
            yield
        finally:
            with self._lock:
                self._blocking = None

    def _watch(self) -> None:
        while True:
            time.sleep(0.1)
            with self._lock:
                b = self._blocking
            if b is None:
                continue
            label, started, limit = b
            if time.monotonic() - started > limit:
                stacks = python_stacks()
                self.obs["hang"] = {"label": label, "after_s": round(time.monotonic() - started, 2),
                                    "stacks": stacks, "summary": summarize_stacks(stacks)}
                self.write()
                sys.stderr.write(f"reliability watchdog: {label} blocked > {limit:.0f}s\n{stacks}\n")
                sys.stderr.flush()
                os._exit(HANG_EXIT_CODE)

    def run(self, sess: Any, fetch: Any, label: str = "sess.run", limit: float = HANG_S, **kw: Any) -> Any:
        """``sess.run(fetch)`` under the watchdog; records how long it blocked."""
        t = time.monotonic()
        with self.blocking(label, limit):
            try:
                return sess.run(fetch, **kw)
            finally:
                self.obs["calls"] += 1
                self.obs["last_call_s"] = round(time.monotonic() - t, 4)
                self.obs["max_call_s"] = max(self.obs.get("max_call_s", 0.0), self.obs["last_call_s"])

    # -- leak checks
    def wait_no_leaks(self, deadline: Optional[float] = None, label: str = "10 s after the session closed") -> Dict[str, Any]:
        """Wait (until ``deadline``, monotonic; default now + PROMPT_S) for every queuepipe thread and
        worker child of this process to end; returns what was left and how long it took."""
        start = time.monotonic()
        deadline = start + PROMPT_S if deadline is None else deadline
        while time.monotonic() < deadline and (queuepipe_threads() or children()):
            time.sleep(0.02)
        left = {"label": label, "waited_s": round(time.monotonic() - start, 3),
                "threads": queuepipe_threads(), "children": children()}
        self.obs.setdefault("leak_checks", []).append(left)
        return left

    # -- result
    def write(self) -> None:
        with self._lock:
            tmp = self.result_path + ".tmp"
            with open(tmp, "wb") as f:
                pickle.dump(self.obs, f)
            os.replace(tmp, self.result_path)
            self._written = True


def child_setup(stderr_dump: bool = True) -> None:
    """Crash and on-demand stack dumps for the trial process (SIGUSR1: every thread's stack)."""
    import signal

    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    # A trial is a program started the usual way, where Ctrl-C raises KeyboardInterrupt.  A
    # campaign started in the background from a non-interactive shell (``... &``) passes
    # SIGINT on *ignored* (POSIX: asynchronous commands without job control), and Python then
    # installs no handler: every SIGINT trial would "hang" for the harness's sake.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
