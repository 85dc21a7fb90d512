"""objbatch: AI metadata for a transcript library through the Mistral Batch API."""

import os
import signal
import sys

__version__ = "0.2.0"


def _interrupted_while_starting(*_: object) -> None:
    """Ctrl-C before a command's own handling is in place (while Python loads it): one line, no traceback.
    Each command restores Python's handler once it runs (common.command)."""
    sys.stderr.write("interrupted; rerun the same command to resume\n")
    os._exit(130)


if "pytest" not in sys.modules:  # a command starting, not a test session importing the package
    signal.signal(signal.SIGINT, _interrupted_while_starting)
