"""Reading the job record that batch-submit writes (the link between a run and its paid jobs)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from . import ledger, runs
from .common import Failure, load_json_file


def load_record(path: str) -> dict:
    if path == "-":
        text = sys.stdin.read()
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Failure(f"the job record on stdin is not valid JSON ({exc.msg}); pipe batch-submit's output") from None
    else:
        record = load_json_file(path, "job record")
    if not isinstance(record, dict) or not isinstance(record.get("jobs"), list):
        raise Failure(f"{path} is not a job record from batch-submit (no 'jobs' list)")
    missing = [entry.get("part", "?") for entry in record["jobs"] if not entry.get("job_id")]
    if missing:
        raise Failure(f"job record {path} has parts without a job ({', '.join(missing)}); "
                      "rerun batch-submit with the same requests to finish submitting")
    return record


@contextmanager
def recording(db: str | None, record: dict, where: str) -> Iterator[Callable[[list[dict]], None]]:
    """With --db: check the record belongs to that database, and yield a function that records the
    service's view of the jobs in its ledger; without, one that does nothing."""
    if not db:
        yield lambda jobs: None
        return
    with ledger.opened(db) as conn:
        runs.check_record(conn, record, f"job record {where}")
        yield lambda jobs: ledger.update_jobs(conn, jobs)
