"""stats: counts per status, files in flight and in which job, files out of attempts, recent runs with
their counts, their cost from the usage the results carried (schemas/prices.json) and the estimate made
before they were paid; totals over all runs, the spread of the metadata, the confidence histogram and the
reasons files failed or were skipped (the figures live in overview.py, which report draws too)."""

from __future__ import annotations

import json
import sys

import click

from .. import defaults, ledger, output
from ..common import cli, printable, printable_values
from ..options import ATTEMPTS, db_option, max_option
from ..overview import gather, render, runs_table


@cli("stats --db data/library.db", "stats --json | jq .statuses")
@db_option()
@max_option(default=10, help="How many recent runs to show.")
@click.option("--max-attempts", default=defaults.MAX_ATTEMPTS, show_default=True, type=ATTEMPTS,
              help="Attempt cap used to list files that ran out of attempts.")
@output.options(json_help="Print everything as one JSON object, for scripts (--nl and --csv: the runs).",
                nl_help="Print the recent runs as JSON lines (one run a line), for jq.")
def main(db: str, limit: int, max_attempts: int, fmt: str) -> None:
    """Where the library stands: statuses, work in flight, exhausted files, recent runs and their cost."""
    with ledger.opened(db, identity=False, read_only=True) as conn:
        data = gather(conn, limit, max_attempts)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "table":
        click.echo(printable(render(printable_values(data))))
    else:
        output.write(data["runs"], fmt, sys.stdout, runs_table)


if __name__ == "__main__":
    main()
