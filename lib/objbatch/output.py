"""The output options of every command that shows stored data, one bundle so they mean the same everywhere
(as sqlite-utils does): --table (for people; the default), --json (a JSON array, one object a line),
--nl (JSON lines), --csv (lists and objects as JSON in their cell; a cell a spreadsheet would run as a
formula is neutralised, --csv-raw writes it as stored). Text for people has its control characters escaped."""

from __future__ import annotations

import csv
from typing import IO, Any, Callable, Iterable, TypeVar

import click

from .common import dumps, printable, printable_values

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json", "nl", "csv")
# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"): =cmd|' /C calc'!A0.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def options(default: str = "table", formats: tuple[str, ...] = FORMATS, json_help: str | None = None,
            nl_help: str | None = None) -> Callable[[F], F]:
    """The bundle as click options (or the subset a command can honour), passed to the command as `fmt`."""
    helps = {"table": "Print for people.", "json": json_help or "Print a JSON array, one object a line.",
             "nl": nl_help or "Print JSON lines (one object a line), to pipe into approve, requeue or jq.",
             "csv": "Print CSV (lists as JSON in their cell; a cell starting with =, +, -, @, a tab or a CR gets a "
                    "leading ' so a spreadsheet shows it instead of running it).",
             "csv-raw": "Print CSV with every cell exactly as stored (for programs, not spreadsheets: a cell can "
                        "be a formula)."}
    listed = (*formats, "csv-raw") if "csv" in formats else formats

    def apply(fn: F) -> F:
        for name in reversed(listed):
            extra: dict[str, Any] = {"default": True} if name == default else {}
            fn = click.option(f"--{name}", "fmt", flag_value=name,
                              help=helps[name] + (" (the default)" if name == default else ""), **extra)(fn)
        return fn

    return apply


def write(rows: Iterable[dict[str, Any]], fmt: str, out: IO[str], table: Callable[[list[dict[str, Any]]], str]) -> int:
    """Write rows in the chosen format (streaming, except for the people's table); returns the count."""
    if fmt == "table":
        listed = [printable_values(row) for row in rows]
        if listed:
            out.write(printable(table(listed)).rstrip("\n") + "\n")
        return len(listed)
    if fmt in ("csv", "csv-raw"):
        return _csv(rows, out, guard=fmt == "csv")
    writer = {"json": _json, "nl": _nl}[fmt]
    return writer(rows, out)


def _nl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(dumps(row, separators=(", ", ": ")) + "\n")
        count += 1
    return count


def _json(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(("[" if count == 0 else ",\n ") + dumps(row, separators=(", ", ": ")))
        count += 1
    out.write("]\n" if count else "[]\n")
    return count


def _csv(rows: Iterable[dict[str, Any]], out: IO[str], guard: bool = True) -> int:
    writer = None
    count = 0
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: neutralised(cell(v)) if guard else cell(v) for k, v in row.items()})
        count += 1
    return count


def cell(value: Any) -> Any:
    return dumps(value, separators=(", ", ": ")) if isinstance(value, (list, dict)) else value



def neutralised(text: Any) -> Any:
    """A cell a spreadsheet shows and never runs: one starting like a formula (or with the quote this adds)
    gets a leading ', which readers of our CSV (approve -, requeue -) take off again (unquote)."""
    if isinstance(text, str) and text.startswith((*FORMULA_START, "'")):
        return "'" + text
    return text


def unquote(text: str) -> str:
    """A cell as stored, from one `neutralised` wrote."""
    return text[1:] if text.startswith("'") else text
