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

from .. import ledger, library, runs
from ..common import EXIT_FAILED, EXIT_USAGE, Failure, cli, count, log, now_iso
from ..options import db_option
from ..states import FileStatus

STATUSES = (FileStatus.SKIPPED, FileStatus.FAILED_VALIDATION, FileStatus.NEEDS_REVIEW, FileStatus.EXTRACTED)


def chosen(conn: ledger.Library, names: list[str], statuses: tuple[str, ...],
           include_approved: bool) -> tuple[list[str], list[tuple[str, str]]]:
    found, unknown = library.resolve(conn, names)
    refused = list(unknown.items())
    paths = dict.fromkeys(found.values())  # an ordered set
    for status in statuses:
        paths.update(dict.fromkeys(r[0] for r in conn.execute(
            "SELECT file_path FROM files WHERE ai_metadata_status = ? AND COALESCE(is_deleted, 0) = 0 "
            "ORDER BY file_path", (status,))))
    flying = {r[0]: r[1] for r in conn.execute("SELECT file_path, run_name FROM objbatch_claims WHERE state = ?",
                                               (runs.IN_FLIGHT,))}
    keep = []
    for path in paths:
        if isinstance(path, ledger.NotUtf8):  # no statement can name it: it would match nothing
            refused.append((path, ledger.NOT_UTF8_PATH))
            continue
        row = conn.execute("SELECT ai_metadata_status, COALESCE(is_deleted, 0) FROM files WHERE file_path = ?",
                           (path,)).fetchone()
        why = ("deleted" if row[1] else f"in flight in run {flying[path]}" if path in flying else
               "approved: add --include-approved to requeue it" if row[0] == FileStatus.APPROVED and not include_approved
               else None)
        if why:
            refused.append((path, why))
        else:
            keep.append(path)
    return keep, refused


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
        keep, refused = chosen(conn, names, statuses, include_approved)
        now = now_iso()
        conn.executemany("UPDATE files SET ai_metadata_status = 'pending', error_message = NULL, updated_at = ? "
                         "WHERE file_path = ?", [(now, path) for path in keep])
        conn.executemany("UPDATE objbatch_files SET attempts = 0, reasons_json = '[]', skip_kind = NULL "
                         "WHERE file_path = ?", [(path,) for path in keep])
    if not refused:
        log(f"requeue: {count(len(keep), 'file')} back in the queue")
        return
    log(f"requeue: {count(len(keep), 'file')} back in the queue, {library.refused_line(refused)}")
    sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
