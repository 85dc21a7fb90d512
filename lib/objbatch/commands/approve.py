"""approve: mark files' metadata as approved by a person (a batch never overwrites approved metadata).

Files come as arguments, from stdin with '-' (plain paths, or review --nl / --json / --csv output), or from a filter
(--min-confidence). A file without valid metadata (pending, failed, skipped, unknown) is refused by name;
the others are approved, and the exit status is 1 if any was refused (as rm does with a missing file).
"""

from __future__ import annotations

import json
import sys

import click

from .. import ledger, library
from ..common import EXIT_FAILED, EXIT_USAGE, Failure, cli, count, log, now_iso
from ..options import FRACTION, db_option
from ..states import FileStatus

CHANGED = "its metadata changed since it was reviewed; review it again"


def chosen(conn: ledger.Library, names: list[str], min_confidence: float | None,
           reviewed: dict[str, str] | None = None) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({path: current status} to approve, refusals (path, why)). A file piped from review with the digest
    of the metadata it showed is approved only if its metadata is still that."""
    found, unknown = library.resolve(conn, names)
    shown = {found[name]: value for name, value in (reviewed or {}).items() if name in found}
    refused = list(unknown.items())
    items = {path: next(library.stored(conn, "f.file_path = ?", (path,))) for path in found.values()}
    if min_confidence is not None:
        for item in library.stored(conn, "f.ai_metadata_status IN ('extracted', 'needs_review') AND "
                                         "f.ai_confidence_score >= ? AND COALESCE(f.is_deleted, 0) = 0",
                                   (min_confidence,)):
            items.setdefault(item["file_path"], item)
    approve = {}
    for path, item in items.items():
        why = _unfit(item)
        if not why and path in shown and shown[path] != library.digest(item["metadata"]):
            why = CHANGED
        if why:
            refused.append((path, why))
        else:
            approve[path] = item["status"]
    return approve, refused


def _unfit(item: dict) -> str | None:
    if isinstance(item["file_path"], ledger.NotUtf8):
        return ledger.NOT_UTF8_PATH
    if item["is_deleted"]:
        return "deleted"
    if item["status"] not in library.WITH_METADATA:
        return f"{item['status']}: no valid metadata"
    if not item["metadata"]:
        return "no stored metadata"
    return None


@cli("approve --db demo/library.db MOTM_2010-01-04_The-Virtue-of-Honesty.txt    # a file of make demo's library",
     "review --nl | approve -", "approve --min-confidence 0.9")
@click.argument("paths", nargs=-1)
@db_option()
@click.option("--min-confidence", type=FRACTION, default=None,
              help="Also approve every extracted or needs_review file with at least this confidence.")
@click.option("--json", "as_json", is_flag=True,
              help="Also print what was done as one JSON object: approved, already approved, refused (each with why).")
def main(paths: tuple[str, ...], db: str, min_confidence: float | None, as_json: bool) -> None:
    """Approve the files named by PATHS ('-' reads paths, or review --nl/--json/--csv output, from stdin).

    A review line carries the digest of the metadata it showed (metadata_digest): a file whose metadata
    changed since it was reviewed is refused."""
    if not paths and min_confidence is None:
        raise Failure("name the files to approve (paths, '-' for stdin) or give --min-confidence", EXIT_USAGE)
    reviewed: dict[str, str] = {}
    names = library.names_from(paths, sys.stdin, reviewed)
    with ledger.opened(db, identity=False) as conn, ledger.transaction(conn):
        approve, refused = chosen(conn, names, min_confidence, reviewed)
        already = [path for path, status in approve.items() if status == FileStatus.APPROVED]
        conn.executemany("UPDATE files SET ai_metadata_status = 'approved', updated_at = ? WHERE file_path = ?",
                         [(now_iso(), path) for path, status in approve.items() if status != FileStatus.APPROVED])
    if as_json:
        click.echo(json.dumps({"approved": [p for p in approve if p not in already], "already_approved": already,
                               "refused": [{"file_path": p, "why": why} for p, why in refused]}, ensure_ascii=False))
    done = f"approve: {count(len(approve) - len(already), 'file')} approved" + (
        f", {len(already)} already were" if already else "")
    if not refused:
        log(done)
        return
    log(f"{done}, {library.refused_line(refused)}" + ("" if as_json else "; approve --json lists them all"))
    sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
