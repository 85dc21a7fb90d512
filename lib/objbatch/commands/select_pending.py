"""select-pending: the files to extract, as JSONL, in a stable order (which files are eligible:
selection.py). With --run RUN the selection is claimed for that run in the same transaction (the run
enters the ledger), so two runs at once never take the same file; rerunning with the same RUN returns the
same claim. A finished run claims nothing again.
"""

from __future__ import annotations

import click

from .. import defaults, ledger, sources
from ..common import atomic_output, check_run_name, cli, count, kill_point, log, write_jsonl
from ..options import ATTEMPTS, IN_FLIGHT, db_option, max_option, model_option, output_option, run_option
from ..selection import claim_files, claimed, preview, report_others


@cli("select-pending --db data/library.db --max 20 -o select.jsonl",
     "select-pending --db data/library.db --max 100 --run run-1 --model mistral-small-latest -o select.jsonl")
@db_option()
@max_option()
@click.option("--max-attempts", default=defaults.MAX_ATTEMPTS, show_default=True, type=ATTEMPTS,
              help="Failed files are retried until they have failed this many times.")
@click.option("--retry-exhausted", is_flag=True, help="Also take failed files that reached --max-attempts.")
@run_option(help="Claim the selection for run RUN so no other run takes these files.")
@model_option(default=None, help="Model of the claiming run (recorded in the ledger).")
@click.option("--max-in-flight", type=IN_FLIGHT, default=None,
              help="With --run: start no new run while this many runs of the database are unfinished (the "
                   "cap make cron keeps, counted in the claim's own transaction).")
@click.option("--library-root", type=click.Path(file_okay=False), default=None,
              help="The folder the library's files are in (make's LIBRARY_ROOT); build-jsonl reads nothing "
                   "outside it. Default: where objlib records it, else the common folder of the rows.")
@output_option()
def main(db: str, limit: int | None, max_attempts: int, retry_exhausted: bool, run_name: str | None,
         model: str | None, max_in_flight: int | None, library_root: str | None, output: str) -> None:
    """Print the files to extract as JSONL: path, name, size, content hash, scanner metadata, attempts."""
    if run_name is not None:
        check_run_name(run_name)
    with ledger.opened(db) as conn:
        if run_name:
            claim_files(conn, limit, max_attempts, retry_exhausted, run_name, model, max_in_flight)
        report_others(conn, run_name)
        kill_point("after-claim")
        records = claimed(conn, run_name) if run_name else preview(conn, limit, max_attempts, retry_exhausted)
        root = sources.library_root(conn, db, library_root)[0]
        with atomic_output(output) as out:
            written = write_jsonl(({**record, "library_root": root} for record in records), out)
    log(f"select-pending: {count(written, 'file')} selected" + (f" for run {run_name}" if run_name else ""))


if __name__ == "__main__":
    main()
