"""The ``queuepipe`` command: ``queuepipe demo`` and ``queuepipe bench FILE.h5 ...``."""
from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """usage: queuepipe COMMAND [options]

commands:
  demo     train a small TF1 model on synthetic data: feed_dict vs queuepipe, 1..N workers
  bench    measure your own HDF5 file through from_hdf5 (queuepipe bench FILE.h5 --datasets X,y)
"""


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import main as demo_main
        return demo_main(rest)
    if command == "bench":
        from .bench import main as bench_main
        return bench_main(rest)
    print(f"queuepipe: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
