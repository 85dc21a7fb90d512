"""Submission: request lines checked and split into parts that each fit one job, and the run's job(s)
created exactly once. The job record (job ids, input files, model, custom_ids) is written durably after
each paid step: to the run's ledger in the library database (LedgerStore: what make batch does), else to a
record folder (FileStore: by hand). Submitting the same run again finds that record, or, if it was lost
between creating a job and recording it, the job by its run id in the service's job list, and creates
nothing new."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from . import client, config, costs, kinds, ledger, runs
from .common import (
    Failure,
    atomic_output,
    atomic_write_json,
    count,
    dumps,
    kill_point,
    log,
    read_jsonl_lines,
    write_jsonl,
)
from .states import RunState

MAX_JOB_REQUESTS = client.MAX_JOB_REQUESTS  # the service's limits (docs/mistral-batch-api.md, "Limits")
MAX_JOB_BYTES = client.MAX_FILE_BYTES
RECORD_VERSION = runs.RECORD_VERSION
UNPRICED_FIX = "add the model's price to schemas/prices.json, or leave BUDGET out"


@dataclass
class Part:
    """The requests of one job, spooled to a temporary file so memory does not grow with the input."""

    spool: IO[bytes]
    custom_ids: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)  # of each line as sent: recorded, and a default run name
    size: int = 0


def read_parts(stream: IO[str], max_requests: int, max_bytes: int, figures: costs.Estimate) -> list[Part]:
    """Check every line and split into parts that each fit one job; count what they would cost; keep a
    digest of each line (recorded in the ledger as what was sent, and to name a run after its requests)."""
    seen: dict[str, int] = {}
    parts: list[Part] = []
    for lineno, request, text in read_jsonl_lines(stream, "request"):
        custom_id = check_request(lineno, request, seen)
        figures.add_request(request["body"])
        if request.keys() != {"custom_id", "body"}:  # other keys are not the service's: send the two it reads
            text = dumps({"custom_id": custom_id, "body": request["body"]})
        line = (text + "\n").encode("utf-8")
        size = len(line)
        if not parts or len(parts[-1].custom_ids) >= max_requests or parts[-1].size + size > max_bytes:
            parts.append(Part(tempfile.TemporaryFile("w+b")))
        parts[-1].spool.write(line)
        parts[-1].custom_ids.append(custom_id)
        parts[-1].digests.append(hashlib.blake2b(line, digest_size=16).digest())
        parts[-1].size += size
    return parts


def check_request(lineno: int, request: object, seen: dict[str, int]) -> str:
    where = f"request line {lineno}"
    if not isinstance(request, dict):
        raise Failure(f"{where} is not a JSON object; each line must be {{\"custom_id\": ..., \"body\": ...}}")
    if kinds.kind_of(request) not in ("request", None):
        kinds.expect(request, "request", where)  # a result, a decision, a manifest line: says which
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


def default_run_name(parts: list[Part], model: str) -> str:
    """Without --run (by hand): a name derived from the request lines (in any order), the model and the
    service, so submitting the same requests again finds the same run and creates nothing new, while the
    same requests for another model or service are another run."""
    digest = hashlib.sha256(f"{model}\n{config.server_url()}\n".encode())
    for line_digest in sorted(d for part in parts for d in part.digests):
        digest.update(line_digest)
    return f"requests-{digest.hexdigest()[:12]}"


def run_id_for(run_name: str, parts: list[Part], library_id: str = "") -> str:
    """Tags the run's jobs at the service: its name, what it sends and the database it belongs to (so a
    copy of the database never finds, adopts or cancels the original's jobs)."""
    digest = hashlib.sha256(f"{library_id}\n{run_name}".encode("utf-8") if library_id else run_name.encode("utf-8"))
    for custom_id in sorted(cid for part in parts for cid in part.custom_ids):
        digest.update(b"\n" + custom_id.encode("utf-8"))
    return digest.hexdigest()[:24]


