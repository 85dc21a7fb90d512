"""The library database: connecting safely, adding (never dropping) what objbatch needs, and its ledger
of runs, jobs, claims and applied results.

The database is the user's. objbatch adds a column to `files`, the two history tables when absent, and
tables of its own prefixed `objbatch_`; it never drops or rewrites anything else.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .common import Failure, now_iso

BUSY_TIMEOUT_MS = 120_000
IN_FLIGHT = "claimed"

OWN_TABLES = """
CREATE TABLE IF NOT EXISTS file_metadata_ai (
    metadata_id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    model TEXT,
    prompt_version TEXT,
    extraction_config_hash TEXT,
    is_current INTEGER NOT NULL DEFAULT 1,
    created_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_file_metadata_ai_path ON file_metadata_ai(file_path, is_current);
CREATE TABLE IF NOT EXISTS file_primary_topics (
    file_path TEXT NOT NULL,
    topic_tag TEXT NOT NULL,
    PRIMARY KEY (file_path, topic_tag)
);
CREATE TABLE IF NOT EXISTS objbatch_runs (
    run_name TEXT PRIMARY KEY,
    model TEXT,
    state TEXT NOT NULL,            -- claimed | submitted | applied
    created_at TEXT NOT NULL,
    finished_at TEXT,
    counts_json TEXT
);
CREATE TABLE IF NOT EXISTS objbatch_jobs (
    job_id TEXT PRIMARY KEY,
    run_name TEXT,
    run_id TEXT,
    model TEXT,
    status TEXT,
    total_requests INTEGER,
    completed_requests INTEGER,
    succeeded_requests INTEGER,
    failed_requests INTEGER,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS objbatch_claims (
    run_name TEXT NOT NULL,
    file_path TEXT NOT NULL,
    state TEXT NOT NULL,            -- claimed (in flight) | done
    claimed_at TEXT NOT NULL,
    PRIMARY KEY (run_name, file_path)
);
CREATE INDEX IF NOT EXISTS idx_objbatch_claims_state ON objbatch_claims(state, file_path);
CREATE TABLE IF NOT EXISTS objbatch_applied (
    result_key TEXT PRIMARY KEY,    -- job_id/custom_id, or skip/run/file_path
    file_path TEXT NOT NULL,
    decision TEXT NOT NULL,
    outcome TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS objbatch_files (
    file_path TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL DEFAULT 0,
    reasons_json TEXT NOT NULL DEFAULT '[]'
);
"""


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the library database (it must exist and hold `files`), waiting on locks instead of failing."""
    path = Path(path)
    if not path.exists():
        raise Failure(f"database {path} does not exist; pass --db with the library's SQLite file (or DB= to make)")
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise Failure(f"{path} is not a usable SQLite database ({exc}); check --db") from None
    if "files" not in tables:
        raise Failure(f"{path} has no 'files' table; --db must be the library database")
    if not tables.issuperset({"objbatch_runs", "objbatch_claims", "objbatch_applied"}) or \
            "ai_metadata_json" not in _columns(conn, "files"):
        with transaction(conn):
            _add_what_we_need(conn)
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _add_what_we_need(conn: sqlite3.Connection) -> None:
    if "ai_metadata_json" not in _columns(conn, "files"):
        conn.execute("ALTER TABLE files ADD COLUMN ai_metadata_json TEXT")
    for statement in OWN_TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock up front (waiting if another run holds it), all or nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def opened(path: str | Path) -> Iterator[sqlite3.Connection]:
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


# ------------------------------------------------------------------ runs and jobs

def ensure_run(conn: sqlite3.Connection, run_name: str, model: str | None, state: str = "claimed") -> None:
    conn.execute("INSERT INTO objbatch_runs (run_name, model, state, created_at) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT(run_name) DO NOTHING", (run_name, model, state, now_iso()))


def record_jobs(db: str, record: dict) -> None:
    """Link a run's jobs to it in the ledger (called by batch-submit --db)."""
    with opened(db) as conn, transaction(conn):
        ensure_run(conn, record["run_name"], record.get("model"))
        conn.execute("UPDATE objbatch_runs SET state = 'submitted' WHERE run_name = ? AND state = 'claimed'",
                     (record["run_name"],))
        for entry in record["jobs"]:
            conn.execute(
                "INSERT INTO objbatch_jobs (job_id, run_name, run_id, model, status, total_requests, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO NOTHING",
                (entry["job_id"], record["run_name"], record["run_id"], record.get("model"), entry.get("status"),
                 entry["request_count"], entry.get("created_at"), now_iso()))


def update_jobs(db: str, jobs: list[dict]) -> None:
    with opened(db) as conn, transaction(conn):
        for job in jobs:
            conn.execute(
                "INSERT INTO objbatch_jobs (job_id, run_name, model, status, total_requests, completed_requests, "
                "succeeded_requests, failed_requests, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET status = excluded.status, "
                "completed_requests = excluded.completed_requests, succeeded_requests = excluded.succeeded_requests, "
                "failed_requests = excluded.failed_requests, updated_at = excluded.updated_at",
                ((job["id"], (job.get("metadata") or {}).get("objbatch_run_name"), job.get("model"), job["status"],
                  job["total_requests"], job["completed_requests"], job["succeeded_requests"],
                  job["failed_requests"], job["created_at"], now_iso())))


def in_flight(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Runs with files still claimed, and their jobs."""
    return conn.execute(
        "SELECT c.run_name, COUNT(*) AS files, "
        "(SELECT group_concat(job_id || ':' || COALESCE(status, '?'), ' ') FROM objbatch_jobs j "
        " WHERE j.run_name = c.run_name) AS jobs "
        "FROM objbatch_claims c WHERE c.state = ? GROUP BY c.run_name ORDER BY c.run_name", (IN_FLIGHT,)).fetchall()


def release_claims(conn: sqlite3.Connection, run_name: str) -> int:
    return conn.execute("UPDATE objbatch_claims SET state = 'done' WHERE run_name = ? AND state = ?",
                        (run_name, IN_FLIGHT)).rowcount


def load_json(text: Any, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return default
