"""batch-submit: check request lines and create the batch job(s), exactly once per run.

The job record (job ids, input files, model, custom_ids) is written durably after each job is created, to
--record-dir and to stdout. Submitting the same requests for the same run again finds that record, or, if
it was lost, the jobs by their run id in the service's job list, and creates nothing new.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click

from . import client, ledger
from .common import (Failure, atomic_output, atomic_write_json, command, dumps, file_lock, kill_point,
                     log, read_jsonl, state_dir)

MAX_JOB_REQUESTS = 1_000_000
MAX_JOB_BYTES = 512 * 1000 * 1000
RECORD_VERSION = 1


@dataclass
class Part:
    """The requests of one job, spooled to a temporary file so memory does not grow with the input."""

    spool: IO[bytes]
    custom_ids: list[str] = field(default_factory=list)
    size: int = 0


def read_parts(stream: IO[str], max_requests: int, max_bytes: int) -> list[Part]:
    """Check every line and split into parts that each fit one job."""
    seen: dict[str, int] = {}
    parts: list[Part] = []
    for lineno, request in read_jsonl(stream, "request"):
        custom_id = check_request(lineno, request, seen)
        line = (dumps({"custom_id": custom_id, "body": request["body"]}) + "\n").encode("utf-8")
        size = len(line)
        if not parts or len(parts[-1].custom_ids) >= max_requests or parts[-1].size + size > max_bytes:
            parts.append(Part(tempfile.TemporaryFile("w+b")))
        parts[-1].spool.write(line)
        parts[-1].custom_ids.append(custom_id)
        parts[-1].size += size
    return parts


def check_request(lineno: int, request: object, seen: dict[str, int]) -> str:
    where = f"request line {lineno}"
    if not isinstance(request, dict):
        raise Failure(f"{where} is not a JSON object; each line must be {{\"custom_id\": ..., \"body\": ...}}")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise Failure(f"{where} has no custom_id; give every request a unique non-empty string custom_id")
    if custom_id in seen:
        raise Failure(f"{where}: custom_id '{custom_id}' repeats line {seen[custom_id]}; custom_ids must be unique")
    seen[custom_id] = lineno
    body = request.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise Failure(f"{where} (custom_id '{custom_id}') has no body with messages; build it with build-jsonl")
    return custom_id


def run_id_for(run_name: str, parts: list[Part]) -> str:
    digest = hashlib.sha256(run_name.encode("utf-8"))
    for custom_id in sorted(cid for part in parts for cid in part.custom_ids):
        digest.update(b"\n" + custom_id.encode("utf-8"))
    return digest.hexdigest()[:24]


class Submission:
    """Creates the missing jobs of one run, saving the record after every step that cost something."""

    def __init__(self, service: client.Service, record_path: Path, record: dict, inline_max: tuple[int, int]):
        self.service, self.record_path, self.record = service, record_path, record
        self.inline_max_requests, self.inline_max_bytes = inline_max

    def save(self) -> None:
        atomic_write_json(self.record_path, self.record)

    def submit(self, parts: list[Part], timeout_hours: int) -> None:
        found = None
        for index, part in enumerate(parts):
            entry = self.record["jobs"][index]
            if entry.get("job_id"):
                continue
            if found is None:  # the record may have been lost after a job was created: ask the service
                found = {(j.get("metadata") or {}).get("objbatch_part"): j
                         for j in self.service.jobs_with_run_id(self.record["run_id"])}
            existing = found.get(entry["part"])
            if existing:
                log(f"batch-submit: found job {existing['id']} for part {entry['part']} in the service's job list")
                self._created(entry, existing)
                continue
            self._create(entry, part, timeout_hours)

    def _create(self, entry: dict, part: Part, timeout_hours: int) -> None:
        part.spool.seek(0)
        metadata = {"objbatch_run_name": self.record["run_name"], client.RUN_ID_KEY: self.record["run_id"],
                    "objbatch_part": entry["part"], "objbatch_requests": len(part.custom_ids)}
        if len(part.custom_ids) <= self.inline_max_requests and part.size <= self.inline_max_bytes:
            requests = [json.loads(line) for line in part.spool]
            job = self.service.create_job(self.record["model"], metadata, requests=requests,
                                          timeout_hours=timeout_hours)
        else:
            if not entry.get("input_file"):
                name = f"{self.record['run_id']}-{entry['part'].replace('/', 'of')}.jsonl"
                entry["input_file"] = self.service.upload(name, part.spool)  # streamed from the spool file
                self.save()
                kill_point("after-upload")
            job = self.service.create_job(self.record["model"], metadata, input_file=entry["input_file"],
                                          timeout_hours=timeout_hours)
        kill_point("after-create")
        self._created(entry, job)

    def _created(self, entry: dict, job: dict) -> None:
        entry.update({"job_id": job["id"], "status": job["status"], "created_at": job["created_at"]})
        self.save()
        log(f"batch-submit: job {job['id']} created for {entry['request_count']} requests "
            f"({'file ' + entry['input_file'] if entry.get('input_file') else 'inline'})")


def new_record(run_name: str, run_id: str, model: str, parts: list[Part]) -> dict:
    return {
        "version": RECORD_VERSION, "run_name": run_name, "run_id": run_id, "model": model,
        "endpoint": client.ENDPOINT, "created_at": int(time.time()),
        "request_count": sum(len(p.custom_ids) for p in parts),
        "jobs": [{"part": f"{i + 1}/{len(parts)}", "job_id": None, "input_file": None,
                  "request_count": len(p.custom_ids), "custom_ids": p.custom_ids} for i, p in enumerate(parts)],
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("requests", type=click.File("r", encoding="utf-8"), default="-")
@click.option("-o", "--output", default="-", help="Write the job record here (atomically) instead of stdout.")
@click.option("--run-name", required=True, help="Name of this run; carried in the job metadata.")
@click.option("--model", default="mistral-small-latest", show_default=True, envvar="OBJBATCH_MODEL",
              help="Model for the whole job.")
@click.option("--record-dir", type=click.Path(file_okay=False), default=None,
              help="Where job records are kept durably (default: $XDG_STATE_HOME/objbatch/jobs).")
@click.option("--timeout-hours", default=24, show_default=True, help="Service-side job timeout.")
@click.option("--inline-max-requests", default=10_000, show_default=True, envvar="OBJBATCH_INLINE_MAX_REQUESTS",
              help="Send inline up to this many requests (and --inline-max-bytes); upload a file above.")
@click.option("--inline-max-bytes", default=8_000_000, show_default=True, help="Inline payload limit in bytes.")
@click.option("--max-requests-per-job", default=MAX_JOB_REQUESTS, show_default=True, hidden=True)
@click.option("--max-bytes-per-job", default=MAX_JOB_BYTES, show_default=True, hidden=True)
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Also record the jobs in this library database's ledger.")
@command
def main(requests: IO[str], output: str, run_name: str, model: str, record_dir: str | None, timeout_hours: int,
         inline_max_requests: int, inline_max_bytes: int, max_requests_per_job: int, max_bytes_per_job: int,
         db: str | None) -> None:
    """Check REQUESTS (JSONL of {"custom_id", "body"}; - for stdin) and create the batch job(s).

    Prints the job record (JSON) for batch-wait and batch-fetch. Rerunning with the same requests and
    run name creates no new job."""
    parts = read_parts(requests, max_requests_per_job, max_bytes_per_job)
    run_id = run_id_for(run_name, parts)
    records = Path(record_dir) if record_dir else state_dir() / "jobs"
    record_path = records / f"{run_id}.json"
    refuse_other_requests(records, record_path, run_name)
    with file_lock(records / f"{run_id}.lock"):  # a second submitter of the same run waits, then finds the record
        record = submit_once(parts, record_path, new_record(run_name, run_id, model, parts),
                             (inline_max_requests, inline_max_bytes), timeout_hours)
    if db:
        ledger.record_jobs(db, record)
    with atomic_output(output) as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def refuse_other_requests(records: Path, record_path: Path, run_name: str) -> None:
    """A run whose requests changed after it was submitted must not be submitted again: that would pay
    twice and orphan the first job's results."""
    for other in records.glob("*.json") if records.is_dir() else []:
        if other == record_path:
            continue
        try:
            record = json.loads(other.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("run_name") == run_name and record.get("jobs"):
            jobs = ", ".join(str(e.get("job_id")) for e in record["jobs"])
            raise Failure(f"run {run_name} was already submitted with other requests (job {jobs}); "
                          "finish or cancel that run, or submit these under a new run name")


def submit_once(parts: list[Part], record_path: Path, fresh: dict, inline_max: tuple[int, int],
                timeout_hours: int) -> dict:
    record = json.loads(record_path.read_text()) if record_path.exists() else fresh
    run_name = record["run_name"]
    if not parts:
        log("batch-submit: no requests in the input; nothing to submit")
    elif all(entry.get("job_id") for entry in record["jobs"]):
        log(f"batch-submit: run {run_name} was already submitted as job "
            f"{', '.join(e['job_id'] for e in record['jobs'])}; not submitting again")
    else:
        with client.Service() as service:
            Submission(service, record_path, record, inline_max).submit(parts, timeout_hours)
    return record


if __name__ == "__main__":
    main()
