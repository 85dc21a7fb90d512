"""mistral-emulator: a local, faithful server of the Mistral Files and Batch API (see
shared/mistral-batch-protocol.md), with a deterministic stand-in model and reproducible fault injection.

State lives in --state-dir, so a killed and restarted emulator still knows its files and jobs. Jobs move
QUEUED -> RUNNING -> terminal by wall clock. Tests read what it was asked at GET /_emulator/record and
change its faults at POST /_emulator/faults.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import sys
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import click

from . import standin_model
from .common import atomic_write_bytes, atomic_write_json

RUNNING = {"QUEUED", "RUNNING", "CANCELLATION_REQUESTED"}
ENDPOINTS = {"/v1/chat/completions", "/v1/embeddings", "/v1/fim/completions", "/v1/moderations",
             "/v1/chat/moderations", "/v1/ocr", "/v1/classifications", "/v1/chat/classifications",
             "/v1/conversations", "/v1/audio/transcriptions"}
LIST_PARAMS = {"page", "page_size", "model", "agent_id", "created_after", "created_by_me", "status", "order_by"}

# The failure rates measured on real runs (shared/domain.md), for --faults real.
REAL_ANSWER_RATES = {
    "missing_confidence": 0.072, "array": 0.047, "one_element_array": 0.011, "prose": 0.014,
    "degenerate": 0.012, "invalid_category": 0.007, "duplicate_topics": 0.004, "fenced": 0.02,
    "prose_around": 0.01, "chunks": 0.02, "invented_topics": 0.02, "too_many_topics": 0.005,
    "truncated": 0.003, "enum_case": 0.005,
}
PRESETS: dict[str, dict] = {
    "none": {},
    "real": {"answers": REAL_ANSWER_RATES},
    "chaos": {"answers": {k: 0.05 for k in standin_model.ANSWER_FAULTS}, "error_in_output": 0.03,
              "error_in_error_file": 0.03, "missing": 0.02, "shuffle": True},
}
DEFAULT_FAULTS = {
    "seed": 0,
    "answers": {},               # answer fault -> probability per request
    "error_in_output": 0.0,      # request errors written as failure lines in the output file
    "error_in_error_file": 0.0,  # request errors written to the error file
    "error_as_string": 0.5,      # share of request errors whose `error` is a bare string
    "missing": 0.0,              # requests in neither file
    "shuffle": False,            # result lines in arbitrary order
    "job_status": "SUCCESS",     # terminal status: SUCCESS, FAILED or TIMEOUT_EXCEEDED
    "partial": 0.5,              # share of requests processed when the job ends FAILED / TIMEOUT_EXCEEDED
    "http_rate": 0.0,            # share of API calls answered 429 or 503
    "http_storm": 0,             # the next N API calls are answered 429 or 503
    "http_storm_path": "",       # ... only calls that start with this, e.g. "POST /v1/files"
    "http_status": 429,          # status of storm answers (429 or 503)
    "retry_after": 0.05,         # seconds, sent as Retry-After on 429/503
}
DEFAULT_PACE = {"queue_seconds": 0.2, "seconds_per_request": 0.002, "min_run_seconds": 0.3,
                "max_run_seconds": 5.0, "cancel_seconds": 0.2,
                "seconds_per_hour": 3600.0}  # a job still running after timeout_hours ends TIMEOUT_EXCEEDED


class ApiError(Exception):
    def __init__(self, status: int, body: dict, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(status, {"object": "error", "message": message, "type": "invalid_request_error",
                             "param": None, "code": code})


def _not_found(what: str) -> ApiError:
    return ApiError(404, {"detail": f"{what} not found"})


def _unprocessable(message: str, loc: list) -> ApiError:
    return ApiError(422, {"detail": [{"loc": loc, "msg": message, "type": "value_error"}]})


class State:
    """Files, jobs and the record of what was asked, persisted under the state dir."""

    def __init__(self, root: Path, faults: dict, pace: dict):
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        saved = json.loads((root / "state.json").read_text()) if (root / "state.json").exists() else {}
        self.files: dict[str, dict] = saved.get("files", {})
        self.jobs: dict[str, dict] = saved.get("jobs", {})
        self.record: dict[str, Any] = saved.get("record", {"uploads": [], "jobs_created": [], "polls": {},
                                                          "calls": 0, "http_faults": 0, "cancels": []})
        self.faults = {**DEFAULT_FAULTS, **saved.get("faults", {}), **faults}
        self.pace = {**DEFAULT_PACE, **saved.get("pace", {}), **pace}
        seen = root / "seen.json"  # how often each custom_id was submitted: written only when a job is created
        self.seen: dict[str, int] = json.loads(seen.read_text()) if seen.exists() else {}
        self._ids: dict[str, tuple[list[str], dict[str, int]]] = {}
        self._kinds: dict[str, list[str]] = {}
        self.save()

    def save(self) -> None:
        """The small state (file and job metadata, counters): cheap enough to write on every call. Each
        job's custom_ids live in a file of their own, written once."""
        atomic_write_json(self.root / "state.json", {
            "files": self.files, "jobs": self.jobs, "record": self.record, "faults": self.faults,
            "pace": self.pace})

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
        meta = {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "sample_type": sample_type, "source": source,
                "num_lines": lines + int(bool(trailing)),
                "mimetype": "application/jsonl" if name.endswith(".jsonl") else "application/octet-stream",
                "signature": None, "expires_at": None, "visibility": "workspace", "deleted": False}
        self.files[file_id] = meta
        return meta

    def file(self, file_id: str) -> dict:
        meta = self.files.get(file_id)
        if meta is None or meta["deleted"]:
            raise _not_found("File")
        return meta

    def content(self, file_id: str) -> bytes:
        self.file(file_id)
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
        now = time.time()
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
        if now < t["end"]:
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
        return min(job["total_requests"], math.floor(job["total_requests"] * frac))

    def _count(self, job: dict, done: int) -> None:
        if job["id"] not in self._kinds:  # fates are fixed at creation: worked out once per job
            self._kinds[job["id"]] = [self._fate(job, cid)["kind"] for cid in self.ids(job["id"])[0]]
        kinds = self._kinds[job["id"]][:done]
        job["completed_requests"] = done
        job["failed_requests"] = sum(1 for k in kinds if k in ("error_output", "error_file"))
        job["succeeded_requests"] = sum(1 for k in kinds if k == "ok")

    def _fate(self, job: dict, custom_id: str) -> dict:
        """Reproducible per request: seeded by the seed, the custom_id and how often it was seen before."""
        fault = job["fault"]
        occurrence = self.ids(job["id"])[1].get(custom_id, 0)
        rng = random.Random(f"{fault['seed']}|{custom_id}|{occurrence}")
        roll = rng.random()
        kind = "ok"
        for name in ("error_in_output", "error_in_error_file", "missing"):
            if roll < fault[name]:
                kind = {"error_in_output": "error_output", "error_in_error_file": "error_file"}.get(name, name)
                break
            roll -= fault[name]
        answer = None
        roll = rng.random()
        for name, rate in sorted(fault["answers"].items()):
            if roll < rate:
                answer = name
                break
            roll -= rate
        return {"kind": kind, "answer": answer, "string_error": rng.random() < fault["error_as_string"],
                "salt": f"{fault['seed']}|{custom_id}|{occurrence}"}

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
            line = self._result_line(job, request, fate)
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
                job[key] = self.register_file(meta, f"{job['id']}_{sample_type}.jsonl", "batch", sample_type,
                                              "mistral")["id"]
        if failed:
            job["errors"] = [{"message": "Some requests failed", "count": failed}]
        if status in ("FAILED", "TIMEOUT_EXCEEDED"):
            job["errors"].append({"message": f"Job ended {status} after {done} of {job['total_requests']} "
                                  "requests", "count": 1})
        self.save()

    def _result_line(self, job: dict, request: dict, fate: dict) -> dict:
        line_id = "batch-" + uuid.uuid5(uuid.NAMESPACE_URL, job["id"] + request["custom_id"]).hex[:24]
        if fate["kind"] in ("error_output", "error_file"):
            status, message = (429, "Rate limit exceeded") if fate["kind"] == "error_file" else \
                (500, "Internal server error while processing request")
            error: Any = message if fate["string_error"] else {"message": message, "code": str(status)}
            return {"id": line_id, "custom_id": request["custom_id"],
                    "response": {"status_code": status, "body": None}, "error": error}
        body = dict(request.get("body") or {})
        body.setdefault("model", job["model"])
        completion = standin_model.complete(body, fate["answer"], fate["salt"])
        return {"id": line_id, "custom_id": request["custom_id"],
                "response": {"status_code": 200, "body": completion}, "error": None}

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
        self.handle = open(self.path, "wb")
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
                raise _unprocessable(f"line {lineno} of {where} is not valid JSON", ["body", "input_files"])
            if not isinstance(request, dict) or not isinstance(request.get("body"), dict):
                raise _unprocessable(f"line {lineno} of {where} has no body object", ["body", "input_files"])
            custom_ids.append(str(request.get("custom_id")))
    return custom_ids