class FileStore:
    """By hand: the job record in the record folder is the durable record of the run. It is named by the
    run id, which the request lines make: other requests are another record, never a changed one."""

    def __init__(self, folder: Path, run_id: str, run_name: str):
        self.folder, self.path, self.run_name = folder, folder / f"{run_id}.json", run_name

    def existing(self) -> dict[str, Any] | None:
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def current(self, record: dict[str, Any], plan: "Plan", parts: list[Part]) -> dict[str, Any] | None:
        return record  # the record of exactly these requests (its name says so)

    def cancelling(self) -> bool:
        return False  # a run submitted by hand is cancelled at the service (batch-cancel job.json), not here

    def begin(self, record: dict[str, Any], figures: costs.Estimate, parts: list[Part]) -> None:
        """The record is written before anything is created (as the ledger freezes a run): a rerun after a
        crash resumes it, its budget checked again, and asks the service for jobs already created."""
        refuse_other_requests(self.folder, self.path, self.run_name)
        self.save(record)

    def refuse(self, reason: str, figures: costs.Estimate) -> None:
        fix = f"give --budget {costs.budget_above(figures.usd)} or more, or send fewer requests" \
            if figures.usd is not None else UNPRICED_FIX
        raise Failure(f"{reason}; nothing was submitted: {fix}")

    def save(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path, record)

    def cache_manifest(self) -> None:
        pass  # by hand, the manifest is the user's file, and no ledger says otherwise


class LedgerStore:
    """In a run (make batch): the database ledger is the durable record. What the run sends (manifest,
    parts, run id) is frozen there before anything is created; each job is recorded as soon as it exists."""

    def __init__(self, conn: ledger.Library, run_name: str, manifest_path: str | None):
        self.conn, self.manifest_path = conn, manifest_path
        self.run = runs.require(conn, run_name)
        if self.run.finished:
            raise Failure(f"run {run_name} is finished ({self.run.state}); nothing is submitted for it again")

    def existing(self) -> dict[str, Any] | None:
        return runs.record(self.conn, self.run) if self.run.frozen else None

    def current(self, record: dict[str, Any], plan: "Plan", parts: list[Part]) -> dict[str, Any] | None:
        """The recorded submission, or None when it began with other requests (the files changed, or the
        run was interrupted and rebuilt) and the service never saw it: these requests are sent instead."""
        if self.cancelling() or any(entry.get("job_id") for entry in record["jobs"]) or \
                (record["run_id"] == plan.fresh["run_id"] and not self.sends_other_lines(parts)):
            return record
        return start_over(self, record, plan)

    def cancelling(self) -> bool:
        return self.run.state == RunState.CANCELLING

    def begin(self, record: dict[str, Any], figures: costs.Estimate, parts: list[Part]) -> None:
        self._check_manifest(record)
        digests = {cid: digest.hex() for part in parts for cid, digest in zip(part.custom_ids, part.digests, strict=True)}
        with ledger.transaction(self.conn):
            runs.freeze(self.conn, self.run.name, record["run_id"], self._manifest(),
                        [entry["custom_ids"] for entry in record["jobs"]], digests, figures.as_dict(),
                        record["server"])
        record.update(library_id=self.conn.library_id, db_path=self.conn.path)

    def _manifest(self) -> Iterator[tuple[dict[str, Any], str]]:
        """(entry, its line) of build-jsonl's manifest, one at a time."""
        if not self.manifest_path:
            raise Failure("submitting a run with --db needs --manifest (build-jsonl's), so the ledger knows which "
                          "file each request is")
        with open(self.manifest_path, encoding="utf-8") as handle:
            for _, entry, text in read_jsonl_lines(handle, "manifest"):
                yield entry, text

    def sends_other_lines(self, parts: list[Part]) -> bool:
        """Whether these request lines differ from the ones the ledger recorded (same files and content,
        another request: a new prompt, an edited requests file)."""
        recorded = runs.digests(self.conn, self.run.name)
        given = {cid: digest.hex() for part in parts for cid, digest in zip(part.custom_ids, part.digests, strict=True)}
        return any(given.get(cid) != digest for cid, digest in recorded.items())

    def _check_manifest(self, record: dict[str, Any]) -> None:
        """The manifest names exactly the requests sent, and only files the run claimed."""
        sent, strangers = set(), []
        claimed = runs.claimed_paths(self.conn, self.run.name)
        for entry, _ in self._manifest():
            if entry.get("custom_id"):
                sent.add(entry["custom_id"])
            if entry.get("file_path") not in claimed:
                strangers.append(entry.get("file_path"))
        if sent != {cid for entry in record["jobs"] for cid in entry["custom_ids"]} or strangers:
            raise Failure(f"the manifest {self.manifest_path} does not match the requests or run {self.run.name}'s "
                          "files; rebuild both with build-jsonl from the run's selection")

    def refuse(self, reason: str, figures: costs.Estimate) -> None:
        """Over budget: nothing was sent; the run leaves the ledger and gives its files back, so the advice
        (the same NAME and number of files with a higher BUDGET) works as given."""
        if runs.has_jobs(self.conn, self.run.name):
            raise Failure(f"{reason}; part of run {self.run.name} was submitted already, the rest was not: "
                          f"raise BUDGET to finish it, or cancel it (make cancel NAME={self.run.name})")
        with ledger.transaction(self.conn):
            selected = runs.forget(self.conn, self.run.name)
        # MAX too: without it the advised command would select every pending file and be refused again
        fix = f"make batch BUDGET={costs.budget_above(figures.usd)} NAME={self.run.name} MAX={selected} " \
              "(or a lower MAX)" \
            if figures.usd is not None else UNPRICED_FIX
        raise Failure(f"{reason}; nothing was submitted and run {self.run.name} was dropped (its files are back in "
                      f"the queue): {fix}")

    def save(self, record: dict[str, Any]) -> None:
        runs.save_record(self.conn, record)

    def cache_manifest(self) -> None:
        """The folder's manifest is a cache of what the ledger says was sent: rewritten when the requests
        given here are not what was sent (the folder was rebuilt after the files changed)."""
        if self.manifest_path:
            with atomic_output(self.manifest_path) as out:
                write_jsonl(runs.manifest(self.conn, self.run.name), out)
            log(f"batch-submit: {self.manifest_path} rewritten from the ledger: what run {self.run.name} sent")


