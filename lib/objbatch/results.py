"""Results: the output and error files of terminal jobs, downloaded and kept, and one normalized line per
custom_id. Success lines carry the answer (content, finish_reason, usage, model); failure lines the HTTP
status and the reason. A line is a failure when `error` is set or `status_code >= 400`, in the output file
or the error file. Custom_ids with no line in either file come out as "no result returned" (missing: true,
attempted: false: a request that never ran costs its file no attempt): nothing is left behind."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterator

from . import client, kinds
from .common import Failure, bounded_lines, kill_point, log


def classify(line: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One raw result line as a normalized result. The line is the service's: any field may have any
    type, and whatever does not have the shape of an answer fails this request alone, with the reason."""
    response = _object(line.get("response"))
    status = response.get("status_code")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    base = {"custom_id": str(line.get("custom_id")), "job_id": job["id"], "status_code": status}
    error = line.get("error")
    if error is not None or (status is not None and status >= 400):
        return {**base, "ok": False, "error": kinds.text(error_text(error, status), 1000)}
    body = _object(response.get("body"))
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return {**base, "ok": False, "error": "response had no choices (empty answer)"}
    choice = _object(choices[0])
    message = choice.get("message")
    if not isinstance(message, dict):
        return {**base, "ok": False, "error": f"response's message was {_json_kind(message)}, not an object"}
    return {**base, "ok": True, "content": message.get("content"), "finish_reason": kinds.text(choice.get(
        "finish_reason"), 100), "usage": kinds.usage(body.get("usage")),
        "model": kinds.text(body.get("model"), 200) or job.get("model")}


def _object(value: Any) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one (a line's field may have any type)."""
    return value if isinstance(value, dict) else {}


def _json_kind(value: Any) -> str:
    return "missing" if value is None else {str: "a string", list: "an array", bool: "a boolean", dict: "an object"}.get(
        type(value), "a number")


def error_text(error: Any, status: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)
        code = error.get("code")
        text = f"{message} (code {code})" if code else str(message)
    elif error is not None:
        text = str(error)
    else:
        text = "request failed"
    return f"HTTP {status}: {text}" if status else text


# A file id as the service makes them (UUIDs): nothing the service sends becomes a path unless it fits.
FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def fetch_raw(service: client.Service, file_id: str, raw_dir: Path) -> Path:
    """The result file on disk under raw_dir, downloaded (streamed, atomically) only if not kept already,
    so a rerun never downloads, or loses, what the service returned."""
    if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
        raise Failure(f"the service named result file {str(file_id)[:80]!r}, which is not a file id (letters, "
                      "digits, '-' and '_'); nothing was downloaded: check MISTRAL_SERVER_URL points at the "
                      "service (or a proxy you trust)")
    kept = raw_dir / f"{file_id}.jsonl"
    if kept.is_symlink() or not kept.exists():  # a link is replaced by the download, never read
        service.download_to(file_id, kept)
        kill_point("after-download")
    return kept


MAX_LINE_BYTES = 4 << 20  # a result line this long fails its request unread: no real answer comes close
CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_.:-]{1,200})"')


def raw_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed line or None when unreadable), streamed from a kept result file. A line over
    MAX_LINE_BYTES is never read whole: it stands as a failure of the request its beginning names."""
    with open(path, "rb") as handle:
        for lineno, (data, size) in enumerate(bounded_lines(handle, MAX_LINE_BYTES), 1):
            if size > MAX_LINE_BYTES:
                named = CUSTOM_ID.search(data[:65536])
                yield lineno, {"custom_id": named.group(1).decode(), "error": {
                    "message": f"result line is {size:,} bytes, over the limit of {MAX_LINE_BYTES:,}; not read"}} \
                    if named else None
            elif data.strip():
                try:
                    yield lineno, json.loads(data.decode("utf-8", "replace"))
                except (json.JSONDecodeError, RecursionError):
                    yield lineno, None


def kept_files(service: client.Service, job: dict[str, Any], raw_dir: Path) -> tuple[list[Path], client.ResultsGone | None]:
    """The job's output and error files on disk, and whether the service no longer had one of them."""
    files, gone = [], None
    for fid in (job.get("output_file"), job.get("error_file")):
        if fid:
            try:
                files.append(fetch_raw(service, fid, raw_dir))
            except client.ResultsGone as exc:
                gone = exc
    if gone is not None:
        log(f"batch-fetch: the results of job {job['id']} (finished {finished_at(job)}) can no longer be downloaded "
            f"(HTTP {gone.status}: the service keeps them 24 hours); its requests without a result go back to the "
            "queue with no attempt spent, and the next make batch estimates them again")
    return files, gone


