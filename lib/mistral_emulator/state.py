"""The emulator's state: files, jobs and the record of what it was asked, persisted under --state-dir (a
killed and restarted emulator still knows them). Jobs move QUEUED -> RUNNING -> terminal by wall clock;
their answers are produced, streamed to result files, when they end."""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from . import faults, model
from .errors import gone, not_found, unprocessable

RUNNING = {"QUEUED", "RUNNING", "CANCELLATION_REQUESTED"}
DEFAULT_PACE = {"queue_seconds": 0.2, "seconds_per_request": 0.002, "min_run_seconds": 0.3,
                "max_run_seconds": 5.0, "cancel_seconds": 0.2,
                "seconds_per_hour": 3600.0,  # the scaled clock: timeouts and retention are counted in its hours
                "hold_at": None}  # a fraction 0-1: a job created now stops there, RUNNING, until released
RESULT_RETENTION_HOURS = 24      # result files can be downloaded this long after their job finished
UPLOAD_RETENTION_HOURS = 30 * 24  # uploaded files are kept 30 days


def pace_problem(pace: Any) -> str | None:
    """Why a pace change cannot be taken (None: it can): an object of known settings, each a number of at
    least 0. A wrong value is refused, never saved: state.json would break every later job."""
    if not isinstance(pace, dict):
        return "give a JSON object, e.g. {\"seconds_per_request\": 0.08}"
    for key, value in pace.items():
        if key not in DEFAULT_PACE:
            return f"unknown setting {key!r}; known: {', '.join(DEFAULT_PACE)}"
        if key == "hold_at" and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                       or not 0 <= value <= 1):
            return f"hold_at must be null or a fraction from 0 to 1 (got {value!r})"
        if key == "hold_at":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"{key} must be a number of at least 0 (got {value!r})"
    return None


