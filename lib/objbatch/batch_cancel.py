"""batch-cancel: cancel a run's jobs and wait until each has stopped (CANCELLED, or already terminal).

Whatever the jobs finished is then harvested by batch-fetch as usual; requests they never processed come
back as "no result returned (job ended CANCELLED)" and go back to the queue without costing an attempt.
"""

from __future__ import annotations

import click

from . import client, ledger
from .batch_wait import wait
from .common import command, log
from .job_record import load_record


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("job_record", type=click.Path(dir_okay=False), default="-")
@click.option("--poll", default=5.0, show_default=True, help="Seconds between status checks while stopping.")
@click.option("--timeout", default=600.0, show_default=True, help="Give up waiting for the stop after this long (exit 75).")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Also record job states in this database.")
@command
def main(job_record: str, poll: float, timeout: float, db: str | None) -> None:
    """Cancel every job in JOB_RECORD (from batch-submit) and wait until they have stopped."""
    record = load_record(job_record)
    with client.Service() as service:
        for entry in record["jobs"]:
            job = service.get_job(entry["job_id"])
            if client.terminal(job["status"]):
                log(f"batch-cancel: job {job['id']} already ended {job['status']}")
            else:
                log(f"batch-cancel: job {job['id']}: {service.cancel_job(job['id'])['status']}")
        jobs = wait(service, [entry["job_id"] for entry in record["jobs"]], poll, timeout)
    if db:
        ledger.update_jobs(db, jobs)
    for job in jobs:
        log(f"batch-cancel: job {job['id']} ended {job['status']} with {job['completed_requests']}/"
            f"{job['total_requests']} requests done")


if __name__ == "__main__":
    main()
