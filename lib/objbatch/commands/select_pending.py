"""select-pending: the files to extract, as JSONL, in a stable order (which files are eligible:
selection.py). With --claim RUN the selection is claimed for that run in the same transaction (the run
enters the ledger), so two runs at once never take the same file; rerunning with the same RUN returns the
same claim. A finished run claims nothing again.
"""

from __future__ import annotations

import click

from .. import ledger, sources
from ..common import atomic_output, check_run_name, cli, count, kill_point, log, write_jsonl
from ..selection import DEFAULT_MAX_ATTEMPTS, claim_files, claimed, preview, report_others


@cli("select-pending --db data/library.db --max 20 -o select.jsonl",
     "select-pending --db data/library.db --max 100 --claim run-1 --model mistral-small-latest -o select.jsonl")
@click.option("--db", default="data/library.db", show_default=True, type=click.Path(dir_okay=False),
              help="The library database.")
@click.option("--max", "limit", type=click.IntRange(min=0), default=None, help="At most this many files.")
@click.option("--max-attempts", default=DEFAULT_MAX_ATTEMPTS, show_default=True, type=click.IntRange(min=1),
              help="Failed files are retried until they have failed this many times.")
@click.option("--retry-exhausted", is_flag=True, help="Also take failed files that reached --max-attempts.")
@click.option("--claim", "claim", default=None, metavar="RUN",
              help="Claim the selection for run RUN so no other run takes these files.")
@click.option("--model", default=None, help="Model of the claiming run (recorded in the ledger).")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=None,
              help="With --claim: start no new run while this many runs of the database are unfinished (the "
                   "cap make cron keeps, counted in the claim's own transaction).")
@click.option("--library-root", type=click.Path(file_okay=False), default=None,
              help="The folder the library's files are in (make's LIBRARY_ROOT); build-jsonl reads nothing "
                   "outside it. Default: where objlib records it, else the common folder of the rows.")
@click.option("-o", "--output", default="-", help="Write here (atomically) instead of stdout.")
def main(db: str, limit: int | None, max_attempts: int, retry_exhausted: bool, claim: str | None,
         model: str | None, max_in_flight: int | None, library_root: str | None, output: str) -> None:
    """Print the files to extract as JSONL: path, name, size, content hash, scanner metadata, attempts."""
    if claim is not None:
        check_run_name(claim)
    with ledger.opened(db) as conn:
        if claim:
            claim_files(conn, limit, max_attempts, retry_exhausted, claim, model, max_in_flight)
        report_others(conn, claim)
        kill_point("after-claim")
        records = claimed(conn, claim) if claim else preview(conn, limit, max_attempts, retry_exhausted)
        root = sources.library_root(conn, db, library_root)[0]
        with atomic_output(output) as out:
            written = write_jsonl(({**record, "library_root": root} for record in records), out)
    log(f"select-pending: {count(written, 'file')} selected" + (f" for run {claim}" if claim else ""))


if __name__ == "__main__":
    main()
