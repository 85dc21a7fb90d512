"""batch-fetch: download the results of terminal jobs and write one normalized line per custom_id, failures
and requests with no result returned included (results.py says how each line is read).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from .. import client, remote
from ..common import NOT_FINISHED, SERVICE_ENV, NotFinished, atomic_output, cli, log, write_jsonl
from ..job_record import opened_record
from ..options import db_option, output_option
from ..results import harvest, never_sent


@cli("batch-fetch job.json -o results.jsonl",
     "batch-fetch --raw-dir raw/ job.json | validate --manifest manifest.jsonl",
     env=SERVICE_ENV, exits=NOT_FINISHED)
@click.argument("job_record", type=click.Path(dir_okay=False), default="-")
@output_option(help="Write results here (atomically) instead of stdout.")
@click.option("--raw-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the downloaded output and error files here; a rerun reads them instead of downloading.")
@db_option(default=None, help="Also record job states in this database.")
def main(job_record: str, output: str, raw_dir: str | None, db: str | None) -> None:
    """Download the results of every job in JOB_RECORD and print one result line per custom_id.

    Works in every terminal state (SUCCESS, FAILED, TIMEOUT_EXCEEDED, CANCELLED); exits 75 if a job is
    still running."""
    counts = {"ok": 0, "failed": 0, "missing": 0}
    with opened_record(job_record, db) as (record, on_poll, ended), client.Service() as service:
        known = remote.kept(ended, raw_dir)  # ended, results on disk: the service is not asked (it may have lost them)
        jobs = [known.get(entry["job_id"]) or service.get_job(entry["job_id"]) for entry in record["jobs"]]
        running = [j for j in jobs if not client.terminal(j["status"])]
        if running:
            raise NotFinished(f"job {running[0]['id']} is still {running[0]['status']}; "
                              "run batch-wait first, then batch-fetch again", label="still running")
        on_poll(jobs)
        with atomic_output(output) as out:
            with _raw_dir(raw_dir) as kept:
                for job, entry in zip(jobs, record["jobs"], strict=True):
                    write_jsonl(_counted(harvest(service, job, entry["custom_ids"], kept), counts), out)
            write_jsonl(_counted(never_sent(record.get("not_submitted") or []), counts), out)
        on_poll(jobs, fetched=True)
    log(f"batch-fetch: {sum(counts.values())} results: {counts['ok']} succeeded, {counts['failed']} failed, "
        f"{counts['missing']} with no result returned")


@contextmanager
def _raw_dir(raw_dir: str | None) -> Iterator[Path]:
    """The folder that keeps downloads: --raw-dir, or a temporary one removed afterwards."""
    if raw_dir:
        yield Path(raw_dir)
        return
    with tempfile.TemporaryDirectory(prefix="objbatch-fetch-") as tmp:
        yield Path(tmp)


def _counted(results: Iterator[dict[str, Any]], counts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for result in results:
        key = "ok" if result["ok"] else ("missing" if result.get("missing") else "failed")
        counts[key] += 1
        yield result


if __name__ == "__main__":
    main()
