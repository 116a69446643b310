"""The two stops no thread of a run sees by itself: Ctrl-C in a blocked ``sess.run``, and interpreter exit.

**Ctrl-C.**  Python runs its SIGINT handler (``KeyboardInterrupt``) only in the main thread,
between bytecodes.  A main thread blocked in ``sess.run`` on an empty queue (a worker stuck
in I/O, a generator that never yields) runs none, so Ctrl-C would do nothing until the
queue gets a batch -- maybe never (TF1's own queue runners behave the same).  So when the
queue runners are started from the main thread, SIGINT's handler is Python's default and no
wakeup fd is installed, queuepipe installs two things until the last run ends:

* ``signal.set_wakeup_fd`` on a pipe that a listener thread (``queuepipe-interrupt``) reads:
  the C-level handler writes each signal's number there, from whatever thread it runs in.
  On SIGINT the listener gives the main thread :data:`GRACE_SECONDS` to run the handler
  itself (between steps it does, and its pipelines go on).  If it has not, it is blocked in
  C: the listener stops every registered run and closes its queue with
  ``cancel_pending_enqueues``, so the waiting dequeue fails at once and ``sess.run`` returns.
  That session's queue stays closed (TF queues do not reopen); a new session starts a fresh
  run.  (A step that computes for longer than the grace when Ctrl-C comes ends its
  pipelines the same way; the ``KeyboardInterrupt`` follows when the step returns.)
* SIGINT's handler becomes :func:`_on_sigint`: Python's default (``KeyboardInterrupt``),
  except while TF builds the error of a failed ``sess.run``.  TF's pybind11 layer creates
  that exception by calling its Python class, the first Python code the main thread runs
  after the failed C call, so the pending handler runs in there; a ``KeyboardInterrupt``
  raised there makes pybind11 raise ``RuntimeError: ... MISMATCH of original and normalized
  active exception types`` instead of either.  So the handler then raises it a moment later,
  from a profile function of the main thread, at the first event past TF's error code: where
  ``sess.run``'s C call failed.  (Under a profiler of the user's, e.g. cProfile, the handler
  cannot set its own: then the ``RuntimeError`` naming the ``KeyboardInterrupt`` is raised.)

The main thread puts both back (``running()`` exit, interpreter exit) once no run is left.
Limits: a wakeup fd set by someone else (asyncio's ``add_signal_handler``) or a SIGINT handler
of the user's own is left alone and this feature is off; a wakeup fd or handler set after ours
replaces it (ours is then off, theirs works).

**Interpreter exit.**  Daemon enqueue threads are frozen where they stand once the
interpreter finalizes; one frozen inside an h5py read holds h5py's global lock, and
finalization, which deallocates h5py objects under that lock, then waits forever.  An
``atexit`` hook (atexit callbacks run before daemon threads are frozen) stops every run still
going and joins its threads for up to :data:`EXIT_JOIN_SECONDS`: a thread in the middle of a
read finishes it and then sees the stop.

See DESIGN.md, "Shutdown".
"""
from __future__ import annotations

import atexit
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

log = logging.getLogger("queuepipe")

GRACE_SECONDS = 0.2        # time the main thread has to take a Ctrl-C itself before queues are closed
EXIT_JOIN_SECONDS = 5.0    # at interpreter exit, the longest wait for the runs' threads to end
_WAKE = 0                  # a byte no signal writes: "look at the registry again"
_TF_ERRORS = os.path.join("framework", "errors_impl.py")


class _Armed:
    """One registered run: what stopping it takes (its runner's cancel op, in its session)."""

    def __init__(self, runner, sess, run, threads: List[threading.Thread]):
        self.runner = runner
        self.sess = sess
        self.run = run
        self.threads = threads

    def stop(self) -> None:
        """Set the run's stop event and close its queue, cancelling pending enqueues: a
        dequeue waiting on the empty queue fails at once."""
        self.run.stop.set()
        try:
            self.runner.cancel(self.sess)
        except Exception:  # noqa: BLE001 - the session is closed already: nothing waits on it
            pass


