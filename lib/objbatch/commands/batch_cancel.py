"""batch-cancel: stop a run's jobs, and never create one (cancellation.py says how).

With --db (what `make cancel` does) the run is found in the database ledger, whether or not its folder
still exists; when its jobs left results the command prints the run's name on stdout: `batch-run NAME=<it>`
harvests what they finished and returns the rest to the queue, without costing an attempt. --forget (make
cancel FORGET=1) ends a run whose every job the service answers 404 for (another workspace's key, or lost),
its files back in the queue as they were; without --forget the command says so and changes nothing.

With a JOB_RECORD instead (by hand), the jobs in that record are cancelled and waited for.
"""

from __future__ import annotations

import click

from .. import client, ledger
from ..cancellation import cancel_run, report, stop
from ..common import NOT_FINISHED, SERVICE_ENV, Failure, cli
from ..job_record import load_record
from ..options import SECONDS, db_option, run_option
from ..polling import wait


@cli("batch-cancel job.json", "batch-cancel --db data/library.db --run run-1",
     env=(*SERVICE_ENV, "OBJBATCH_MIN_POLL"), exits=NOT_FINISHED)
@click.argument("job_record", type=click.Path(dir_okay=False), required=False)
@db_option(default=None, help="Cancel a run of this library database (found in its ledger) instead of a JOB_RECORD.")
@run_option(help="With --db: the run to cancel (default: the only unfinished one).")
@click.option("--poll", default=5.0, show_default=True, type=SECONDS,
              help="Seconds between status checks while stopping.")
@click.option("--timeout", default=600.0, show_default=True, type=SECONDS,
              help="Give up waiting for the stop after this long (exit 75).")
@click.option("--forget", is_flag=True,
              help="With --db: if the service answers 404 for every job of the run (another workspace's key, or "
                   "lost), end the run without its results; its files go back to the queue.")
def main(job_record: str | None, db: str | None, run_name: str | None, poll: float, timeout: float,
         forget: bool) -> None:
    """Cancel a run's jobs and wait until they have stopped; never creates a job.

    With --db, prints the run's name when its jobs left results to collect (then: batch-run NAME=...)."""
    if db and not job_record:
        with ledger.opened(db) as conn:
            harvest = cancel_run(conn, run_name, poll, timeout, forget)
        if harvest:
            click.echo(harvest)
        return
    if not job_record or db or run_name or forget:
        raise Failure("give either a JOB_RECORD (from batch-submit) or --db DB [--run NAME] [--forget]")
    record = load_record(job_record)
    with client.Service() as service:
        job_ids = [entry["job_id"] for entry in record["jobs"]]
        stop(service, job_ids)
        report(wait(service, job_ids, poll, timeout))


if __name__ == "__main__":
    main()
