"""batch-submit: check request lines and create the batch job(s), exactly once per run (submission.py).

The job record is written durably after each paid step: to the run's ledger in the library database with
--db (what make batch does), else to --record-dir; and to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

import click

from .. import client, costs, defaults, ledger, runs
from ..common import (
    EXIT_USAGE,
    SERVICE_ENV,
    Failure,
    Number,
    atomic_output,
    check_run_name,
    cli,
    file_lock,
    log,
    state_dir,
)
from ..options import DOLLARS, TIMEOUT_HOURS, db_option, model_option, output_option, run_option
from ..submission import (
    MAX_JOB_BYTES,
    MAX_JOB_REQUESTS,
    FileStore,
    LedgerStore,
    Plan,
    default_run_name,
    new_record,
    read_parts,
    run_id_for,
    submit_once,
)


@cli("batch-submit requests.jsonl -o job.json",
     "batch-submit --budget 2 --run try-1 < requests.jsonl > job.json",
     "batch-submit --db data/library.db --run run-1 --manifest manifest.jsonl requests.jsonl -o job.json",
     env=(*SERVICE_ENV, "OBJBATCH_MODEL", "OBJBATCH_INLINE_MAX_REQUESTS", "OBJBATCH_TIMEOUT_HOURS",
          "OBJBATCH_MAX_REQUESTS_PER_JOB", "OBJBATCH_MAX_BYTES_PER_JOB", "XDG_STATE_HOME"))
@click.argument("requests", type=click.File("r", encoding="utf-8"), default="-")
@output_option(help="Write the job record here (atomically) instead of stdout.")
@run_option(help="Name of this run, carried in the job metadata (default without --db: requests-<hash of the "
                "request lines>, so the same requests are the same run).")
@model_option(help="Model for the whole job.")
@click.option("--record-dir", type=click.Path(file_okay=False), default=None,
              help="Without --db: where job records are kept durably (default: $XDG_STATE_HOME/objbatch/jobs).")
@db_option(default=None,
           help="The library database whose ledger holds the run (claimed by select-pending --run): the "
                "ledger becomes the run's durable record.")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="With --db: build-jsonl's manifest, recorded in the ledger with the requests.")
@click.option("--timeout-hours", default=defaults.TIMEOUT_HOURS, show_default=True, envvar="OBJBATCH_TIMEOUT_HOURS",
              type=TIMEOUT_HOURS,
              help="Service-side job timeout, 1 to 168 hours (the service's bounds).")
@click.option("--inline-max-requests", default=client.MAX_INLINE_REQUESTS, show_default=True,
              envvar="OBJBATCH_INLINE_MAX_REQUESTS", type=Number(0, client.MAX_INLINE_REQUESTS, whole=True),
              help="Send inline up to this many requests (and --inline-max-bytes); upload a file above. The "
                   "service takes fewer than 10,000 inline.")
@click.option("--inline-max-bytes", default=8_000_000, show_default=True, type=Number(min=0, whole=True),
              help="Inline payload limit in bytes.")
@click.option("--budget", type=DOLLARS, default=None, metavar="USD",
              help="Refuse, before anything is uploaded or created (also when a run is resumed), if the estimate "
                   "is over this many dollars. With --db the refused run is dropped and its files go back.")
@click.option("--allow-unpriced", is_flag=True, help="Submit with a model that has no price in schemas/prices.json.")
@click.option("--max-requests-per-job", default=MAX_JOB_REQUESTS, show_default=True,
              envvar="OBJBATCH_MAX_REQUESTS_PER_JOB", type=Number(1, MAX_JOB_REQUESTS, whole=True),
              help="Split into jobs of at most this many requests (the service's limit: 100,000).")
@click.option("--max-bytes-per-job", default=MAX_JOB_BYTES, show_default=True, envvar="OBJBATCH_MAX_BYTES_PER_JOB",
              type=Number(1, MAX_JOB_BYTES, whole=True),
              help="... and of at most this many bytes of request lines (the service's file limit: 512 MB).")
def main(requests: IO[str], output: str, run_name: str | None, model: str, record_dir: str | None, db: str | None,
         manifest: str | None, timeout_hours: int, inline_max_requests: int, inline_max_bytes: int, budget: float | None,
         allow_unpriced: bool, max_requests_per_job: int, max_bytes_per_job: int) -> None:
    """Check REQUESTS (JSONL of {"custom_id", "body"}; - for stdin) and create the batch job(s).

    Prints the job record (JSON) for batch-wait and batch-fetch. Rerunning with the same requests and
    run name creates no new job."""
    if run_name is None and db:
        raise Failure("with --db, give --run: the run select-pending --run claimed the files for", EXIT_USAGE)
    if run_name is not None:
        check_run_name(run_name)
    costs.check_model(model, allow_unpriced)
    figures = costs.Estimate(model=model)
    parts = read_parts(requests, max_requests_per_job, max_bytes_per_job, figures)
    if not parts and not db:  # by hand: no record of nothing (make's runs record it: their stages follow)
        log("batch-submit: no requests: nothing submitted")
        return
    run_name = run_name or default_run_name(parts, model)

    def plan(library_id: str = "") -> Plan:
        fresh = new_record(run_name, run_id_for(run_name, parts, library_id), model, parts)
        return Plan(fresh, figures, budget, (inline_max_requests, inline_max_bytes), timeout_hours)

    if db:  # the run's lease, in the database: one submitter whatever its user or machine
        with ledger.opened(db) as conn, runs.lease(conn, run_name, wait=False) as ours:
            if not ours:
                raise Failure(f"run {run_name} is being worked on by another process; run this again once it is done")
            figures.learn_answers(conn)
            record = submit_once(parts, LedgerStore(conn, run_name, manifest), plan(conn.library_id))
    else:
        folder = Path(record_dir) if record_dir else state_dir() / "jobs"
        by_hand = plan()
        with file_lock(folder / f"{by_hand.fresh['run_id']}.lock"):  # a second submitter waits, then finds it
            figures.learn_answers(None)
            record = submit_once(parts, FileStore(folder, by_hand.fresh["run_id"], run_name), by_hand)
    with atomic_output(output) as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
