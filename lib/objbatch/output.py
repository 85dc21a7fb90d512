"""The output options of every command that shows stored data, one bundle so they mean the same everywhere
(as sqlite-utils does): --table (for people; the default), --json (a JSON array, one object a line),
--nl (JSON lines), --csv (lists and objects as JSON in their cell)."""

from __future__ import annotations

import csv
import json
from typing import IO, Any, Callable, Iterable

import click

FORMATS = ("table", "json", "nl", "csv")


def options(default: str = "table", formats: tuple[str, ...] = FORMATS, json_help: str | None = None) -> Callable:
    """The bundle as click options (or the subset a command can honour), passed to the command as `fmt`."""
    helps = {"table": "Print for people.", "json": json_help or "Print a JSON array, one object a line.",
             "nl": "Print JSON lines (one object a line), to pipe into approve, requeue or jq.",
             "csv": "Print CSV (lists as JSON in their cell)."}

    def apply(fn: Callable) -> Callable:
        for name in reversed(formats):
            extra = {"default": True} if name == default else {}
            fn = click.option(f"--{name}", "fmt", flag_value=name,
                              help=helps[name] + (" (the default)" if name == default else ""), **extra)(fn)
        return fn

    return apply


def write(rows: Iterable[dict], fmt: str, out: IO[str], table: Callable[[list[dict]], str]) -> int:
    """Write rows in the chosen format (streaming, except for the people's table); returns the count."""
    if fmt == "table":
        listed = list(rows)
        if listed:
            out.write(table(listed).rstrip("\n") + "\n")
        return len(listed)
    writer = {"json": _json, "nl": _nl, "csv": _csv}[fmt]
    return writer(rows, out)


def _nl(rows: Iterable[dict], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def _json(rows: Iterable[dict], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(("[" if count == 0 else ",\n ") + json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("]\n" if count else "[]\n")
    return count


def _csv(rows: Iterable[dict], out: IO[str]) -> int:
    writer = None
    count = 0
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: cell(v) for k, v in row.items()})
        count += 1
    return count


def cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value

