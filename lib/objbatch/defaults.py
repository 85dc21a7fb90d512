"""The defaults and rules make and the commands share, written once in defaults.mk beside this module: the
Makefile includes that file, and this module reads it, so `make batch` and `batch-wait` mean the same POLL
and accept the same run names."""

from __future__ import annotations

import re
from pathlib import Path

FILE = Path(__file__).with_name("defaults.mk")
LINE = re.compile(r"([A-Z][A-Z_]*) = (.*)")


def read(path: Path = FILE) -> dict[str, str]:
    """Every `NAME = value` line of the file; comments and blank lines skipped."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            match = LINE.fullmatch(line.rstrip())
            if not match:
                raise ValueError(f"{path}: {line!r} is not a `NAME = value` line")
            values[match[1]] = match[2]
    return values


LINES = read()
VALUES = {name.removeprefix("DEFAULT_"): value for name, value in LINES.items() if name.startswith("DEFAULT_")}
DB: str = VALUES["DB"]
RUNS: str = VALUES["RUNS"]
MODEL: str = VALUES["MODEL"]
POLL = float(VALUES["POLL"])
TIMEOUT = float(VALUES["TIMEOUT"])
TIMEOUT_HOURS = int(VALUES["TIMEOUT_HOURS"])
MAX_ATTEMPTS = int(VALUES["MAX_ATTEMPTS"])
MAX_IN_FLIGHT = int(VALUES["MAX_IN_FLIGHT"])
RUN_NAME_CHARS: str = "".join(LINES["RUN_NAME_CHARS"].split())
RUN_NAME_MAX = int(LINES["RUN_NAME_MAX"])
