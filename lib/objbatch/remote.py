"""A run's files at the service, once the run is finished: its uploaded requests and its result files are
deleted there (the service would otherwise keep them 30 days), unless the user keeps them. Nothing is
deleted before the run's results are in the database: only a finished run (applied or cancelled, in one
transaction with its results) is cleaned up. A delete that fails is a warning, never a failure."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from . import client, config, runs
from .common import Failure, NotFinished, kill_point, log, make_folders, scrub

SAFE_FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def kept(ended: dict[str, dict[str, Any]], raw_dir: str | None) -> dict[str, dict[str, Any]]:
    """Of the jobs the ledger knows ended, those whose result files are all kept in raw_dir: the service
    need not be asked about them again, and may no longer know them (lost, or past its retention), so a
    paid result on disk is applied whatever the service says now."""
    def on_disk(file_id: object) -> bool:  # a regular file we downloaded: a planted link is not taken
        if not isinstance(file_id, str) or not SAFE_FILE_ID.fullmatch(file_id):
            return False
        path = Path(str(raw_dir)) / f"{file_id}.jsonl"
        return path.is_file() and not path.is_symlink()

    if not raw_dir:
        return {}
    return {job_id: job for job_id, job in ended.items()
            if all(on_disk(fid) for fid in (job.get("output_file"), job.get("error_file")) if fid)}


def keep_results(service: client.Service, job: dict[str, Any], raw_dir: Path) -> bool:
    """Download a finished job's output and error files into raw_dir at once (the service keeps them only 24
    hours), where batch-fetch finds them. Whether all are kept; a file the service no longer has is left
    for batch-fetch to report."""
    kept = True
    for file_id in (job.get("output_file"), job.get("error_file")):
        if not file_id:
            continue
        if not isinstance(file_id, str) or not SAFE_FILE_ID.fullmatch(file_id):
            return False  # not a name to put on disk: batch-fetch refuses it, saying why
        path = raw_dir / f"{file_id}.jsonl"
        if path.exists():
            continue
        try:
            make_folders(raw_dir)  # 0700, as every folder objbatch makes
            service.download_to(file_id, path)
        except client.ResultsGone:
            kept = False
        else:
            kill_point("after-download")  # the crash tests: a download kept, nothing after it done
    if kept:
        log(f"batch-wait: job {job['id']} {job['status']}: its results are downloaded")
    return kept


def files_of(conn: sqlite3.Connection, run_name: str) -> list[str]:
    """The run's input files, then its jobs' output and error files, each once."""
    found: dict[str, None] = {}
    for (file_id,) in conn.execute("SELECT input_file FROM objbatch_parts WHERE run_name = ? AND input_file IS NOT "
                                   "NULL ORDER BY part", (run_name,)):
        found[file_id] = None
    for row in conn.execute("SELECT output_file, error_file FROM objbatch_jobs WHERE run_name = ? ORDER BY job_id",
                            (run_name,)):
        for file_id in row:
            if file_id:
                found[file_id] = None
    return list(found)


def clean_up(conn: sqlite3.Connection, run_name: str, keep: bool) -> tuple[str | None, list[str]]:
    """(what became of the run's files at the service, warnings), once per finished run; (None, []) for a
    run that is not finished or was cleaned up already."""
    run = runs.get(conn, run_name)
    if run is None or not run.finished or runs.remote_cleanup(conn, run_name) is not None:
        return None, []
    file_ids = files_of(conn, run_name)
    warnings: list[str] = []
    if keep:
        outcome = f"{len(file_ids)} kept at the service (KEEP_REMOTE=1; it deletes them after 30 days)"
    elif not file_ids:
        outcome = "none to delete at the service"
    else:
        deleted, warnings = _delete(file_ids)
        outcome = f"{deleted} deleted at the service" + (f", {len(file_ids) - deleted} not deleted" if warnings else "")
    runs.record_remote_cleanup(conn, run_name, outcome)
    return outcome, warnings


def _delete(file_ids: list[str]) -> tuple[int, list[str]]:
    """(how many were deleted, warnings). The run's results are already in the database, so a service that
    will not delete is not waited out for the retry window (up to 15 minutes): each delete gets a short
    bound, and after one fails the rest are left to the service's own 30-day expiry."""
    policy = client.RetryPolicy(max_elapsed=min(config.retry_seconds(), config.wait_seconds("OBJBATCH_CLEANUP_SECONDS")))
    with client.Service(policy=policy) as service:
        for done, file_id in enumerate(file_ids):
            try:
                service.delete_file(file_id)
            except (Failure, NotFinished) as exc:
                left = len(file_ids) - done - 1
                return done, [f"could not delete file {file_id} at the service ({scrub(str(exc))})"
                              + (f"; {left} more not tried" if left else "")
                              + "; the service deletes them after 30 days"]
    return len(file_ids), []
