"""batch-wait: poll a run's jobs until every one is terminal; progress on stderr, final states on stdout.
The schedule (polling.py) adapts to the job: --poll is its longest interval; the shortest is 2 s (the
service rate-limits reads), which OBJBATCH_MIN_POLL lowers for the local emulator and the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import client, config, defaults, remote
from ..common import NOT_FINISHED, SERVICE_ENV, atomic_output, cli, log, write_jsonl
from ..job_record import opened_record
from ..options import SECONDS, db_option, output_option
from ..polling import wait

FIELDS = ("id", "status", "total_requests", "completed_requests", "succeeded_requests", "failed_requests",
          "output_file", "error_file", "errors", "created_at", "started_at", "completed_at")


@cli("batch-wait job.json -o wait.jsonl",
     "batch-wait --timeout 0 job.json || [ $? -eq 75 ]    # look once: done, or come back later",
     env=(*SERVICE_ENV, "OBJBATCH_MIN_POLL"), exits=NOT_FINISHED)
@click.argument("job_record", type=click.Path(dir_okay=False), default="-")
@click.option("--poll", default=defaults.POLL, show_default=True, type=SECONDS,
              help="The longest wait between status checks; shorter near the job's predicted end.")
@click.option("--timeout", default=defaults.TIMEOUT, show_default=True, type=SECONDS,
              help="Give up waiting after this many seconds and exit 75; the job keeps running and a rerun resumes.")
@output_option(help="Write the final job states here (atomically) instead of stdout.")
@db_option(default=None, help="Also record job states in this database.")
@click.option("--raw-dir", type=click.Path(file_okay=False), default=None,
              help="Download each job's result files here as soon as it finishes (the service keeps them 24 "
                   "hours); batch-fetch --raw-dir reads them.")
def main(job_record: str, poll: float, timeout: float, output: str, db: str | None, raw_dir: str | None) -> None:
    """Wait until every job in JOB_RECORD (from batch-submit; - for stdin) is terminal.

    Exit 0 when all are terminal (whatever the status: batch-fetch harvests each), 75 on --timeout."""
    with opened_record(job_record, db) as (record, on_poll, ended):
        job_ids = [entry["job_id"] for entry in record["jobs"]]
        if not job_ids:
            log("batch-wait: the record holds no job; nothing to wait for")
            jobs: list[dict[str, Any]] = []
        else:
            # --timeout also bounds how long a failing service is retried (at least a few seconds for a blip)
            floor = config.wait_seconds("OBJBATCH_WAIT_RETRY_FLOOR")
            policy = client.RetryPolicy(max_elapsed=min(config.retry_seconds(), max(timeout, floor)))
            with client.Service(policy=policy) as service:
                def downloaded(job: dict[str, Any]) -> None:
                    if raw_dir and remote.keep_results(service, job, Path(raw_dir)):
                        on_poll([job], fetched=True)

                jobs = wait(service, job_ids, poll, timeout, on_poll=on_poll, on_finished=downloaded,
                            known=remote.kept(ended, raw_dir))
    for job in jobs:
        if job["status"] != "SUCCESS":
            log(f"batch-wait: job {job['id']} ended {job['status']}; batch-fetch will harvest what it returned")
    with atomic_output(output) as out:
        write_jsonl(({k: job.get(k) for k in FIELDS} for job in jobs), out)


if __name__ == "__main__":
    main()
