"""review: what deserves a person's look, most doubtful first.

Groups: needs_review (with the reasons and the confidence; extracted files below --threshold too),
failed_validation (every reason, and the attempts), and with --skipped the skipped files and why. A count
per group goes to stderr. --nl and --json carry file_path on every line, so the output pipes into show,
approve and requeue.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Iterator

import click

from .. import ledger, library, metadata, output
from ..common import cli, log
from ..options import FRACTION, db_option, max_option


def rows(conn: sqlite3.Connection, groups: list[str], threshold: float, limit: int | None) -> Iterator[dict]:
    counts = {}
    for group in groups:
        counts[group], items = library.review_group(conn, group, threshold, limit)
        yield from (item["review"] for item in items)
    log("review: " + ", ".join(f"{n} {group}" for group, n in counts.items()))


def table(found: list[dict]) -> str:
    lines = []
    for item in found:
        confidence = "-" if item["confidence"] is None else f"{item['confidence']:.2f}"
        head = f"{item['group']:<17} {confidence:>5}  {item['file_path']}"
        if item["group"] == "needs_review":
            head += f"\n      {item['category']}/{item['difficulty']}: {', '.join(item['topics'])}"
        elif item["group"] == "failed_validation":
            head += f"\n      {item['attempts']} attempt(s)"
        lines.append(head + "".join(f"\n      - {reason}" for reason in item["reasons"]))
    return "\n".join(lines)


@cli("review --db data/library.db --skipped", "review --nl --max 20 | approve -",
     "review --status needs_review --json | approve -    # what needs a look and has valid metadata")
@db_option()
@click.option("--status", "statuses", multiple=True, type=click.Choice(list(library.REVIEW_GROUPS)),
              help="Only this group (repeatable; default: needs_review and failed_validation).")
@click.option("--skipped", is_flag=True, help="Also list skipped files and why.")
@click.option("--threshold", type=FRACTION, default=None,
              help="Also list extracted files below this confidence (default from schemas/soft-rules.json).")
@max_option(help="At most this many files per group.")
@output.options()
def main(db: str, statuses: tuple[str, ...], skipped: bool, threshold: float | None, limit: int | None,
         fmt: str) -> None:
    """List files whose metadata deserves a look, most doubtful first."""
    threshold = metadata.soft_rules()["threshold"] if threshold is None else threshold
    groups = list(dict.fromkeys(statuses or ("needs_review", "failed_validation")))
    groups += ["skipped"] if skipped and "skipped" not in groups else []
    with ledger.opened(db, identity=False, read_only=True) as conn:
        listed = output.write(rows(conn, groups, threshold, limit), fmt, sys.stdout, table)
    if not listed and fmt == "table":
        click.echo("Nothing to review.")


if __name__ == "__main__":
    main()