def write_private(path: Path, data: bytes) -> None:
    """A file only this user can read (0600), as state.json is: the requests hold the library's text."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`path` appears complete or not at all."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value).encode())


def _saved(path: Path) -> dict:
    """A JSON object the emulator saved, or {} if there is none; a damaged one is refused naming the file."""
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); move it away to start with an empty state") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a JSON object; move it away to start with an empty state")
    return saved


class State:
    """Files, jobs and the record of what was asked, persisted under the state dir."""

    def __init__(self, root: Path, fault_config: dict, pace: dict):
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / "files").mkdir(mode=0o700, exist_ok=True)
        self.lock = threading.RLock()
        saved = _saved(root / "state.json")
        self.files: dict[str, dict] = saved.get("files", {})
        self.jobs: dict[str, dict] = saved.get("jobs", {})
        self.record: dict[str, Any] = saved.get("record", {"uploads": [], "jobs_created": [], "polls": {},
                                                          "calls": 0, "http_faults": 0, "cancels": []})
        self.faults = {**faults.DEFAULTS, **saved.get("faults", {}), **fault_config}
        kept = {k: v for k, v in (saved.get("pace") or {}).items() if pace_problem({k: v}) is None}
        self.pace = {**DEFAULT_PACE, **kept, **pace}  # a bad value saved by an older emulator is dropped
        seen = root / "seen.json"  # how often each custom_id was submitted: written only when a job is created
        self.seen: dict[str, int] = _saved(seen)
        self.clock_offset: float = saved.get("clock_offset", 0.0)  # POST /_emulator/advance moves the clock on
        self.record.setdefault("deleted_files", [])
        self._ids: dict[str, tuple[list[str], dict[str, int]]] = {}
        self._kinds: dict[str, list[str]] = {}
        self.save()

    def save(self) -> None:
        """The small state (file and job metadata, counters): cheap enough to write on every call. Each
        job's custom_ids live in a file of their own, written once."""
        atomic_write_json(self.root / "state.json", {
            "files": self.files, "jobs": self.jobs, "record": self.record, "faults": self.faults,
            "pace": self.pace, "clock_offset": self.clock_offset})

    def now(self) -> float:
        """The emulator's clock: wall time, moved on by /_emulator/advance."""
        return time.time() + self.clock_offset

    def hours(self, n: float) -> float:
        """n hours of the scaled clock, in seconds."""
        return n * self.pace["seconds_per_hour"]

    def add_job_ids(self, job_id: str, custom_ids: list[str]) -> None:
        occurrences = {cid: self.seen.get(cid, 0) for cid in custom_ids}
        for cid in custom_ids:
            self.seen[cid] = self.seen.get(cid, 0) + 1
        atomic_write_json(self.root / "files" / f"{job_id}.ids.json",
                          {"custom_ids": custom_ids, "occurrences": occurrences})
        atomic_write_json(self.root / "seen.json", self.seen)
        self._ids[job_id] = (custom_ids, occurrences)

    def ids(self, job_id: str) -> tuple[list[str], dict[str, int]]:
        """(custom_ids in order, how often each was submitted before this job)."""
        if job_id not in self._ids:
            data = json.loads((self.root / "files" / f"{job_id}.ids.json").read_text())
            self._ids[job_id] = (data["custom_ids"], data["occurrences"])
        return self._ids[job_id]

    # ---------------------------------------------------------------- files

    def add_file(self, name: str, content: bytes, purpose: str, sample_type: str, source: str) -> dict:
        path = self.root / "files" / f".{uuid.uuid4()}.part"
        atomic_write_bytes(path, content)
        return self.register_file(path, name, purpose, sample_type, source)

    def register_file(self, path: Path, name: str, purpose: str, sample_type: str, source: str) -> dict:
        """Give a written file an id and its metadata."""
        file_id = str(uuid.uuid4())
        lines = trailing = 0
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                lines += block.count(b"\n")
                trailing = block[-1:] != b"\n"
        size = path.stat().st_size
        os.replace(path, self.root / "files" / file_id)
        meta = {"id": file_id, "object": "file", "bytes": size, "created_at": int(self.now()),
                "filename": name, "purpose": purpose, "sample_type": sample_type, "source": source,
                "num_lines": lines + int(bool(trailing)),
                "mimetype": "application/jsonl" if name.endswith(".jsonl") else "application/octet-stream",
                "signature": None, "expires_at": None, "visibility": "workspace", "deleted": False,
                "_kept_until": self.now() + self.hours(UPLOAD_RETENTION_HOURS)}
        self.files[file_id] = meta
        return meta

    def file(self, file_id: str) -> dict:
        meta = self.files.get(file_id)
        if meta is None or meta["deleted"] or self.now() > meta.get("_kept_until", float("inf")):
            raise not_found("File")
        return meta

    def content(self, file_id: str) -> bytes:
        meta = self.file(file_id)
        if self.now() > meta.get("_downloadable_until", float("inf")):
            raise gone(file_id)
        return (self.root / "files" / file_id).read_bytes()

    # ---------------------------------------------------------------- jobs

    def job_view(self, job: dict, inline: bool = False) -> dict:
        self._advance(job)
        view = {k: job[k] for k in ("id", "object", "input_files", "metadata", "endpoint", "model", "agent_id",
                                    "output_file", "error_file", "errors", "status", "created_at",
                                    "total_requests", "completed_requests", "succeeded_requests",
                                    "failed_requests", "started_at", "completed_at")}
        view["outputs"] = None
        if inline and job["status"] not in RUNNING:
            view["outputs"] = [json.loads(line) for fid in (job["output_file"], job["error_file"]) if fid
                               for line in self.content(fid).decode().splitlines() if line.strip()]
        return view

    def _advance(self, job: dict) -> None:
        """Move a job along its wall-clock timeline; produce its files once it ends."""
        if job["status"] not in RUNNING:
            return
        now = self.now()
        t = job["timeline"]
        n = job["total_requests"]
        if t.get("cancel_at") is not None:
            stop_at = t["cancel_at"]
            done = self._processed_by(job, stop_at)
            if now < stop_at + self.pace["cancel_seconds"]:
                job["status"] = "CANCELLATION_REQUESTED"
                self._count(job, done)
                return
            self._finish(job, "CANCELLED", done, stop_at + self.pace["cancel_seconds"])
            return
        deadline = t["created"] + job["timeout_hours"] * t.get("seconds_per_hour", 3600.0)
        if now >= deadline and t["end"] > deadline:
            self._finish(job, "TIMEOUT_EXCEEDED", self._processed_by(job, deadline), deadline)
            return
        if now < t["start"]:
            job["status"] = "QUEUED"
            return
        job["started_at"] = int(t["start"])
        if now < t["end"] or t.get("hold") is not None:  # held: RUNNING at its fraction until released
            job["status"] = "RUNNING"
            self._count(job, self._processed_by(job, now))
            return
        outcome = job["fault"]["job_status"]
        done = n if outcome == "SUCCESS" else math.floor(n * job["fault"]["partial"])
        self._finish(job, outcome if outcome in ("SUCCESS", "FAILED", "TIMEOUT_EXCEEDED") else "SUCCESS",
                     done, t["end"])

    def _processed_by(self, job: dict, when: float) -> int:
        t = job["timeline"]
        if when <= t["start"]:
            return 0
        frac = min(1.0, (when - t["start"]) / max(t["end"] - t["start"], 1e-9))
        if t.get("hold") is not None:
            frac = min(frac, t["hold"])
        return min(job["total_requests"], math.floor(job["total_requests"] * frac))

    def _count(self, job: dict, done: int) -> None:
        if job["id"] not in self._kinds:  # fates are fixed at creation: worked out once per job
            self._kinds[job["id"]] = [self._fate(job, cid)["kind"] for cid in self.ids(job["id"])[0]]
        kinds = self._kinds[job["id"]][:done]
        job["completed_requests"] = done
        job["failed_requests"] = sum(1 for k in kinds if k in ("error_output", "error_file"))
        job["succeeded_requests"] = sum(1 for k in kinds if k == "ok")

    def _fate(self, job: dict, custom_id: str) -> dict:
        return faults.fate(job["fault"], custom_id, self.ids(job["id"])[1].get(custom_id, 0))

    def _finish(self, job: dict, status: str, done: int, ended: float) -> None:
        """Answer the first `done` requests, streaming result lines to the output and error files."""
        sinks = {"batch_result": _Sink(self.root), "batch_error": _Sink(self.root)}
        shuffle = job["fault"]["shuffle"]
        failed = answered = 0
        for index, request in enumerate(self._requests(job)):
            if index >= done:
                break
            fate = self._fate(job, request["custom_id"])
            if fate["kind"] == "missing":
                continue
            line = self._result_line(job, request, fate, cached=index > 0)
            sinks["batch_error" if fate["kind"] == "error_file" else "batch_result"].add(line, shuffle)
            answered += 1
            failed += line["error"] is not None
        job.update({"status": status, "completed_requests": done, "failed_requests": failed,
                    "succeeded_requests": answered - failed, "completed_at": int(ended),
                    "started_at": job["started_at"] or (int(job["timeline"]["start"]) if done else None)})
        for sample_type, sink in sinks.items():
            meta = sink.close(f"shuffle|{sample_type}|{job['id']}" if shuffle else None)
            if meta:
                key = "output_file" if sample_type == "batch_result" else "error_file"
                result = self.register_file(meta, f"{job['id']}_{sample_type}.jsonl", "batch", sample_type, "mistral")
                result["_downloadable_until"] = ended + self.hours(RESULT_RETENTION_HOURS)
                job[key] = result["id"]
        if failed:
            job["errors"] = [{"message": "Some requests failed", "count": failed}]
        if status in ("FAILED", "TIMEOUT_EXCEEDED"):
            job["errors"].append({"message": f"Job ended {status} after {done} of {job['total_requests']} "
                                  "requests", "count": 1})
        self.save()

    def _result_line(self, job: dict, request: dict, fate: dict, cached: bool = False) -> dict:
        line_id = "batch-" + uuid.uuid5(uuid.NAMESPACE_URL, job["id"] + request["custom_id"]).hex[:24]
        if fate["kind"] in ("error_output", "error_file"):
            status, message = (429, "Rate limit exceeded") if fate["kind"] == "error_file" else \
                (500, "Internal server error while processing request")
            error: Any = message if fate["string_error"] else {"message": message, "code": str(status)}
            return {"id": line_id, "custom_id": None if fate.get("null_custom_id") else request["custom_id"],
                    "response": {"status_code": status, "body": None}, "error": error}
        body = dict(request.get("body") or {})
        body.setdefault("model", job["model"])
        completion = model.complete(body, fate["answer"], fate["salt"], cached_prefix=cached)
        line = {"id": line_id, "custom_id": request["custom_id"],
                "response": {"status_code": 200, "body": completion}, "error": None}
        return faults.oddly_shaped(line, fate["odd"]) if fate.get("odd") else line

    def _requests(self, job: dict) -> Iterator[dict]:
        """The job's requests, one at a time (a large job is never held in memory whole)."""
        paths = [self.root / "files" / fid for fid in job["input_files"]] or \
            [self.root / "files" / f"{job['id']}.requests"]
        for path in paths:
            with open(path, "rb") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)


