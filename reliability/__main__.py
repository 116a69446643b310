"""``python -m reliability``: run the fault campaign (see :mod:`reliability.campaign`)."""
import sys

from .campaign import main

sys.exit(main())
