"""report: one self-contained HTML page for a person to look at: files by status, cost per run (estimated
and actual) and cumulative, tokens, the confidence histogram with the threshold, categories, difficulty and
the top topics, failure and skip reasons grouped, and the first files of the review queue with their
reasons, metadata and the opening lines of their transcript.

The figures are the ones `stats --json` gives (overview.py computes both). The page needs no server and no
network (no script, font or style from elsewhere), and stays small for any library: every figure is an
aggregate; only the review queue's first --max files are listed one by one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from .. import defaults, ledger, library, metadata, overview, report_page
from ..common import atomic_output, cli, log
from ..options import ATTEMPTS, FRACTION, db_option, max_option, output_option

OPENING_BYTES = 700  # the opening lines of a transcript in the review queue


def queue(conn: ledger.Library, threshold: float, limit: int) -> tuple[list[dict], int]:
    """The first `limit` files of the review queue (needs_review, then failed_validation), and how many it holds."""
    listed: list[dict] = []
    total = 0
    for group in ("needs_review", "failed_validation"):
        count, items = library.review_group(conn, group, threshold, max(limit - len(listed), 0))
        total += count
        listed += items
    for item in listed:
        item["opening"] = opening(item["file_path"])
    return listed, total


def opening(path: str) -> str:
    """The first lines of the transcript on disk, or why they cannot be shown."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(OPENING_BYTES)
    except OSError as exc:
        return f"(the transcript cannot be read here: {exc.strerror or exc})"
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines()[:6]
    return "\n".join(lines) + (" ..." if len(head) == OPENING_BYTES else "")


@cli("report --db data/library.db    # writes runs/report.html", "report --db demo/library.db --runs demo/runs -n 20",
     "report -o /tmp/library.html && xdg-open /tmp/library.html")
@db_option()
@click.option("--runs", "runs_folder", default=defaults.RUNS, show_default=True,
              help="The runs folder (make's RUNS); the report goes there unless -o says otherwise.")
@output_option(name="out", default=None, metavar="FILE",
               help="Write the page here (default RUNS/report.html; '-' for stdout).")
@max_option(default=50, help="How many files of the review queue to show in full.")
@click.option("--threshold", type=FRACTION, default=None,
              help="Also queue extracted files below this confidence (default from schemas/soft-rules.json).")
@click.option("--max-attempts", default=defaults.MAX_ATTEMPTS, show_default=True, type=ATTEMPTS,
              help="Attempt cap used to count files that ran out of attempts.")
def main(db: str, runs_folder: str, out: str | None, limit: int, threshold: float | None, max_attempts: int) -> None:
    """Write one self-contained HTML page showing where the library and its runs stand."""
    threshold = metadata.soft_rules()["threshold"] if threshold is None else threshold
    with ledger.opened(db, identity=False, read_only=True) as conn:
        data = overview.gather(conn, None, max_attempts)
        listed, total = queue(conn, threshold, limit)
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = report_page.page(data, listed, total, f"{os.path.abspath(db)}", generated)
    target = out or str(Path(runs_folder) / "report.html")
    with atomic_output(target) as handle:
        handle.write(text)
    if target != "-":
        files = sum(data["statuses"].values())
        log(f"report: {target} ({len(text.encode()) / 1024:,.0f} KB): {files:,} files, {data['totals']['runs']:,} "
            f"run(s), {total:,} to review")


if __name__ == "__main__":
    main()
