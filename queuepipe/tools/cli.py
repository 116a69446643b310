"""The ``queuepipe`` command: ``queuepipe demo``, ``queuepipe bench FILE.h5 ...`` and ``queuepipe doctor PATH``."""
from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """usage: queuepipe COMMAND [options]

commands:
  demo     train a small TF1 model on synthetic data: feed_dict vs queuepipe, 1..N workers
  bench    measure your own HDF5 file through from_hdf5 (queuepipe bench FILE.h5 --datasets X,y
           [--plot rates.svg]): rates, a verdict and advice
  doctor   list the TF1 input code of a codebase with its queuepipe replacement, and classic
           pitfalls (queuepipe doctor PATH... [--strict]); reads files with ast, never runs them

TensorFlow's C++ log is quiet (TF_CPP_MIN_LOG_LEVEL=2) unless you set TF_CPP_MIN_LOG_LEVEL yourself.
"""


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``queuepipe COMMAND``; returns the exit status.

    The command is a program, not the library: before demo or bench can import TensorFlow,
    it sets TF's C++ log level (unless the user set one) so a normal run prints no INFO notices
    and no warnings about ops cancelled at shutdown (:mod:`queuepipe.tools.quiet`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in ("demo", "bench"):
        from .quiet import quiet_tensorflow_logs
        quiet_tensorflow_logs()
    if command == "demo":
        from .demo import main as demo_main
        return demo_main(rest)
    if command == "bench":
        from .bench import main as bench_main
        return bench_main(rest)
    if command == "doctor":  # reads code with ast: imports no TensorFlow, so no log level to set
        from .doctor import main as doctor_main
        return doctor_main(rest)
    print(f"queuepipe: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
