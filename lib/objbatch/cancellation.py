"""Cancelling a run: its jobs stopped, and never one created. A run that submitted nothing is cancelled on
the spot: its files go back to the queue. A run that submitted is marked cancelling, its jobs are found (in
the ledger, and in the service's job list for a job created just before a crash) and cancelled, and the
caller waits until they have stopped; the next batch-run of the run harvests what the jobs finished and
returns the rest to the queue, without costing an attempt. A run whose every job the service answers 404
for can be forgotten: ended cancelled, its files back in the queue as they were."""

from __future__ import annotations

from typing import Any

from . import client, ledger, runs
from .common import Failure, check_run_name, log
from .polling import wait


def pick_run(conn: ledger.Library, name: str | None) -> runs.Run:
    if name:
        return runs.require(conn, check_run_name(name))
    open_runs = runs.unfinished(conn)
    if not open_runs:
        raise Failure(f"database {conn.path} has no unfinished run to cancel")
    if len(open_runs) > 1:
        raise Failure(f"database {conn.path} has {len(open_runs)} unfinished runs "
                      f"({', '.join(r.name for r in open_runs)}); name the one to cancel with NAME=")
    return open_runs[0]


def cancel_run(conn: ledger.Library, name: str | None, poll: float, timeout: float,
               forget: bool = False) -> str | None:
    """Cancel the run; return its name if its jobs left results to harvest."""
    run = pick_run(conn, name)
    with runs.lease(conn, run.name, who="batch-cancel"):
        return _cancel_locked(conn, runs.require(conn, run.name), poll, timeout, forget)


def _cancel_locked(conn: ledger.Library, run: runs.Run, poll: float, timeout: float,
                   forget: bool) -> str | None:
    if run.finished:
        log(f"batch-cancel: run {run.name} is already finished ({run.state}); nothing to cancel")
        return None
    if not run.frozen:
        _cancel_unsent(conn, run, "before anything was submitted")
        return None
    runs.check_service(run.name, run.server_url)
    record = runs.record(conn, run, all_parts=True)
    with client.Service() as service:
        if any(not entry["job_id"] for entry in record["jobs"]):
            find_unrecorded(service, conn, record)
        job_ids = [entry["job_id"] for entry in record["jobs"] if entry["job_id"]]
        if not job_ids:  # every creation failed: the service never saw the run
            _cancel_unsent(conn, run, "before any of its jobs was created")
            return None
        if forget and _forget_unknown(service, conn, run, record["run_id"], job_ids):
            return None
        ended = runs.ended_jobs(conn, job_ids)  # recorded ended: nothing to stop, nothing to ask the service
        if stop(service, job_ids, ended) or len(job_ids) < len(record["jobs"]):
            with ledger.transaction(conn):
                runs.begin_cancel(conn, run.name)
        else:
            log(f"batch-cancel: every job of run {run.name} had already ended; it is collected as it is")
        jobs = wait(service, job_ids, poll, timeout, known=ended)
    runs.record_jobs(conn, jobs)
    report(jobs)
    return run.name


def _cancel_unsent(conn: ledger.Library, run: runs.Run, when: str) -> None:
    """Nothing reached the service: the run ends cancelled now, its files back in the queue as they were
    (no attempt spent, nothing to harvest)."""
    with ledger.transaction(conn):
        released = runs.cancel_unsent(conn, run.name, {"cancelled " + when: 1})
    log(f"batch-cancel: run {run.name} cancelled {when}; its {released} files are back in the queue")


def _forget_unknown(service: client.Service, conn: ledger.Library, run: runs.Run, run_id: str,
                    job_ids: list[str]) -> bool:
    """--forget: if the service knows none of the run's jobs, end the run cancelled with its files back in the
    queue (True). If it knows every one, nothing is forgotten (False: an ordinary cancel follows). Before
    forgetting, the service must answer its job list (a 404 from something else at the URL, a proxy's error
    page, is no lost job) and list no job of the run."""
    unknown = []
    for job_id in job_ids:
        try:
            service.get_job(job_id)
        except client.JobUnknown:
            unknown.append(job_id)
    if not unknown:
        log(f"batch-cancel: the service knows every job of run {run.name}: nothing to forget, it is cancelled")
        return False
    if len(unknown) < len(job_ids):
        known = [j for j in job_ids if j not in unknown]
        raise Failure(f"run {run.name}: the service knows job(s) {', '.join(known)} but not {', '.join(unknown)}; "
                      "FORGET=1 only ends a run whose every job is unknown: check MISTRAL_API_KEY, then "
                      "make cancel without FORGET")
    listed = [job["id"] for job in service.jobs_with_run_id(run_id)]
    if listed:
        raise Failure(f"run {run.name}: the service answers 404 for job(s) {', '.join(unknown)} but lists job(s) "
                      f"{', '.join(listed)} of the run; nothing is forgotten: check MISTRAL_SERVER_URL and "
                      "MISTRAL_API_KEY, then make cancel without FORGET")
    with ledger.transaction(conn):
        released = runs.cancel_jobs_unknown(conn, run.name, {"cancelled: jobs unknown to the service": 1})
    log(f"batch-cancel: the service does not know job(s) {', '.join(unknown)}: run {run.name} is cancelled "
        f"without its results; its {released} files are back in the queue, no attempt spent")
    return True


def find_unrecorded(service: client.Service, conn: ledger.Library, record: dict[str, Any]) -> None:
    """Jobs created for the run whose creation never reached the ledger (a crash in between): found by the
    run id in the service's job list and recorded, so they are cancelled and harvested too."""
    for entry, job in client.unrecorded(record, service.jobs_by_part(record["run_id"])):
        log(f"batch-cancel: found job {job['id']} for part {entry['part']} in the service's job list")
        entry.update({"job_id": job["id"], "status": job["status"], "created_at": job["created_at"]})
    runs.save_record(conn, record)


def stop(service: client.Service, job_ids: list[str], ended: dict[str, dict[str, Any]] | None = None) -> int:
    """Cancel every job still running (the `ended` ones, recorded as ended, are not asked about); how many were."""
    stopped = 0
    for job_id in job_ids:
        job = (ended or {}).get(job_id) or service.get_job(job_id)
        if client.terminal(job["status"]):
            log(f"batch-cancel: job {job['id']} already ended {job['status']}")
        else:
            log(f"batch-cancel: job {job['id']}: {service.cancel_job(job['id'])['status']}")
            stopped += 1
    return stopped


def report(jobs: list[dict[str, Any]]) -> None:
    for job in jobs:
        log(f"batch-cancel: job {job['id']} ended {job['status']} with {job['completed_requests']}/"
            f"{job['total_requests']} requests done")