class Submission:
    """Creates the missing jobs of one run, saving the record after every step that cost something."""

    def __init__(self, service: client.Service, store: FileStore | LedgerStore, record: dict[str, Any],
                 inline_max: tuple[int, int]):
        self.service, self.store, self.record = service, store, record
        self.inline_max_requests, self.inline_max_bytes = inline_max

    def save(self) -> None:
        self.store.save(self.record)

    def submit(self, parts: list[Part], timeout_hours: int, before_creating: Callable[[], None] | None = None) -> None:
        """Create the parts with no job; `before_creating` runs once before the first job is created (the
        budget, when a frozen run is resumed)."""
        found = None
        for index, part in enumerate(parts):
            entry = self.record["jobs"][index]
            if entry.get("job_id"):
                continue
            if found is None:  # the record may have been lost after a job was created: ask the service
                found = self.service.jobs_by_part(self.record["run_id"])
            existing = found.get(entry["part"])
            if existing:
                self._created(entry, existing, f"found in the service's job list (part {entry['part']})")
                continue
            if before_creating:
                before_creating()
                before_creating = None
            self._create(entry, part, timeout_hours)

    def _create(self, entry: dict[str, Any], part: Part, timeout_hours: int) -> None:
        part.spool.seek(0)
        metadata = job_metadata(self.record, entry)
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

    def _created(self, entry: dict[str, Any], job: dict[str, Any], how: str = "") -> None:
        entry.update({"job_id": job["id"], "status": job["status"], "created_at": job["created_at"]})
        self.save()
        how = how or f"created for {count(entry['request_count'], 'request')} " \
                     f"({'file ' + entry['input_file'] if entry.get('input_file') else 'inline'})"
        log(f"batch-submit: job {job['id']} {how}")


def job_metadata(record: dict[str, Any], entry: dict[str, Any]) -> dict[str, str]:
    """The tags of a part's job at the service (how a lost job is found again)."""
    return {"objbatch_run_name": record["run_name"], client.RUN_ID_KEY: record["run_id"],
            client.PART_KEY: entry["part"], "objbatch_requests": str(entry["request_count"])}


def check_same_target(record: dict[str, Any], fresh: dict[str, Any]) -> None:
    """A run lives at one service, with one model: following it elsewhere would find nothing (or pay again)."""
    name = record["run_name"]
    runs.check_service(name, record.get("server"))
    if record.get("model") and record["model"] != fresh["model"]:
        raise Failure(f"run {name} was submitted with model {record.get('model')}, not {fresh['model']}: leave "
                      "--model out to follow it, or give another --run")


