"""requeue: send files back to the queue (status pending, attempt count reset), for the next run to take.

Files come as arguments, from stdin with '-' (plain paths, or review --nl / --json / --csv output), or by status
(--status skipped, failed_validation or needs_review). Approved files only with --include-approved. A file
a run still has in flight, a deleted or unknown one is refused by name; the others are requeued, and the
exit status is 1 if any was refused. Their metadata stays until a run replaces it; the results history
(show) keeps every earlier outcome.
"""

from __future__ import annotations

import sys

import click

from .. import curation, ledger, library
from ..common import EXIT_FAILED, EXIT_USAGE, Failure, cli, count, log
from ..options import db_option
from ..states import FileStatus

STATUSES = (FileStatus.SKIPPED, FileStatus.FAILED_VALIDATION, FileStatus.NEEDS_REVIEW, FileStatus.EXTRACTED)


@cli("requeue --db data/library.db --status failed_validation",
     "requeue --db demo/library.db MOTM_2010-01-04_The-Virtue-of-Honesty.txt    # a file of make demo's library")
@click.argument("paths", nargs=-1)
@db_option()
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in STATUSES]),
              help="Also requeue every file with this status (repeatable).")
@click.option("--include-approved", is_flag=True, help="Allow approved files among those named.")
def main(paths: tuple[str, ...], db: str, statuses: tuple[str, ...], include_approved: bool) -> None:
    """Send the files named by PATHS ('-' reads stdin) or --status back to the queue."""
    if not paths and not statuses:
        raise Failure("name the files to requeue (paths, '-' for stdin) or give --status", EXIT_USAGE)
    names = library.names_from(paths, sys.stdin)
    with ledger.opened(db, identity=False) as conn, ledger.transaction(conn):
        keep, refused = curation.to_requeue(conn, names, statuses, include_approved)
        curation.requeue(conn, keep)
    if not refused:
        log(f"requeue: {count(len(keep), 'file')} back in the queue")
        return
    log(f"requeue: {count(len(keep), 'file')} back in the queue, {library.refused_line(refused)}")
    sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
