"""batch-wait: poll a run's jobs until every one is terminal; progress on stderr, final states on stdout."""

from __future__ import annotations

import time

import click

from . import client
from .common import NotFinished, Progress, atomic_output, command, log, write_jsonl
from .job_record import load_record, recording

FIELDS = ("id", "status", "total_requests", "completed_requests", "succeeded_requests", "failed_requests",
          "output_file", "error_file", "errors", "created_at", "started_at", "completed_at")


def progress_line(jobs: list[dict], elapsed: float) -> str:
    total = sum(j["total_requests"] for j in jobs)
    done = sum(j["completed_requests"] for j in jobs)
    ok = sum(j["succeeded_requests"] for j in jobs)
    failed = sum(j["failed_requests"] for j in jobs)
    statuses = ",".join(sorted({j["status"] for j in jobs}))
    return f"batch-wait: {statuses} {done}/{total} done, {ok} succeeded, {failed} failed, {_clock(elapsed)} elapsed"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def wait(service: client.Service, job_ids: list[str], poll: float, timeout: float,
         on_poll=lambda jobs: None) -> list[dict]:
    """Poll until all jobs are terminal; NotFinished after `timeout` seconds."""
    started = time.monotonic()
    progress = Progress()
    while True:
        jobs = [service.get_job(job_id) for job_id in job_ids]
        on_poll(jobs)
        elapsed = time.monotonic() - started
        line = progress_line(jobs, elapsed)
        progress.update(line, line.split(",", 1)[0] + str([j["completed_requests"] for j in jobs]))
        if all(client.terminal(j["status"]) for j in jobs):
            progress.done()
            return jobs
        if elapsed + poll > timeout:
            progress.done()
            running = [j for j in jobs if not client.terminal(j["status"])]
            raise NotFinished(
                f"job {', '.join(j['id'] for j in running)} is still {running[0]['status']} "
                f"({sum(j['completed_requests'] for j in running)}/{sum(j['total_requests'] for j in running)}) "
                f"after {_clock(elapsed)}; nothing is lost: rerun the same command (or make batch) later to "
                "collect it", label="still running")
        time.sleep(poll)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("job_record", type=click.Path(dir_okay=False), default="-")
@click.option("--poll", default=30.0, show_default=True, help="Seconds between status checks.")
@click.option("--timeout", default=7200.0, show_default=True,
              help="Give up waiting after this many seconds and exit 75; the job keeps running and a rerun resumes.")
@click.option("-o", "--output", default="-", help="Write the final job states here (atomically) instead of stdout.")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Also record job states in this database.")
@command
def main(job_record: str, poll: float, timeout: float, output: str, db: str | None) -> None:
    """Wait until every job in JOB_RECORD (from batch-submit; - for stdin) is terminal.

    Exit 0 when all are terminal (whatever the status: batch-fetch harvests each), 75 on --timeout."""
    record = load_record(job_record)
    job_ids = [entry["job_id"] for entry in record["jobs"]]
    if not job_ids:
        log("batch-wait: the record holds no job; nothing to wait for")
    with recording(db, record, job_record) as on_poll, client.Service() as service:
        jobs = wait(service, job_ids, poll, timeout, on_poll=on_poll) if job_ids else []
    for job in jobs:
        if job["status"] != "SUCCESS":
            log(f"batch-wait: job {job['id']} ended {job['status']}; batch-fetch will harvest what it returned")
    with atomic_output(output) as out:
        write_jsonl(({k: job.get(k) for k in FIELDS} for job in jobs), out)


if __name__ == "__main__":
    main()
