"""The options several commands share, declared once (as sqlite-utils' output_options) so a concept has one
flag, one meaning and one default everywhere: --db, --run, --model, -o/--output, -n/--max. A spelling an
older objbatch used stays as a hidden alias for a release (--claim and --run-name for --run, --limit for
--max): it works, and --help shows only the new one."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from . import client, defaults
from .common import Number

F = TypeVar("F", bound=Callable[..., Any])

# The numbers make's variables and the commands' options share, one type each: MAX=-1 (batch-run checks make's
# variables before anything runs) and select-pending --max -1 are refused by the same rule.
COUNT = Number(min=0, whole=True)            # MAX, N: at most this many (0: none)
ATTEMPTS = Number(min=1, whole=True)         # MAX_ATTEMPTS
IN_FLIGHT = Number(min=1, whole=True)        # MAX_IN_FLIGHT
SECONDS = Number(min=0)                      # POLL, TIMEOUT
FRACTION = Number(0, 1)                      # THRESHOLD: a confidence
DOLLARS = Number(min=0)                      # BUDGET
TIMEOUT_HOURS = Number(client.MIN_TIMEOUT_HOURS, client.MAX_TIMEOUT_HOURS, whole=True)  # the service's bounds
MAKE_NUMBERS = {"MAX": COUNT, "N": COUNT, "MAX_ATTEMPTS": ATTEMPTS, "MAX_IN_FLIGHT": IN_FLIGHT, "POLL": SECONDS,
                "TIMEOUT": SECONDS, "THRESHOLD": FRACTION, "BUDGET": DOLLARS, "TIMEOUT_HOURS": TIMEOUT_HOURS}


class AliasedOption(click.Option):
    """An option with older spellings that still work and are not shown in --help."""

    def __init__(self, param_decls: list[str], aliases: tuple[str, ...] = (), **attrs: Any) -> None:
        super().__init__([*param_decls, *aliases], **attrs)
        self.aliases = aliases

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown = self.opts
        self.opts = [opt for opt in shown if opt not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown

    def get_error_hint(self, ctx: click.Context | None) -> str:
        """An error names the option as --help does: '-n' / '--max', not '... / '--limit'."""
        return " / ".join(f"'{opt}'" for opt in self.opts if opt not in self.aliases)


def db_option(help: str = "The library's SQLite database.", default: str | None = defaults.DB) -> Callable[[F], F]:
    """--db: the library's database (default data/library.db; a stage given no --db records nothing there)."""
    return click.option("--db", default=default, show_default=default is not None, type=click.Path(dir_okay=False),
                        help=help)


def run_option(help: str = "The run (make's NAME).", metavar: str = "RUN") -> Callable[[F], F]:
    """--run: the run a command works on, passed as `run_name` (--claim, --run-name: older spellings)."""
    return click.option("--run", "run_name", cls=AliasedOption, aliases=("--claim", "--run-name"), default=None,
                        metavar=metavar, help=help)


def model_option(help: str = "The model (prices in schemas/prices.json).",
                 default: str | None = defaults.MODEL) -> Callable[[F], F]:
    """--model, else OBJBATCH_MODEL, else make's default MODEL."""
    return click.option("--model", default=default, show_default=default is not None, envvar="OBJBATCH_MODEL",
                        help=help)


def output_option(help: str = "Write here (atomically) instead of stdout.", default: str | None = "-",
                  name: str = "output", metavar: str | None = None) -> Callable[[F], F]:
    """-o/--output: a file that appears complete or not at all; '-' (or none) is stdout."""
    return click.option("-o", "--output", name, default=default, metavar=metavar, help=help)


def max_option(help: str = "At most this many files.", default: int | None = None) -> Callable[[F], F]:
    """-n/--max: at most N (passed as `limit`; --limit: the older spelling)."""
    return click.option("-n", "--max", "limit", cls=AliasedOption, aliases=("--limit",), default=default,
                        show_default=default is not None, type=COUNT, help=help)