_lock = threading.Lock()
_runs: Dict[int, _Armed] = {}              # id(run) -> the run, while its watcher runs
_pipe: Optional[Tuple[int, int]] = None    # (read, write) ends of our wakeup fd, while installed
_listener: Optional[threading.Thread] = None
_handled_at = float("-inf")                # when the main thread last ran _on_sigint


def _on_sigint(signum, frame) -> None:
    """SIGINT's handler while queuepipe's listener is installed: Python's default, raising
    ``KeyboardInterrupt`` -- except while TF builds the exception of a failed run (raised
    there, pybind11 would turn both into a ``RuntimeError``): then it is raised by
    :func:`_interrupt_outside_tf_error` at the first profile event past TF's error code, i.e.
    where ``sess.run``'s C call failed; the ``OpError`` becomes its ``__context__``."""
    global _handled_at
    _handled_at = time.monotonic()
    if _inside_tf_error(frame) and sys.getprofile() is None:  # (a profiler of the user's stays:
        sys.setprofile(_interrupt_outside_tf_error)            # then pybind11's RuntimeError it is)
        return
    signal.default_int_handler(signum, frame)


def _interrupt_outside_tf_error(frame, event, arg) -> None:
    """Profile function of the main thread while a Ctrl-C waits for TF's error code to end:
    raise the ``KeyboardInterrupt`` at the first event outside it (and profile no more)."""
    if _inside_tf_error(frame):
        return
    sys.setprofile(None)
    raise KeyboardInterrupt


def _inside_tf_error(frame) -> bool:
    """Whether ``frame`` or a caller is TF's ``errors_impl`` (an ``OpError`` being built)."""
    depth = 0
    while frame is not None and depth < 50:
        if frame.f_code.co_filename.endswith(_TF_ERRORS):
            return True
        frame, depth = frame.f_back, depth + 1
    return False


def install_from_main_thread() -> bool:
    """Install queuepipe's wakeup fd and SIGINT handler, if this is the main thread, SIGINT's
    handler is Python's default and no wakeup fd is set; True if they are installed (now or
    before).

    Called by :meth:`.runner.PipelineQueueRunner.create_threads`: queue runners are usually
    started from the main thread, the only one that may call ``signal.set_wakeup_fd``."""
    global _pipe
    if threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        if _pipe is not None:
            return signal.getsignal(signal.SIGINT) is _on_sigint
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return False  # the user's own handler (or SIG_IGN) decides what Ctrl-C does
        r, w = os.pipe()  # non-inheritable: no child process gets them
        os.set_blocking(r, False)
        os.set_blocking(w, False)  # set_wakeup_fd requires it; a full pipe just drops bytes
        try:
            previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            os.close(r)
            os.close(w)
            log.debug("queuepipe: no Ctrl-C listener (%s)", exc)
            return False
        if previous != -1:  # someone else's (asyncio): put it back, do without ours
            signal.set_wakeup_fd(previous)
            os.close(r)
            os.close(w)
            log.debug("queuepipe: another signal wakeup fd (%d) is installed: no Ctrl-C listener", previous)
            return False
        signal.signal(signal.SIGINT, _on_sigint)
        _pipe = (r, w)
        return True


def register(runner, sess, run, threads: List[threading.Thread]) -> None:
    """A run's watcher starts: let Ctrl-C and interpreter exit stop it (``threads``: the
    run's enqueue threads and its watcher, which interpreter exit joins)."""
    global _listener
    with _lock:
        _runs[id(run)] = _Armed(runner, sess, run, threads)
        if _pipe is not None and _listener is None:
            _drain(_pipe[0])  # signals from before this run are not for it
            _listener = threading.Thread(target=_listen, args=(_pipe[0],), name="queuepipe-interrupt",
                                         daemon=True)
            _listener.start()


def unregister(run) -> None:
    """A run's watcher ends: forget the run; the listener ends with the last run."""
    with _lock:
        _runs.pop(id(run), None)
        if not _runs and _listener is not None and _pipe is not None:
            _poke(_pipe[1])


