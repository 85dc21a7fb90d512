"""The kinds of line that pass between the stages, and the fields read at the type they must have.

Every stage checks that each line it reads is the kind it expects (a selection, a request, a manifest line,
a result, a decision) and refuses another kind in one line naming the stage whose output belongs there,
before it writes anything. A field from outside (the service's answer, a file a person edited) may have
any JSON type: it is read here at the type the code needs, or as missing, so an odd value affects its own
record and never stops the stream.
"""

from __future__ import annotations

import math
from typing import IO, Any, Iterator, Mapping

from .common import Failure, read_jsonl

# kind -> (the stage whose output it is, the fields that tell it from the others); checked in this order
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "decision": ("validate", ("decision", "file_path")),
    "job record": ("batch-submit", ("jobs",)),
    "request": ("build-jsonl", ("custom_id", "body")),
    "result": ("batch-fetch", ("custom_id", "ok")),
    "service result line": ("the service's output file (batch-fetch reads it)", ("custom_id", "response")),
    "manifest line": ("build-jsonl --manifest", ("file_path", "config_hash")),
    "skipped manifest line": ("build-jsonl --manifest", ("file_path", "skip")),
    "selection": ("select-pending", ("file_path", "filename")),
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


def expect(line: Any, wanted: str, where: str) -> dict[str, Any]:
    """The line, if it is of the kind wanted; else a Failure naming what it is and what belongs there."""
    found = kind_of(line)
    if found == wanted and isinstance(line, dict):
        return line
    fix = f"pipe {KINDS[wanted][0]}'s output"
    if found:
        raise Failure(f"{where} is {_a(found)} ({KINDS[found][0]}'s output), not {_a(wanted)}; {fix}")
    raise Failure(f"{where} is not {_a(wanted)} (it has no {' or '.join(KINDS[wanted][1])}); {fix}")


def read(stream: IO[str], wanted: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, line) for each line of a stage's input, each checked to be of the kind wanted."""
    what = wanted.removesuffix(" line")
    for lineno, line in read_jsonl(stream, what):
        yield lineno, expect(line, wanted, f"{what} line {lineno}")


def fields(line: dict[str, Any], types: Mapping[str, tuple[type, ...]], where: str, fix: str) -> dict[str, Any]:
    """The line, if each field named in `types` is absent, null or of one of its types; else a Failure
    naming the field (a hand-edited line must not stop a write halfway, or store a value of another type)."""
    for name, allowed in types.items():
        value = line.get(name)
        if value is not None and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
            raise Failure(f"{where}: {name} is {json_kind(value)}, not {' or '.join(KIND_NAMES[t] for t in allowed)}; "
                          f"{fix}")
    return line


KIND_NAMES = {str: "a string", dict: "an object", list: "an array", int: "a number", float: "a number",
              bool: "a boolean"}


def json_kind(value: Any) -> str:
    return "null" if value is None else KIND_NAMES.get(type(value), type(value).__name__)


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