def finished_at(job: dict[str, Any]) -> str:
    when = job.get("completed_at")
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
    return str(when or "at an unknown time")


def harvest(service: client.Service, job: dict[str, Any], custom_ids: list[str], raw_dir: Path) -> Iterator[dict[str, Any]]:
    """Every custom_id of one job exactly once: its result, or a failure saying why there is none. One pass
    over the kept files: successes go out as they come; failures wait (a later success for the same
    custom_id wins), so memory holds the failures and one small entry per custom_id, not the answers."""
    files, gone = kept_files(service, job, raw_dir)
    wanted = set(custom_ids)
    done: set[str] = set()
    held: dict[str, dict[str, Any]] = {}
    counts = {"unknown": 0, "duplicates": 0, "unreadable": 0, "anonymous": 0}
    for path in files:
        for _, line in raw_lines(path):
            if not isinstance(line, dict):
                counts["unreadable"] += 1
                continue
            if line.get("custom_id") is None:  # a failure line may name no request: it counts for none
                counts["anonymous"] += 1
                continue
            result = classify(line, job)
            cid = result["custom_id"]
            if cid not in wanted:
                counts["unknown"] += 1
            elif cid in done or (cid in held and not result["ok"]):
                counts["duplicates"] += 1
            elif result["ok"]:
                counts["duplicates"] += held.pop(cid, None) is not None
                done.add(cid)
                yield result
            else:
                held[cid] = result
    _report(job["id"], **counts)
    yield from held.values()
    for cid in custom_ids:
        if cid not in done and cid not in held and gone is not None:  # paid for, but lost: no attempt spent
            yield {"custom_id": cid, "job_id": job["id"], "status_code": None, "ok": False,
                   "error": f"no result returned (the results of job {job['id']}, finished {finished_at(job)}, "
                            "expired before they were fetched)", "attempted": False}
        elif cid not in done and cid not in held:  # it never ran (cancelled, timed out, failed): no attempt spent
            yield {"custom_id": cid, "job_id": job["id"], "status_code": None, "ok": False,
                   "error": f"no result returned (job ended {job['status']})", "missing": True, "attempted": False}


def never_sent(custom_ids: list[str]) -> Iterator[dict[str, Any]]:
    """Requests of a cancelled run whose part was never created: no attempt spent, back to the queue."""
    for cid in custom_ids:
        yield {"custom_id": cid, "job_id": None, "status_code": None, "ok": False,
               "error": "no result returned (never submitted: the run was cancelled)", "missing": True,
               "attempted": False}


def _report(job_id: str, unknown: int, duplicates: int, unreadable: int, anonymous: int) -> None:
    if anonymous:
        log(f"batch-fetch: job {job_id}: {anonymous} failure lines name no custom_id (their requests have no result)")
    if duplicates:
        log(f"batch-fetch: job {job_id}: {duplicates} duplicate result lines (kept one per custom_id, a success first)")
    if unknown:
        log(f"batch-fetch: job {job_id}: {unknown} result lines for custom_ids this job never sent (ignored)")
    if unreadable:
        log(f"batch-fetch: job {job_id}: {unreadable} result lines were not valid JSON (ignored)")
