"""The run ledger, in the library database: the one authority for a run.

A run is: its name, the database it belongs to (library_id), its claims (the files it took), what it sent
for each file (custom_id and manifest line, frozen when submission starts), its parts and jobs (ids, input
files) and how far it got (state). The run folder under RUNS is a cache of artifacts that every stage can
rebuild from here: a run whose folder was deleted is finished or cancelled from the ledger, never paid again.

States: claimed -> submitting -> submitted -> applied, and cancelling -> cancelled (or claimed -> cancelled
when nothing was submitted). A run is frozen from `submitting` on: what it sends no longer changes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

from . import ledger
from .common import Failure, file_lock, log, now_iso, state_dir

FINISHED = ("applied", "cancelled")
FROZEN = ("submitting", "submitted", "cancelling")
IN_FLIGHT = "claimed"  # claim state of a file whose run has not finished
RECORD_VERSION = 1


@dataclass
class Run:
    name: str
    state: str
    model: str | None
    library_id: str | None
    db_path: str | None
    run_id: str | None
    created_at: str
    finished_at: str | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def frozen(self) -> bool:
        return self.state in FROZEN


def get(conn: sqlite3.Connection, name: str) -> Run | None:
    row = conn.execute("SELECT run_name, state, model, library_id, db_path, run_id, created_at, finished_at "
                       "FROM objbatch_runs WHERE run_name = ?", (name,)).fetchone()
    return Run(*row) if row else None


def belonging(conn: ledger.Library, name: str) -> Run | None:
    """The run of this name in this database's ledger, refused if it belongs to another database."""
    run = get(conn, name)
    if run and run.library_id and run.library_id != conn.library_id:
        raise Failure(f"run {name} belongs to database {run.db_path}, not {conn.path} (a copy of it); "
                      f"finish or cancel it with DB={run.db_path}")
    return run


def require(conn: ledger.Library, name: str) -> Run:
    run = belonging(conn, name)
    if run is None:
        raise Failure(f"database {conn.path} has no run {name}; check the run name (make stats lists runs) and "
                      "that DB is the database the run was started on")
    return run


def unfinished(conn: ledger.Library) -> list[Run]:
    """This database's runs that are not finished, oldest first."""
    rows = conn.execute("SELECT run_name FROM objbatch_runs WHERE state NOT IN (?, ?) AND "
                        "(library_id = ? OR library_id IS NULL) ORDER BY created_at, run_name",
                        (*FINISHED, conn.library_id)).fetchall()
    return [r for r in (get(conn, row[0]) for row in rows) if r]


def create(conn: ledger.Library, name: str, model: str | None) -> None:
    conn.execute("INSERT INTO objbatch_runs (run_name, model, state, created_at, library_id, db_path) "
                 "VALUES (?, ?, 'claimed', ?, ?, ?) ON CONFLICT(run_name) DO NOTHING",
                 (name, model, now_iso(), conn.library_id, conn.path))


def set_state(conn: sqlite3.Connection, name: str, state: str, counts: dict | None = None) -> None:
    finished = now_iso() if state in FINISHED else None
    conn.execute("UPDATE objbatch_runs SET state = ?, finished_at = COALESCE(?, finished_at), "
                 "counts_json = COALESCE(?, counts_json) WHERE run_name = ?",
                 (state, finished, json.dumps(counts) if counts is not None else None, name))


def finish(conn: sqlite3.Connection, run: Run, counts: dict) -> int:
    """Mark the run finished (applied, or cancelled if a cancel was asked) and release its files."""
    set_state(conn, run.name, "cancelled" if run.state in ("cancelling", "cancelled") else "applied", counts)
    conn.execute("UPDATE objbatch_claims SET manifest_json = NULL WHERE run_name = ?", (run.name,))
    return conn.execute("UPDATE objbatch_claims SET state = 'done' WHERE run_name = ? AND state = ?",
                        (run.name, IN_FLIGHT)).rowcount


