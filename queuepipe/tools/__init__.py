"""The ``queuepipe`` command and its tools: ``demo``, ``bench``, and (in ``limits``) the
reference limits (limit-read, limit-consumer) that ``bench`` and the repository's harness
measure against.  Nothing in the library imports this package."""