def release_from_main_thread() -> None:
    """Put back SIGINT's default handler and remove queuepipe's wakeup fd when no run is left
    (main thread only: elsewhere, and while a run goes on, nothing happens).  Called by
    ``running()`` on exit and at interpreter exit.  A handler or wakeup fd installed by
    someone else since stays."""
    global _pipe
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if _pipe is None or _runs:
            return
        r, w = _pipe
        _pipe = None
        if signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        current = signal.set_wakeup_fd(-1)
        listener = _listener
        if listener is not None:
            _poke(w)
    if current != w:  # replaced by someone else since: theirs stays, and ours stays open
        signal.set_wakeup_fd(current)  # (they may put it back later: never a stale fd)
        return
    if listener is not None:
        listener.join()  # it ends promptly: no run is left and it was poked
    os.close(r)
    os.close(w)


def _poke(w: int) -> None:
    try:
        os.write(w, bytes([_WAKE]))
    except OSError:  # full: the listener has plenty to read already
        pass


def _drain(r: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(r, 512)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _listen(r: int) -> None:
    """The listener thread: act on each SIGINT the wakeup fd reports; end with the last run."""
    global _listener
    while True:
        select.select([r], [], [])
        got = _drain(r)
        if signal.SIGINT in got and signal.getsignal(signal.SIGINT) is _on_sigint:
            try:
                _on_interrupt(time.monotonic())
            except Exception:  # noqa: BLE001 - never let the listener die silently mid-run
                log.exception("queuepipe: handling Ctrl-C failed")
        with _lock:
            if not _runs or _pipe is None:
                _listener = None
                return


def _main_thread_took_it(seen: float, grace: float) -> bool:
    """Whether the main thread ran SIGINT's handler around ``seen`` (when the listener read
    the signal), waiting up to ``grace`` seconds for it."""
    deadline = seen + grace
    while True:
        if _handled_at >= seen - grace:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _on_interrupt(seen: float) -> None:
    """Ctrl-C: if the main thread does not take it, stop every registered run and close its queue."""
    if _main_thread_took_it(seen, GRACE_SECONDS):
        return
    with _lock:
        armed = list(_runs.values())
    if armed:
        log.info("queuepipe: Ctrl-C while the main thread waits in TensorFlow: closing %d pipeline "
                 "queue(s) so that it returns", len(armed))
    for one in armed:
        one.stop()


@atexit.register
def _stop_runs_at_exit() -> None:
    """At interpreter exit, stop every run still going and join its threads (bounded), so
    no daemon thread is frozen mid-read holding h5py's global lock, which finalization
    would then wait for forever."""
    with _lock:
        armed = list(_runs.values())
    for one in armed:
        one.stop()
    deadline = time.monotonic() + EXIT_JOIN_SECONDS
    for one in armed:
        for t in one.threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for one in armed for t in one.threads if t.is_alive()]
    if left:
        log.warning("queuepipe: at exit, %d thread(s) still busy after %.0fs (user code that does not "
                    "return?): %s", len(left), EXIT_JOIN_SECONDS, ", ".join(left))
        if _h5py_lock_held_elsewhere():
            # A worker stuck inside HDF5 (a damaged file can hang HDF5 itself) holds h5py's
            # lock for good: finalization would wait for it forever.  A program must exit.
            log.error("queuepipe: a worker thread is stuck inside HDF5 holding h5py's lock; "
                      "ending the process now (exit status 1) instead of hanging in interpreter "
                      "shutdown. mode='process' workers can be killed instead.")
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(1)
    release_from_main_thread()


def _h5py_lock_held_elsewhere() -> bool:
    """Whether another thread holds h5py's global lock now (and for a second more)."""
    objects = sys.modules.get("h5py._objects")
    lock = getattr(objects, "phil", None)
    if lock is None:
        return False
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if lock.acquire(False):
            lock.release()
            return False
        time.sleep(0.05)
    return True


def _forget_in_child() -> None:
    """After ``os.fork()``: the child has no listener and must not write its signals into
    the parent's pipe (nor stop the parent's pipelines); SIGINT's handler is the default again."""
    global _pipe, _listener, _lock
    _lock = threading.Lock()
    _runs.clear()
    _listener = None
    if _pipe is not None:
        try:
            current = signal.set_wakeup_fd(-1)
            if current != _pipe[1]:
                signal.set_wakeup_fd(current)
            if signal.getsignal(signal.SIGINT) is _on_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        except (ValueError, OSError):  # forked from another thread than the main one
            pass
        _pipe = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