class _Sink:
    """A result file being written line by line (kept in memory only when its lines are to be shuffled)."""

    def __init__(self, root: Path):
        self.path = root / "files" / f".{uuid.uuid4()}.part"
        self.handle = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        self.held: list[bytes] = []
        self.count = 0

    def add(self, line: dict, hold: bool) -> None:
        data = (json.dumps(line) + "\n").encode()
        self.held.append(data) if hold else self.handle.write(data)
        self.count += 1

    def close(self, shuffle_seed: str | None) -> Path | None:
        if shuffle_seed:
            random.Random(shuffle_seed).shuffle(self.held)
            self.handle.writelines(self.held)
        self.handle.close()
        if not self.count:
            self.path.unlink()
            return None
        return self.path


def scan_requests(path: Path, where: str) -> list[str]:
    """Check every line of an input file; the custom_ids, in order."""
    custom_ids = []
    with open(path, "rb") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                raise unprocessable(f"line {lineno} of {where} is not valid JSON", ["body", "input_files"])
            if not isinstance(request, dict) or not isinstance(request.get("body"), dict):
                raise unprocessable(f"line {lineno} of {where} has no body object", ["body", "input_files"])
            custom_ids.append(str(request.get("custom_id")))
    return custom_ids


def file_view(meta: dict) -> dict:
    """A file as the API shows it (without the deleted flag and the retention times kept internally)."""
    return {k: v for k, v in meta.items() if k != "deleted" and not k.startswith("_")}
