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
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

from . import config, ledger
from .common import Failure, log, now_iso

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
    server_url: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def frozen(self) -> bool:
        return self.state in FROZEN


def check_service(name: str, server_url: str | None) -> None:
    """A run's jobs live at the service they were submitted to: anywhere else they would not be found."""
    if server_url and server_url != config.server_url():
        raise Failure(f"run {name} was submitted to {server_url}, not {config.server_url()}: set "
                      f"MISTRAL_SERVER_URL={server_url} to follow it")


def get(conn: sqlite3.Connection, name: str) -> Run | None:
    row = conn.execute("SELECT run_name, state, model, library_id, db_path, run_id, created_at, finished_at, "
                       "server_url FROM objbatch_runs WHERE run_name = ?", (name,)).fetchone()
    return Run(*row) if row else None


def belonging(conn: ledger.Library, name: str) -> Run | None:
    """The run of this name in this database's ledger, refused if it belongs to another database. A run
    started on a database at this very path is this one's (the file was restored from a copy)."""
    run = get(conn, name)
    if run and run.library_id and run.library_id != conn.library_id:
        if run.db_path != conn.path:
            raise Failure(f"run {name} belongs to database {run.db_path}, not {conn.path} (a copy of it); "
                          f"finish or cancel it with DB={run.db_path}")
        conn.execute("UPDATE objbatch_runs SET library_id = ? WHERE run_name = ?", (conn.library_id, name))
        run = get(conn, name)
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
                        "(library_id = ? OR library_id IS NULL OR db_path = ?) ORDER BY created_at, run_name",
                        (*FINISHED, conn.library_id, conn.path)).fetchall()
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


def undecided(conn: sqlite3.Connection, name: str) -> int:
    """Files the run claimed that have no result applied for it yet."""
    return conn.execute("SELECT COUNT(*) FROM objbatch_claims c WHERE c.run_name = ? AND NOT EXISTS (SELECT 1 FROM "
                        "objbatch_applied a WHERE a.run_name = c.run_name AND a.file_path = c.file_path)",
                        (name,)).fetchone()[0]


def has_jobs(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM objbatch_parts WHERE run_name = ? AND job_id IS NOT NULL LIMIT 1",
                        (name,)).fetchone() is not None


def unfreeze(conn: sqlite3.Connection, name: str) -> None:
    """Undo a freeze that never reached the service (no job exists): the run is built and frozen again."""
    conn.execute("UPDATE objbatch_claims SET custom_id = NULL, part = NULL, manifest_json = NULL WHERE run_name = ?",
                 (name,))
    conn.execute("DELETE FROM objbatch_parts WHERE run_name = ?", (name,))
    conn.execute("UPDATE objbatch_runs SET state = 'claimed', run_id = NULL, estimate_json = NULL, server_url = NULL "
                 "WHERE run_name = ?", (name,))


UNFETCHED_WARN_HOURS = 12  # the service keeps results 24 hours after a job finished


def unfetched_results(conn: sqlite3.Connection, hours: float = UNFETCHED_WARN_HOURS) -> list[sqlite3.Row]:
    """Finished jobs of unfinished runs whose results were not downloaded and are older than `hours`."""
    return conn.execute(
        "SELECT j.job_id, j.run_name, j.completed_at, (strftime('%s', 'now') - j.completed_at) / 3600.0 AS hours "
        "FROM objbatch_jobs j JOIN objbatch_runs r USING (run_name) WHERE j.completed_at IS NOT NULL AND "
        "j.fetched_at IS NULL AND r.state NOT IN (?, ?) AND strftime('%s', 'now') - j.completed_at > ? "
        "ORDER BY j.completed_at", (*FINISHED, hours * 3600)).fetchall()


def unfetched_warnings(conn: sqlite3.Connection) -> list[str]:
    """One line per finished job whose results are older than 12 hours and not downloaded yet."""
    return [f"job {j['job_id']} of run {j['run_name']} finished {j['hours']:.0f} hours ago and its results are not "
            f"fetched yet; the service keeps them 24 hours: run make batch NAME={j['run_name']} (or make cron) now"
            for j in unfetched_results(conn)]


