"""The Batch API (create, list, get, cancel, delete jobs) and chat completions (the stand-in model)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from . import faults, model
from .errors import error, json_body, not_found, query_int, unprocessable
from .state import RUNNING, State, scan_requests, write_private

ENDPOINTS = {"/v1/chat/completions", "/v1/embeddings", "/v1/fim/completions", "/v1/moderations",
             "/v1/chat/moderations", "/v1/ocr", "/v1/classifications", "/v1/chat/classifications",
             "/v1/conversations", "/v1/audio/transcriptions"}
MAX_REQUESTS = 100_000          # per job (known limitations)
MAX_INLINE_REQUESTS = 10_000    # inline: "fewer than 10,000" (OpenAPI maxItems 10000: the stricter is kept)
MAX_TIMEOUT_HOURS = 168
METADATA_KEY, METADATA_VALUE = (1, 32), (1, 512)  # characters (OpenAPI CreateBatchJobRequest)
LIST_PARAMS = {"page", "page_size", "model", "agent_id", "created_after", "created_by_me", "status", "order_by"}


def create(api: Any, query: dict, body: bytes, headers: Any) -> dict:
    spec = json_body(body)
    state: State = api.state
    custom_ids = _custom_ids(state, spec)
    if spec.get("endpoint") not in ENDPOINTS:
        raise unprocessable(f"endpoint {spec.get('endpoint')!r} is not supported", ["body", "endpoint"])
    timeout_hours = spec.get("timeout_hours", 24)
    if not isinstance(timeout_hours, int) or not 1 <= timeout_hours <= MAX_TIMEOUT_HOURS:
        raise unprocessable(f"timeout_hours must be an integer from 1 to {MAX_TIMEOUT_HOURS}", ["body", "timeout_hours"])
    _check_metadata(spec.get("metadata"))
    if len(custom_ids) > MAX_REQUESTS:
        raise unprocessable(f"a batch job takes at most {MAX_REQUESTS} requests (got {len(custom_ids)})", ["body"])
    pace = state.pace
    job_id = str(uuid.uuid4())
    state.add_job_ids(job_id, custom_ids)
    if spec.get("requests") is not None:
        write_private(state.root / "files" / f"{job_id}.requests",
                      "".join(json.dumps(r) + "\n" for r in spec["requests"]).encode())
    created = state.now()
    run = min(pace["max_run_seconds"], max(pace["min_run_seconds"], pace["seconds_per_request"] * len(custom_ids)))
    job = {"id": job_id, "object": "batch", "input_files": list(spec.get("input_files") or []),
           "metadata": spec.get("metadata"), "endpoint": spec["endpoint"], "model": spec.get("model"),
           "agent_id": spec.get("agent_id"), "output_file": None, "error_file": None, "errors": [],
           "status": "QUEUED", "created_at": int(created), "total_requests": len(custom_ids),
           "completed_requests": 0, "succeeded_requests": 0, "failed_requests": 0, "started_at": None,
           "completed_at": None, "fault": {k: state.faults[k] for k in faults.PER_JOB},
           "timeline": {"created": created, "start": created + pace["queue_seconds"],
                        "end": created + pace["queue_seconds"] + run, "cancel_at": None,
                        "seconds_per_hour": pace["seconds_per_hour"], "hold": pace.get("hold_at")},
           "timeout_hours": timeout_hours}
    state.jobs[job_id] = job
    state.record["jobs_created"].append({"id": job_id, "metadata": job["metadata"], "model": job["model"],
                                         "inline": spec.get("requests") is not None,
                                         "input_files": job["input_files"], "at": created})
    state.save()
    return state.job_view(job)


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise unprocessable("metadata must be an object", ["body", "metadata"])
    for key, value in metadata.items():
        if not METADATA_KEY[0] <= len(key) <= METADATA_KEY[1]:
            raise unprocessable(f"metadata keys have {METADATA_KEY[0]}-{METADATA_KEY[1]} characters",
                                ["body", "metadata", key])
        if not isinstance(value, str) or not METADATA_VALUE[0] <= len(value) <= METADATA_VALUE[1]:
            raise unprocessable(f"metadata values are strings of {METADATA_VALUE[0]}-{METADATA_VALUE[1]} characters",
                                ["body", "metadata", key])


def _custom_ids(state: State, spec: dict) -> list[str]:
    """The custom_ids of the requests the job would run, every request checked."""
    has_files, has_inline = spec.get("input_files") is not None, spec.get("requests") is not None
    if has_files == has_inline:
        raise unprocessable("exactly one of input_files or requests must be given", ["body"])
    if has_inline:
        if not isinstance(spec["requests"], list) or not spec["requests"]:
            raise unprocessable("requests must be a non-empty list", ["body", "requests"])
        if len(spec["requests"]) >= MAX_INLINE_REQUESTS:
            raise unprocessable(f"fewer than {MAX_INLINE_REQUESTS} requests can be sent inline; upload a file",
                                ["body", "requests"])
        for i, request in enumerate(spec["requests"]):
            if not isinstance(request, dict) or not isinstance(request.get("body"), dict):
                raise unprocessable("body is required", ["body", "requests", i, "body"])
        return [str(r.get("custom_id")) for r in spec["requests"]]
    if not spec["input_files"]:
        raise unprocessable("input_files must not be empty", ["body", "input_files"])
    custom_ids = []
    for file_id in spec["input_files"]:
        if file_id not in state.files or state.files[file_id]["deleted"]:
            raise error(404, f"Input file {file_id} not found", "file_not_found")
        custom_ids += scan_requests(state.root / "files" / file_id, file_id)
    return custom_ids


def list_jobs(api: Any, query: dict, body: bytes, headers: Any) -> dict:
    state: State = api.state
    jobs = [state.job_view(j) for j in state.jobs.values()]
    if query.get("status"):
        jobs = [j for j in jobs if j["status"] in query["status"]]
    if query.get("model"):
        jobs = [j for j in jobs if j["model"] == query["model"][0]]
    if query.get("created_after"):
        after = datetime.fromisoformat(query["created_after"][0].replace("Z", "+00:00")).timestamp() + \
            state.clock_offset
        jobs = [j for j in jobs if j["created_at"] >= after]
    for key, values in query.items():  # the SDK flattens metadata filters into top-level params
        if key not in LIST_PARAMS:
            jobs = [j for j in jobs if (j.get("metadata") or {}).get(key) == values[0]]
    jobs.sort(key=lambda j: state.jobs[j["id"]]["timeline"]["created"],
              reverse=(query.get("order_by") or ["-created"])[0] == "-created")
    page, size = query_int(query, "page", 0), query_int(query, "page_size", 100)
    return {"data": jobs[page * size:(page + 1) * size], "object": "list", "total": len(jobs)}


def _job(state: State, job_id: str) -> dict:
    job = state.jobs.get(job_id)
    if job is None:
        raise not_found("Batch job")
    return job


def get(api: Any, query: dict, body: bytes, headers: Any, job_id: str) -> dict:
    job = _job(api.state, job_id)
    polls = api.state.record["polls"]
    polls[job_id] = polls.get(job_id, 0) + 1
    view = api.state.job_view(job, inline=(query.get("inline") or ["false"])[0] == "true")
    api.state.save()
    return view


def cancel(api: Any, query: dict, body: bytes, headers: Any, job_id: str) -> dict:
    job = _job(api.state, job_id)
    api.state.job_view(job)
    if job["status"] in ("QUEUED", "RUNNING"):
        job["timeline"]["cancel_at"] = api.state.now()
        job["status"] = "CANCELLATION_REQUESTED"
        api.state.record["cancels"].append(job_id)
    api.state.save()
    return api.state.job_view(job)


def delete(api: Any, query: dict, body: bytes, headers: Any, job_id: str) -> dict:
    _job(api.state, job_id)
    del api.state.jobs[job_id]
    api.state.save()
    return {"id": job_id, "object": "batch", "deleted": True}


def chat(api: Any, query: dict, body: bytes, headers: Any) -> dict:
    """A synchronous chat completion, answered by the stand-in model."""
    request = json_body(body)
    if not isinstance(request.get("messages"), list) or not request["messages"]:
        raise unprocessable("Field required", ["body", "messages"])
    return model.complete(request, None, json.dumps(request["messages"])[:200])


def release(state: State) -> None:
    """Finish every unfinished job now (tests need no sleeps)."""
    now = state.now()
    for job in state.jobs.values():
        if job["status"] in RUNNING:
            job["timeline"].update(start=min(job["timeline"]["start"], now), end=now, hold=None)
    state.save()
