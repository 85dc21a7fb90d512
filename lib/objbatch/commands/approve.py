"""approve: mark files' metadata as approved by a person (a batch never overwrites approved metadata).

Files come as arguments, from stdin with '-' (plain paths, or review --nl / --json / --csv output), or from a filter
(--min-confidence). A file without valid metadata (pending, failed, skipped, unknown) is refused by name;
the others are approved, and the exit status is 1 if any was refused (as rm does with a missing file).
"""

from __future__ import annotations

import json
import sys

import click

from .. import curation, ledger, library
from ..common import EXIT_FAILED, EXIT_USAGE, Failure, cli, count, log
from ..options import FRACTION, db_option


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
        approve, refused = curation.to_approve(conn, names, min_confidence, reviewed)
        already = curation.approve(conn, approve)
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