def in_flight(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Runs with files still claimed, their state and their jobs."""
    return conn.execute(
        "SELECT c.run_name, COUNT(*) AS files, r.state, r.db_path, "
        "(SELECT group_concat(job_id || ':' || COALESCE(status, '?'), ' ') FROM objbatch_jobs j "
        " WHERE j.run_name = c.run_name) AS jobs "
        "FROM objbatch_claims c LEFT JOIN objbatch_runs r USING (run_name) WHERE c.state = ? "
        "GROUP BY c.run_name ORDER BY c.run_name", (IN_FLIGHT,)).fetchall()


# ------------------------------------------------------------------ the run's lease

OWNER = f"{socket.gethostname()}:{os.getpid()}"
LEASE_SECONDS = 120.0  # a holder renews it every LEASE_SECONDS / 4; one that died frees it within this
_held: set[tuple[str, str]] = set()  # (database, run) leases this process holds


def _alive(owner: str) -> bool:
    """Whether a lease holder can still be running (one on another machine is trusted until it expires)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _take(conn: sqlite3.Connection, name: str) -> str | None:
    """Take the run's lease if it is free (or its holder is gone); else who holds it."""
    now = time.time()
    with ledger.transaction(conn):
        row = conn.execute("SELECT owner, until FROM objbatch_leases WHERE run_name = ?", (name,)).fetchone()
        if row and row["owner"] != OWNER and row["until"] > now and _alive(row["owner"]):
            return row["owner"]
        conn.execute("INSERT INTO objbatch_leases (run_name, owner, until) VALUES (?, ?, ?) ON CONFLICT(run_name) "
                     "DO UPDATE SET owner = excluded.owner, until = excluded.until", (name, OWNER, now + LEASE_SECONDS))
    return None


@contextmanager
def lease(conn: ledger.Library, name: str, wait: bool = True, who: str = "objbatch") -> Iterator[bool]:
    """The run's lease, in the database itself: one process works on a run at a time (make batch, cron,
    cancel, a submission), whatever its user, home or machine. Yields whether it was obtained; with wait,
    says who has it, then waits. Held leases are renewed in the background and given back at the end."""
    key = (conn.path, name)
    if key in _held:  # this process has it already (batch-run running its stages)
        yield True
        return
    holder = _take(conn, name)
    if holder and not wait:
        yield False
        return
    if holder:
        log(f"{who}: run {name} is being worked on by another process ({holder}); waiting for it")
        while _take(conn, name):
            time.sleep(1.0)
    _held.add(key)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(conn.path, name, stop), daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        _held.discard(key)
        with ledger.transaction(conn):
            conn.execute("DELETE FROM objbatch_leases WHERE run_name = ? AND owner = ?", (name, OWNER))


def _renew(path: str, name: str, stop: threading.Event) -> None:
    renewal = sqlite3.connect(path, timeout=ledger.BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        while not stop.wait(LEASE_SECONDS / 4):
            renewal.execute("UPDATE objbatch_leases SET until = ? WHERE run_name = ? AND owner = ?",
                            (time.time() + LEASE_SECONDS, name, OWNER))
    finally:
        renewal.close()


# ------------------------------------------------------------------ what a run sends

def freeze(conn: sqlite3.Connection, name: str, run_id: str, manifest: Iterable[tuple[dict, str]],
           parts: list[list[str]], estimate: dict, server_url: str) -> None:
    """Record, before anything is created at the service, exactly what the run sends: the manifest line and
    custom_id of every file, the split into parts, the run id that tags its jobs, its cost estimate and the
    service it goes to."""
    part_of = {cid: index for index, ids in enumerate(parts, 1) for cid in ids}
    conn.executemany("UPDATE objbatch_claims SET custom_id = ?, part = ?, manifest_json = ? "
                     "WHERE run_name = ? AND file_path = ?",
                     ((entry.get("custom_id"), part_of.get(entry.get("custom_id")), text, name, entry["file_path"])
                      for entry, text in manifest))
    conn.executemany("INSERT INTO objbatch_parts (run_name, part, parts, request_count) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(run_name, part) DO NOTHING",
                     [(name, index, len(parts), len(ids)) for index, ids in enumerate(parts, 1)])
    conn.execute("UPDATE objbatch_runs SET run_id = ?, state = 'submitting', estimate_json = ?, server_url = ? "
                 "WHERE run_name = ?", (run_id, json.dumps(estimate), server_url, name))


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
           "server": run.server_url, "endpoint": "/v1/chat/completions", "created_at": int(time.time()),
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
