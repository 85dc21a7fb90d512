"""The kinds of line that pass between the stages, and the fields read at the type they must have.

Every stage checks that each line it reads is the kind it expects (a selection, a request, a manifest line,
a result, a decision) and refuses another kind in one line naming the stage whose output belongs there,
before it writes anything. A field from outside (the service's answer, a file a person edited) may have
any JSON type: it is read here at the type the code needs, or as missing, so an odd value affects its own
record and never stops the stream.
"""

from __future__ import annotations

import math
from typing import Any

from .common import Failure

# kind -> (the stage whose output it is, the fields that tell it from the others); checked in this order
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "decision": ("validate", ("decision", "file_path")),
    "job record": ("batch-submit", ("jobs",)),
    "request": ("build-jsonl", ("custom_id", "body")),
    "result": ("batch-fetch", ("custom_id", "ok")),
    "service result line": ("the service's output file (batch-fetch reads it)", ("custom_id", "response")),
    "manifest line": ("build-jsonl --manifest", ("file_path", "config_hash")),
    "skipped manifest line": ("build-jsonl --manifest", ("file_path", "skip")),
    "selection": ("select-pending", ("file_path", "filename", "content_hash")),
    "review line": ("review --nl", ("file_path", "group")),
    "metadata line": ("export-metadata", ("file_path", "metadata")),
}
SAME = {"skipped manifest line": "manifest line"}  # both are what --manifest takes


def kind_of(line: Any) -> str | None:
    """What a parsed line is, by its fields; None for anything else."""
    if isinstance(line, dict):
        for kind, (_, fields) in KINDS.items():
            if all(f in line for f in fields):
                return SAME.get(kind, kind)
    return None


def expect(line: Any, wanted: str, where: str) -> dict:
    """The line, if it is of the kind wanted; else a Failure naming what it is and what belongs there."""
    found = kind_of(line)
    if found == wanted:
        return line
    fix = f"pipe {KINDS[wanted][0]}'s output"
    if found:
        raise Failure(f"{where} is {_a(found)} ({KINDS[found][0]}'s output), not {_a(wanted)}; {fix}")
    raise Failure(f"{where} is not {_a(wanted)} (it has no {' or '.join(KINDS[wanted][1])}); {fix}")


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def text(value: Any, limit: int = 2000) -> str | None:
    """A string field as a string (shortened past `limit`), anything else as missing."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= limit else value[:limit] + f"… ({len(value):,} characters)"


def count(value: Any) -> int:
    """A token count: a whole number of at least 0, else 0 (a count the service got wrong counts nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def usage(value: Any) -> dict[str, int]:
    """The token counts of a result's usage, whatever shape it came in."""
    value = value if isinstance(value, dict) else {}
    counts = {"prompt_tokens": 0, "completion_tokens": 0}
    counts.update((k, count(v)) for k, v in value.items() if isinstance(k, str) and k.endswith("_tokens"))
    for details, name in (("prompt_tokens_details", "cached_tokens"), ("prompt_token_details", "cached_tokens"),
                          ("completion_tokens_details", "reasoning_tokens")):  # what the service details
        if isinstance(value.get(details), dict):
            counts[name] = max(counts.get(name, 0), count(value[details].get(name)))
    return counts


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
