"""The defaults make and the commands share, written once in defaults.mk beside this module: the Makefile
includes that file, and this module reads it, so `make batch` and `batch-wait` mean the same POLL."""

from __future__ import annotations

import re
from pathlib import Path

FILE = Path(__file__).with_name("defaults.mk")
LINE = re.compile(r"DEFAULT_([A-Z_]+) = (\S*)")


def read(path: Path = FILE) -> dict[str, str]:
    """Every `DEFAULT_NAME = value` of the file, by NAME; comments and blank lines skipped."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            match = LINE.fullmatch(line.rstrip())
            if not match:
                raise ValueError(f"{path}: {line!r} is not a `DEFAULT_NAME = value` line")
            values[match[1]] = match[2]
    return values


VALUES = read()
DB: str = VALUES["DB"]
RUNS: str = VALUES["RUNS"]
MODEL: str = VALUES["MODEL"]
POLL = float(VALUES["POLL"])
TIMEOUT = float(VALUES["TIMEOUT"])
TIMEOUT_HOURS = int(VALUES["TIMEOUT_HOURS"])
MAX_ATTEMPTS = int(VALUES["MAX_ATTEMPTS"])
MAX_IN_FLIGHT = int(VALUES["MAX_IN_FLIGHT"])
