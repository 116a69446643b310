"""``python -m queuepipe demo`` / ``python -m queuepipe bench ...``."""
import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
