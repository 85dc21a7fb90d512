"""The emulator's own endpoints, for tests and the demo (with the key, like every other call):

- GET /_emulator/record: what it was asked (uploads, jobs created with their metadata and custom_ids,
  polls, cancels, calls, HTTP faults served), its files and jobs;
- GET or POST /_emulator/faults, /_emulator/pace: read or change the fault mix and the jobs' pace;
- POST /_emulator/release: finish every unfinished job now;
- POST /_emulator/advance {"hours": N}: move the emulator's clock N hours of its scaled clock on (results
  expire 24 hours after their job finished, uploads after 30 days, jobs time out), without sleeping.
"""

from __future__ import annotations

from typing import Any

from . import faults, jobs
from .errors import ApiError, json_body, unprocessable
from .state import State, pace_problem


def handle(state: State, method: str, path: str, body: bytes) -> Any:
    if path == "/_emulator/record":
        created = [{**entry, "custom_ids": state.ids(entry["id"])[0]} for entry in state.record["jobs_created"]]
        return {**state.record, "jobs_created": created, "files": list(state.files.values()),
                "jobs": [state.job_view(j) for j in state.jobs.values()]}
    if path in ("/_emulator/faults", "/_emulator/pace"):
        target = state.faults if path.endswith("faults") else state.pace
        if method == "POST":
            changes = json_body(body or b"{}")
            problem = pace_problem(changes) if path.endswith("pace") else faults.problem(changes)
            if problem:
                raise unprocessable(f"{path.rsplit('/', 1)[1]} not changed: {problem}", ["body"])
            faults.update(target, changes) if path.endswith("faults") else target.update(changes)
            state.save()
        return target
    if path == "/_emulator/advance" and method == "POST":
        hours = json_body(body or b"{}").get("hours", 0)
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 <= hours <= 24 * 366:
            raise unprocessable("hours must be a number from 0 to 8784", ["body", "hours"])
        state.clock_offset += state.hours(hours)
        state.save()
        return {"advanced_hours": hours, "clock_offset_seconds": state.clock_offset}
    if path == "/_emulator/release" and method == "POST":
        jobs.release(state)
        return {"released": True}
    raise ApiError(404, {"detail": "Not Found"})