class Api:
    """The HTTP API over State: one method per endpoint."""

    def __init__(self, state: State, api_key: str | None, base_url: str = ""):
        self.state, self.api_key, self.base_url = state, api_key, base_url

    def handle(self, method: str, path: str, query: dict, headers: Any, body: bytes) -> tuple[int, Any, dict]:
        with self.state.lock:
            if path.startswith("/_emulator/"):
                return 200, self._control(method, path, body), {}
            self._authorize(headers)
            self._maybe_fail(method, path)
            for pattern, handler in self._routes():
                match = re.fullmatch(pattern[1], path)
                if match and method == pattern[0]:
                    return 200, handler(query, body, headers, *match.groups()), {}
            if any(re.fullmatch(p, path) for (_, p), _ in self._routes()):
                raise ApiError(405, {"detail": "Method Not Allowed"})
            raise ApiError(404, {"detail": "Not Found"})

    def _routes(self) -> list:
        return [
            (("POST", r"/v1/files"), self.upload),
            (("GET", r"/v1/files"), self.list_files),
            (("GET", r"/v1/files/([^/]+)"), self.retrieve_file),
            (("DELETE", r"/v1/files/([^/]+)"), self.delete_file),
            (("GET", r"/v1/files/([^/]+)/content"), self.download),
            (("GET", r"/v1/files/([^/]+)/url"), self.signed_url),
            (("POST", r"/v1/batch/jobs"), self.create_job),
            (("GET", r"/v1/batch/jobs"), self.list_jobs),
            (("GET", r"/v1/batch/jobs/([^/]+)"), self.get_job),
            (("DELETE", r"/v1/batch/jobs/([^/]+)"), self.delete_job),
            (("POST", r"/v1/batch/jobs/([^/]+)/cancel"), self.cancel_job),
            (("POST", r"/v1/chat/completions"), self.chat),
        ]

    def _authorize(self, headers: Any) -> None:
        auth = headers.get("Authorization") or ""
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not key or (self.api_key is not None and key != self.api_key):
            raise ApiError(401, {"object": "error", "message": "Unauthorized", "type": "invalid_request_error",
                                 "param": None, "code": "1000"})

    def _maybe_fail(self, method: str, path: str) -> None:
        state, faults = self.state, self.state.faults
        state.record["calls"] += 1
        storm = faults["http_storm"] > 0 and f"{method} {path}".startswith(faults["http_storm_path"] or method)
        rolled = random.Random(f"http|{faults['seed']}|{state.record['calls']}").random() < faults["http_rate"]
        if not (storm or rolled):
            return
        if storm:
            faults["http_storm"] -= 1
        status = faults["http_status"] if storm else (429 if state.record["calls"] % 2 else 503)
        state.record["http_faults"] += 1
        state.save()
        retry = {"Retry-After": f"{faults['retry_after']:g}"}
        if status == 429:
            raise ApiError(429, {"object": "error", "message": "Requests rate limit exceeded",
                                 "type": "rate_limited", "param": None, "code": "1300"}, retry)
        raise ApiError(status, {"object": "error", "message": "Service unavailable", "type": "service_unavailable",
                                "param": None, "code": "3000"}, retry)

    def _control(self, method: str, path: str, body: bytes) -> Any:
        state = self.state
        if path == "/_emulator/record":
            created = [{**entry, "custom_ids": state.ids(entry["id"])[0]} for entry in state.record["jobs_created"]]
            return {**state.record, "jobs_created": created, "files": list(state.files.values()),
                    "jobs": [state.job_view(j) for j in state.jobs.values()]}
        if path in ("/_emulator/faults", "/_emulator/pace"):
            target = state.faults if path.endswith("faults") else state.pace
            if method == "POST":
                update = json.loads(body or b"{}")
                if path.endswith("faults") and "preset" in update:
                    update = {**DEFAULT_FAULTS, **PRESETS[update.pop("preset")], **update}
                target.update(update)
                state.save()
            return target
        if path == "/_emulator/release":  # finish every unfinished job now (tests need no sleeps)
            now = time.time()
            for job in state.jobs.values():
                if job["status"] in RUNNING:
                    job["timeline"].update(start=min(job["timeline"]["start"], now), end=now)
            state.save()
            return {"released": True}
        raise ApiError(404, {"detail": "Not Found"})

    # ---------------------------------------------------------------- files

    def upload(self, query: dict, body: bytes, headers: Any) -> dict:
        parts = _multipart(headers.get("Content-Type", ""), body)
        if "file" not in parts:
            raise _unprocessable("Field required", ["body", "file"])
        name, content = parts["file"]
        purpose = (parts.get("purpose") or (None, b"fine-tune"))[1].decode()
        sample_type = "batch_request" if purpose == "batch" else "instruct"
        meta = self.state.add_file(name or "upload.jsonl", content, purpose, sample_type, "upload")
        self.state.record["uploads"].append({"id": meta["id"], "filename": meta["filename"], "bytes": meta["bytes"],
                                             "purpose": purpose, "at": time.time()})
        self.state.save()
        return _file_view(meta)

    def list_files(self, query: dict, body: bytes, headers: Any) -> dict:
        files = [f for f in self.state.files.values() if not f["deleted"]]
        for key in ("sample_type", "source", "purpose", "mimetypes"):
            wanted = query.get(key)
            if wanted:
                files = [f for f in files if f.get("mimetype" if key == "mimetypes" else key) in wanted]
        if query.get("search"):
            files = [f for f in files if query["search"][0] in f["filename"]]
        page, size = _int(query, "page", 0), _int(query, "page_size", 100)
        return {"data": [_file_view(f) for f in files[page * size:(page + 1) * size]], "object": "list",
                "total": len(files)}

    def retrieve_file(self, query: dict, body: bytes, headers: Any, file_id: str) -> dict:
        return {**_file_view(self.state.file(file_id)), "deleted": False}

    def delete_file(self, query: dict, body: bytes, headers: Any, file_id: str) -> dict:
        self.state.file(file_id)["deleted"] = True
        self.state.save()
        return {"id": file_id, "object": "file", "deleted": True}

    def download(self, query: dict, body: bytes, headers: Any, file_id: str) -> bytes:
        return self.state.content(file_id)

    def signed_url(self, query: dict, body: bytes, headers: Any, file_id: str) -> dict:
        self.state.file(file_id)
        expiry = _int(query, "expiry", 24)
        if not 1 <= expiry <= 168:
            raise _unprocessable("expiry must be between 1 and 168 hours", ["query", "expiry"])
        return {"url": f"{self.base_url}/v1/files/{file_id}/content?signature={uuid.uuid4().hex}&expiry={expiry}"}

    # ---------------------------------------------------------------- jobs

    def create_job(self, query: dict, body: bytes, headers: Any) -> dict:
        spec = _json_body(body)
        custom_ids = self._job_custom_ids(spec)
        if spec.get("endpoint") not in ENDPOINTS:
            raise _unprocessable(f"endpoint {spec.get('endpoint')!r} is not supported", ["body", "endpoint"])
        timeout_hours = spec.get("timeout_hours", 24)
        if not isinstance(timeout_hours, int) or timeout_hours < 1:
            raise _unprocessable("timeout_hours must be an integer of at least 1", ["body", "timeout_hours"])
        state, pace = self.state, self.state.pace
        job_id = str(uuid.uuid4())
        state.add_job_ids(job_id, custom_ids)
        if spec.get("requests") is not None:
            (state.root / "files" / f"{job_id}.requests").write_text(
                "".join(json.dumps(r) + "\n" for r in spec["requests"]))
        created = time.time()
        run = min(pace["max_run_seconds"], max(pace["min_run_seconds"], pace["seconds_per_request"] * len(custom_ids)))
        job = {"id": job_id, "object": "batch", "input_files": list(spec.get("input_files") or []),
               "metadata": spec.get("metadata"), "endpoint": spec["endpoint"], "model": spec.get("model"),
               "agent_id": spec.get("agent_id"), "output_file": None, "error_file": None, "errors": [],
               "status": "QUEUED", "created_at": int(created), "total_requests": len(custom_ids),
               "completed_requests": 0, "succeeded_requests": 0, "failed_requests": 0, "started_at": None,
               "completed_at": None,
               "fault": {k: state.faults[k] for k in ("seed", "answers", "error_in_output", "error_in_error_file",
                                                      "error_as_string", "missing", "shuffle", "job_status",
                                                      "partial")},
               "timeline": {"created": created, "start": created + pace["queue_seconds"],
                            "end": created + pace["queue_seconds"] + run, "cancel_at": None,
                            "seconds_per_hour": pace["seconds_per_hour"]},
               "timeout_hours": timeout_hours}
        state.jobs[job_id] = job
        state.record["jobs_created"].append({"id": job_id, "metadata": job["metadata"], "model": job["model"],
                                             "inline": spec.get("requests") is not None,
                                             "input_files": job["input_files"], "at": created})
        state.save()
        return state.job_view(job)

    def _job_custom_ids(self, spec: dict) -> list[str]:
        """The custom_ids of the requests the job would run, every request checked."""
        has_files, has_inline = spec.get("input_files") is not None, spec.get("requests") is not None
        if has_files == has_inline:
            raise _unprocessable("exactly one of input_files or requests must be given", ["body"])
        if has_inline:
            if not isinstance(spec["requests"], list) or not spec["requests"]:
                raise _unprocessable("requests must be a non-empty list", ["body", "requests"])
            for i, request in enumerate(spec["requests"]):
                if not isinstance(request, dict) or not isinstance(request.get("body"), dict):
                    raise _unprocessable("body is required", ["body", "requests", i, "body"])
            return [str(r.get("custom_id")) for r in spec["requests"]]
        if not spec["input_files"]:
            raise _unprocessable("input_files must not be empty", ["body", "input_files"])
        custom_ids = []
        for file_id in spec["input_files"]:
            if file_id not in self.state.files or self.state.files[file_id]["deleted"]:
                raise _error(404, f"Input file {file_id} not found", "file_not_found")
            custom_ids += scan_requests(self.state.root / "files" / file_id, file_id)
        return custom_ids

    def list_jobs(self, query: dict, body: bytes, headers: Any) -> dict:
        jobs = [self.state.job_view(j) for j in self.state.jobs.values()]
        if query.get("status"):
            jobs = [j for j in jobs if j["status"] in query["status"]]
        if query.get("model"):
            jobs = [j for j in jobs if j["model"] == query["model"][0]]
        if query.get("created_after"):
            after = datetime.fromisoformat(query["created_after"][0].replace("Z", "+00:00")).timestamp()
            jobs = [j for j in jobs if j["created_at"] >= after]
        for key, values in query.items():  # the SDK flattens metadata filters into top-level params
            if key not in LIST_PARAMS:
                jobs = [j for j in jobs if (j.get("metadata") or {}).get(key) == values[0]]
        jobs.sort(key=lambda j: self.state.jobs[j["id"]]["timeline"]["created"],
                  reverse=(query.get("order_by") or ["-created"])[0] == "-created")
        page, size = _int(query, "page", 0), _int(query, "page_size", 100)
        return {"data": jobs[page * size:(page + 1) * size], "object": "list", "total": len(jobs)}

    def _job(self, job_id: str) -> dict:
        job = self.state.jobs.get(job_id)
        if job is None:
            raise _not_found("Batch job")
        return job

    def get_job(self, query: dict, body: bytes, headers: Any, job_id: str) -> dict:
        job = self._job(job_id)
        polls = self.state.record["polls"]
        polls[job_id] = polls.get(job_id, 0) + 1
        view = self.state.job_view(job, inline=(query.get("inline") or ["false"])[0] == "true")
        self.state.save()
        return view

    def cancel_job(self, query: dict, body: bytes, headers: Any, job_id: str) -> dict:
        job = self._job(job_id)
        self.state.job_view(job)
        if job["status"] in ("QUEUED", "RUNNING"):
            job["timeline"]["cancel_at"] = time.time()
            job["status"] = "CANCELLATION_REQUESTED"
            self.state.record["cancels"].append(job_id)
        self.state.save()
        return self.state.job_view(job)

    def delete_job(self, query: dict, body: bytes, headers: Any, job_id: str) -> dict:
        self._job(job_id)
        del self.state.jobs[job_id]
        self.state.save()
        return {"id": job_id, "object": "batch", "deleted": True}

    def chat(self, query: dict, body: bytes, headers: Any) -> dict:
        request = _json_body(body)
        if not isinstance(request.get("messages"), list) or not request["messages"]:
            raise _unprocessable("Field required", ["body", "messages"])
        return standin_model.complete(request, None, json.dumps(request["messages"])[:200])


