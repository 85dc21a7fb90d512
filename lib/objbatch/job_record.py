"""Reading the job record that batch-submit writes (the link between a run and its paid jobs)."""

from __future__ import annotations

import json
import sys

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