def new_record(run_name: str, run_id: str, model: str, parts: list[Part]) -> dict[str, Any]:
    return {
        "version": RECORD_VERSION, "run_name": run_name, "run_id": run_id, "model": model,
        "server": config.server_url(),
        "endpoint": client.ENDPOINT, "created_at": int(time.time()),
        "request_count": sum(len(p.custom_ids) for p in parts),
        "jobs": [{"part": f"{i + 1}/{len(parts)}", "job_id": None, "input_file": None,
                  "request_count": len(p.custom_ids), "custom_ids": p.custom_ids} for i, p in enumerate(parts)],
    }


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


@dataclass
class Plan:
    """What this invocation would submit, and how."""

    fresh: dict[str, Any]
    figures: costs.Estimate
    budget: float | None
    inline_max: tuple[int, int]
    timeout_hours: int


def check_budget(store: FileStore | LedgerStore, plan: Plan) -> None:
    """Refuse (the store says how) if what is about to be created is estimated over the budget."""
    refusal = costs.over_budget(plan.figures, plan.budget)
    if refusal:
        store.refuse(f"{refusal} ({plan.figures.requests:,} requests, {plan.figures.input_tokens:,} input tokens, "
                     f"{costs.price_note(plan.figures.model)})", plan.figures)


def submit_once(parts: list[Part], store: FileStore | LedgerStore, plan: Plan) -> dict[str, Any]:
    record = store.existing()
    if record is not None:
        record = store.current(record, plan, parts)
    resumed = record is not None  # its budget is checked again before any job is created now
    if record is None:
        if not parts:
            log("batch-submit: no requests in the input; nothing to submit")
            return plan.fresh
        config.api_key()  # a missing or unusable key is said first, before any figure
        for entry in plan.fresh["jobs"]:  # every value the service bounds, before anything is uploaded
            client.check_job(plan.fresh["model"], job_metadata(plan.fresh, entry), plan.timeout_hours)
        check_budget(store, plan)
        log(f"batch-submit: estimate {costs.money(plan.figures.usd)} for {plan.figures.requests:,} requests "
            f"({plan.figures.input_tokens:,} input tokens); {costs.price_note(plan.figures.model)}")
        store.begin(plan.fresh, plan.figures, parts)
        record = plan.fresh
    run_name = record["run_name"]
    check_same_target(record, plan.fresh)
    if all(entry.get("job_id") for entry in record["jobs"]):
        log(f"batch-submit: run {run_name} was already submitted as job "
            f"{', '.join(e['job_id'] for e in record['jobs'])}; not submitting again")
        return record
    with client.Service(before_paying=True) as service:
        submission = Submission(service, store, record, plan.inline_max)
        if record["run_id"] != plan.fresh["run_id"] or len(record["jobs"]) != len(parts):
            finish_changed(submission)
            store.cache_manifest()
        elif not store.cancelling():  # a cancelled run creates nothing new
            submission.submit(parts, plan.timeout_hours, (lambda: check_budget(store, plan)) if resumed else None)
    return record


def start_over(store: LedgerStore, record: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    """A submission that began with other requests (the files changed, or the run was interrupted and
    rebuilt) and that the service never saw is undone, so these requests are submitted instead."""
    with client.Service(before_paying=True) as service:
        if service.jobs_by_part(record["run_id"]):
            return record  # a job exists after all: finish_changed records it
    with ledger.transaction(store.conn):
        runs.unfreeze(store.conn, store.run.name)
    store.run = runs.require(store.conn, store.run.name)
    log(f"batch-submit: run {record['run_name']}'s earlier submission never reached the service; submitting "
        "these requests instead")
    return None


def finish_changed(submission: Submission) -> None:
    """Submission began with other requests than these: only the jobs created for it count. A part never
    created cannot be sent as it was."""
    record = submission.record
    for entry, job in client.unrecorded(record, submission.service.jobs_by_part(record["run_id"])):
        submission._created(entry, job, f"found in the service's job list (part {entry['part']})")
    missing = [entry["part"] for entry in record["jobs"] if not entry.get("job_id")]
    if missing:
        raise Failure(f"run {record['run_name']} began submitting other requests than these, and part "
                      f"{', '.join(missing)} was never created; cancel the run (make cancel NAME={record['run_name']}) "
                      "to collect what its other parts did, then start a new run")