def _file_view(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != "deleted"}


def _int(query: dict, key: str, default: int) -> int:
    try:
        return int((query.get(key) or [default])[0])
    except ValueError:
        raise _unprocessable(f"{key} must be an integer", ["query", key])


def _json_body(body: bytes) -> dict:
    try:
        value = json.loads(body or b"null")
    except json.JSONDecodeError:
        raise _unprocessable("body is not valid JSON", ["body"])
    if not isinstance(value, dict):
        raise _unprocessable("body must be a JSON object", ["body"])
    return value


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename, bytes). Split on the boundary directly
    (the email parser takes seconds on a large upload)."""
    found = re.search(r'boundary="?([^";]+)"?', content_type) if content_type.startswith("multipart/form-data") \
        else None
    if not found:
        raise _unprocessable("expected multipart/form-data", ["body"])
    parts = {}
    for chunk in body.split(b"--" + found.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        text = head.decode("utf-8", "replace")
        name, filename = re.search(r'\bname="([^"]*)"', text), re.search(r'\bfilename="([^"]*)"', text)
        if name:
            parts[name.group(1)] = (filename.group(1) if filename else None, data[:-2] if data.endswith(b"\r\n") else data)
    return parts


def make_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload, headers = api.handle(method, url.path.rstrip("/") or "/",
                                                      parse_qs(url.query, keep_blank_values=True), self.headers, body)
            except ApiError as exc:
                status, payload, headers = exc.status, exc.body, exc.headers
            except Exception as exc:  # a bug in the emulator must still answer like a server would
                status, payload, headers = 500, {"detail": f"emulator error: {type(exc).__name__}: {exc}"}, {}
            self._send(status, payload, headers)

        def _send(self, status: int, payload: Any, headers: dict) -> None:
            raw = isinstance(payload, bytes)
            data = payload if raw else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests and the demo read stdout for the URL only

    return Handler


def _faults_option(value: str | None) -> dict:
    if not value:
        return {}
    if value in PRESETS:
        return {**PRESETS[value]}
    path = Path(value)
    text = path.read_text() if path.exists() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise click.BadParameter(f"{value!r} is not a preset ({', '.join(PRESETS)}), a JSON file or JSON text")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it on loopback).")
@click.option("--port", default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--state-dir", required=True, type=click.Path(file_okay=False), help="Where files and jobs persist.")
@click.option("--api-key", default=None, help="Accept only this key (default: any non-empty Bearer key).")
@click.option("--faults", default=None, help="Fault preset (none, real, chaos), a JSON file, or JSON text.")
@click.option("--seed", default=None, type=int, help="Seed for reproducible faults.")
@click.option("--pace", default=None, help="JSON overriding queue_seconds, seconds_per_request, min_run_seconds, "
                                           "max_run_seconds, cancel_seconds.")
def main(host: str, port: int, state_dir: str, api_key: str | None, faults: str | None, seed: int | None,
         pace: str | None) -> None:
    """Serve the Mistral Files and Batch API locally. Prints its URL as the first line of stdout."""
    fault_config = _faults_option(faults)
    if seed is not None:
        fault_config["seed"] = seed
    state = State(Path(state_dir), fault_config, json.loads(pace) if pace else {})
    api = Api(state, api_key)
    server = ThreadingHTTPServer((host, port), make_handler(api))
    server.daemon_threads = True
    api.base_url = f"http://{host}:{server.server_address[1]}"
    print(api.base_url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
