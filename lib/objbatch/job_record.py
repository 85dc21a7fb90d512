"""Reading the job record that batch-submit writes (the link between a run and its paid jobs)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator, Protocol

from . import kinds, ledger, runs
from .common import EXIT_USAGE, Failure, load_json_file, log


def load_record(path: str) -> dict[str, Any]:
    """The record in `path` ('-': stdin); every part must have its job."""
    record = _read(path)
    _require_jobs(record, path)
    return record


def _read(path: str) -> dict[str, Any]:
    if path == "-":
        if sys.stdin.isatty():  # a bare command at a prompt would otherwise wait without a word
            log("reading the job record from the terminal; end with Ctrl-D (or give the job.json batch-submit "
                "wrote, see --help)")
        text = sys.stdin.read()
        if not text.strip():
            raise Failure("no job record on stdin: give the file batch-submit wrote (e.g. job.json), or pipe "
                          "batch-submit into this command", EXIT_USAGE)
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            _name_first_line(text, "stdin")
            raise Failure(f"the job record on stdin is not valid JSON ({exc.msg}); pipe batch-submit's output") from None
    else:
        try:
            record = load_json_file(path, "job record")
        except Failure:
            with open(path, encoding="utf-8", errors="replace") as handle:
                _name_first_line(handle.readline(1 << 20), path)
            raise
    if kinds.kind_of(record) not in ("job record", None):
        kinds.expect(record, "job record", path)
    if not isinstance(record, dict) or not isinstance(record.get("jobs"), list):
        raise Failure(f"{path} is not a job record from batch-submit (no 'jobs' list)")
    runs.check_service(str(record.get("run_name")), record.get("server"))
    return record


def _name_first_line(text: str, where: str) -> None:
    """JSON lines where a job record belongs (results, requests, decisions): a Failure saying which."""
    try:
        first = json.loads(text.lstrip().split("\n", 1)[0])
    except (json.JSONDecodeError, RecursionError):
        return
    if kinds.kind_of(first):
        kinds.expect(first, "job record", f"{where} (its first line)")


def _require_jobs(record: dict[str, Any], path: str) -> None:
    missing = [entry.get("part", "?") for entry in record["jobs"] if not entry.get("job_id")]
    if missing:
        raise Failure(f"job record {path} has parts without a job ({', '.join(missing)}); "
                      "rerun batch-submit with the same requests to finish submitting")


class RecordJobs(Protocol):
    """Records the service's view of a run's jobs (with `fetched`: their result files are downloaded)."""

    def __call__(self, jobs: list[dict[str, Any]], fetched: bool = False) -> None: ...


def _record_nothing(jobs: list[dict[str, Any]], fetched: bool = False) -> None:
    """Without a database there is no ledger to record the jobs in."""


@contextmanager
def opened_record(path: str, db: str | None) -> Iterator[tuple[dict[str, Any], RecordJobs, dict[str, Any]]]:
    """(the record, a function recording the service's view of its jobs, the jobs the ledger knows ended).
    With --db the record must be of that database, and for a run in its ledger the ledger's record wins
    (the file is only a cache: a cancel may have changed the run since it was written)."""
    record = _read(path)
    if not db:
        _require_jobs(record, path)
        yield record, _record_nothing, {}
        return
    with ledger.opened(db) as conn:
        runs.check_record(conn, record, f"job record {path}")
        run = runs.get(conn, str(record.get("run_name"))) if record.get("library_id") else None
        if run is not None and (run.frozen or run.finished):
            authority = runs.record(conn, run)
            if [j["job_id"] for j in authority["jobs"]] != [j.get("job_id") for j in record["jobs"]]:
                log(f"{path} is out of date: using run {run.name}'s record in the database ledger")
            record = authority
        _require_jobs(record, path)
        yield record, partial(runs.record_jobs, conn), runs.ended_jobs(conn, [j["job_id"] for j in record["jobs"]])
