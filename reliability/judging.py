"""TF-free checks the supervisor applies to a trial's observation (values, rows, errors, timing)."""
from __future__ import annotations

import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .core import PROMPT_S, one_line


def rng_for(kind: str, seed: int) -> np.random.Generator:
    """The trial's random stream: a pure function of (kind, seed)."""
    return np.random.default_rng([zlib.crc32(kind.encode()), int(seed)])


def pick(rng: np.random.Generator, options: Sequence[Any], p: Optional[Sequence[float]] = None) -> Any:
    i = int(rng.choice(len(options), p=p))
    v = options[i]
    return v.item() if isinstance(v, np.generic) else v


def ids_text(ids: Iterable[int], limit: int = 6) -> str:
    ids = sorted(int(i) for i in ids)
    head = ", ".join(str(i) for i in ids[:limit])
    return f"[{head}{', ...' if len(ids) > limit else ''}] ({len(ids)})"


def same_value(got: Any, ref: Any, fixed_string: bool = False) -> bool:
    """Bit-exact equality of one value as queuepipe delivered it and as h5py read it.

    Numbers compare by their bits in native byte order (so NaNs from flipped bits compare too);
    fixed-length strings as numpy sees them (trailing NULs are not part of an ``S`` value)."""
    if isinstance(ref, (bytes, np.bytes_, str)) or isinstance(got, (bytes, np.bytes_)):
        g = got.encode() if isinstance(got, str) else bytes(got)
        r = ref.encode() if isinstance(ref, str) else bytes(ref)
        if fixed_string:
            g, r = g.rstrip(b"\0"), r.rstrip(b"\0")
        return g == r
    g, r = np.asarray(got), np.asarray(ref)
    if g.shape != r.shape:
        return False
    nat = r.dtype.newbyteorder("=")
    try:
        return np.ascontiguousarray(g.astype(nat)).tobytes() == np.ascontiguousarray(r.astype(nat)).tobytes()
    except (TypeError, ValueError):
        return bool(np.array_equal(g, r))


def duplicated(ids: np.ndarray) -> List[int]:
    u, c = np.unique(np.asarray(ids), return_counts=True)
    return [int(x) for x in u[c > 1]]


def error_names(err: Optional[Dict[str, Any]], needle: str) -> bool:
    return bool(err) and needle in err["message"]


def err_text(err: Dict[str, Any]) -> str:
    return f"{err['type']}: {one_line(err['message'], 160)}"


def after_failure_reasons(obs: Dict[str, Any]) -> List[str]:
    got = [a for a in obs.get("after_failure", []) if a["what"] == "batch"]
    if got:
        return [f"batches after a failure: the next sess.run returned {got[0]['rows']} rows after "
                f"'{err_text(obs['run_error'])}'"]
    return []


def run_error_reasons(obs: Dict[str, Any], needle: str, what: str = "the file") -> List[str]:
    """The error the user got from sess.run (and from running()'s exit) must name ``needle``
    and come within PROMPT_S of the call that raised it."""
    out = []
    err = obs["run_error"]
    if needle not in err["message"]:
        out.append(f"error does not name {what}: {err_text(err)}")
    if obs["run_error_blocked_s"] > PROMPT_S:
        out.append(f"error took {obs['run_error_blocked_s']:.1f} s (> {PROMPT_S:.0f} s): {err_text(err)}")
    rex = obs.get("running_exit")
    if rex and needle not in rex["message"] and not out:
        out.append(f"running() re-raised an error not naming {what}: {err_text(rex)}")
    return out


def slow_call_reasons(obs: Dict[str, Any]) -> List[str]:
    """A ``sess.run`` that blocked longer than PROMPT_S before returning a batch (the failing call is
    judged by :func:`run_error_reasons`)."""
    slow = obs.get("max_call_s", 0.0)
    if slow > PROMPT_S and not (obs.get("end") == "error" and obs.get("run_error_blocked_s", 0) >= slow):
        return [f"a sess.run blocked {slow:.1f} s (> {PROMPT_S:.0f} s) before returning"]
    return []