def in_flight(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Runs with files still claimed, their state and their jobs."""
    return conn.execute(
        "SELECT c.run_name, COUNT(*) AS files, r.state, r.db_path, "
        "(SELECT group_concat(job_id || ':' || COALESCE(status, '?'), ' ') FROM objbatch_jobs j "
        " WHERE j.run_name = c.run_name) AS jobs "
        "FROM objbatch_claims c LEFT JOIN objbatch_runs r USING (run_name) WHERE c.state = ? "
        "GROUP BY c.run_name ORDER BY c.run_name", (IN_FLIGHT,)).fetchall()


@contextmanager
def lock(library_id: str, name: str, wait: bool = True, who: str = "objbatch") -> Iterator[bool]:
    """The run's lock: one process works on a run at a time (make batch, cron, cancel). It lives in the
    state folder, keyed by database identity and run name, so it holds whatever RUNS folder is used.
    Yields whether it was obtained; with wait, says so when another process has it, then waits."""
    path = state_dir() / "locks" / f"{library_id}-{name}.lock"
    with file_lock(path, wait=False) as got:
        if got or not wait:
            yield got
            return
    log(f"{who}: run {name} is being worked on by another process; waiting for it")
    with file_lock(path) as got:
        yield got


# ------------------------------------------------------------------ what a run sends

def freeze(conn: sqlite3.Connection, name: str, run_id: str, manifest: Iterable[tuple[dict, str]],
           parts: list[list[str]], estimate: dict) -> None:
    """Record, before anything is created at the service, exactly what the run sends: the manifest line and
    custom_id of every file, the split into parts, the run id that tags its jobs, and its cost estimate."""
    part_of = {cid: index for index, ids in enumerate(parts, 1) for cid in ids}
    conn.executemany("UPDATE objbatch_claims SET custom_id = ?, part = ?, manifest_json = ? "
                     "WHERE run_name = ? AND file_path = ?",
                     ((entry.get("custom_id"), part_of.get(entry.get("custom_id")), text, name, entry["file_path"])
                      for entry, text in manifest))
    conn.executemany("INSERT INTO objbatch_parts (run_name, part, parts, request_count) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(run_name, part) DO NOTHING",
                     [(name, index, len(parts), len(ids)) for index, ids in enumerate(parts, 1)])
    conn.execute("UPDATE objbatch_runs SET run_id = ?, state = 'submitting', estimate_json = ? WHERE run_name = ?",
                 (run_id, json.dumps(estimate), name))


def manifest(conn: sqlite3.Connection, name: str) -> Iterator[dict]:
    for (text,) in conn.execute("SELECT manifest_json FROM objbatch_claims WHERE run_name = ? AND "
                                "manifest_json IS NOT NULL ORDER BY file_path", (name,)):
        yield json.loads(text)


def claimed_paths(conn: sqlite3.Connection, name: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT file_path FROM objbatch_claims WHERE run_name = ?", (name,))}


def record(conn: ledger.Library, run: Run, all_parts: bool = False) -> dict:
    """The job record (as batch-submit prints it) rebuilt from the ledger. For a cancelled run, parts that
    were never created are left out of the jobs (nothing to fetch) unless `all_parts`."""
    parts = conn.execute("SELECT part, parts, request_count, input_file, job_id FROM objbatch_parts "
                         "WHERE run_name = ? ORDER BY part", (run.name,)).fetchall()
    jobs = []
    for part in parts:
        ids = [r[0] for r in conn.execute("SELECT custom_id FROM objbatch_claims WHERE run_name = ? AND part = ? "
                                          "ORDER BY file_path", (run.name, part["part"]))]
        created = conn.execute("SELECT status, created_at FROM objbatch_jobs WHERE job_id = ?",
                               (part["job_id"],)).fetchone() if part["job_id"] else None
        jobs.append({"part": f"{part['part']}/{part['parts']}", "job_id": part["job_id"],
                     "input_file": part["input_file"], "request_count": part["request_count"],
                     "status": created["status"] if created else None,
                     "created_at": created["created_at"] if created else None, "custom_ids": ids})
    out = {"version": RECORD_VERSION, "run_name": run.name, "run_id": run.run_id, "model": run.model,
           "endpoint": "/v1/chat/completions", "created_at": int(time.time()),
           "request_count": sum(j["request_count"] for j in jobs), "library_id": conn.library_id,
           "db_path": conn.path, "jobs": jobs}
    if run.state in ("cancelling", "cancelled") and not all_parts:
        out["jobs"] = [j for j in jobs if j["job_id"]]
        out["not_submitted"] = [cid for j in jobs if not j["job_id"] for cid in j["custom_ids"]]
    return out


def save_record(conn: sqlite3.Connection, record: dict) -> None:
    """Write what the job record says about parts and jobs into the ledger (after every paid step)."""
    with ledger.transaction(conn):
        for entry in record["jobs"]:
            index = int(entry["part"].split("/")[0])
            conn.execute("UPDATE objbatch_parts SET input_file = ?, job_id = ? WHERE run_name = ? AND part = ?",
                         (entry.get("input_file"), entry.get("job_id"), record["run_name"], index))
            if entry.get("job_id"):
                conn.execute(
                    "INSERT INTO objbatch_jobs (job_id, run_name, run_id, model, status, total_requests, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO NOTHING",
                    (entry["job_id"], record["run_name"], record["run_id"], record.get("model"), entry.get("status"),
                     entry["request_count"], entry.get("created_at"), now_iso()))
        if all(entry.get("job_id") for entry in record["jobs"]):
            conn.execute("UPDATE objbatch_runs SET state = 'submitted' WHERE run_name = ? AND state = 'submitting'",
                         (record["run_name"],))


def check_record(conn: ledger.Library, record: dict, where: str) -> None:
    """A job record carries the database it was made for: fetching or recording it into another is refused."""
    owner = record.get("library_id")
    if owner and owner != conn.library_id:
        raise Failure(f"{where} belongs to run {record.get('run_name')} of database {record.get('db_path')}, "
                      f"not {conn.path}; pass that database (DB={record.get('db_path')})")
