"""Numbered migrations of what objbatch adds to the library database, in the order they came.

The database is the user's: a migration only adds (a column to `files`, the history tables objlib's tools
read when absent, objbatch's own `objbatch_*` tables and their columns) or fills objbatch's own tables; it
never drops or rewrites anything, and `PRAGMA user_version` stays objlib's. Each migration is applied
once and recorded in `objbatch_migrations` (name, applied_at); all that are pending are applied in one
transaction (ledger.upgrade), so a failure leaves the database as it was and the next open applies them.

Databases written before this table existed carry the schema of the version that wrote them, or any
mixture along the way (columns were added as they were needed). So each migration also accepts what it
would add being there already: tables are created if absent, columns added if missing, and a fill an
older version did is not done twice. Like llm's migrations.py: a function per step, named in order.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from .common import now_iso

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []
TABLE = "objbatch_migrations"


def migration(step: Migration) -> Migration:
    MIGRATIONS.append(step)
    return step


def pending(conn: sqlite3.Connection, tables: set[str], steps: list[Migration] | None = None) -> list[Migration]:
    """The migrations this database has not had, in order: one query on every open (`tables` is the list
    of table names the caller read already)."""
    steps = MIGRATIONS if steps is None else steps
    if TABLE not in tables:
        return list(steps)
    done = {row[0] for row in conn.execute(f"SELECT name FROM {TABLE}")}
    return [step for step in steps if step.__name__ not in done]


def apply(conn: sqlite3.Connection, steps: list[Migration]) -> None:
    """Apply `steps` and record each; the caller holds the transaction (ledger.upgrade)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for step in steps:
        step(conn)
        conn.execute(f"INSERT INTO {TABLE} (name, applied_at) VALUES (?, ?)",
                     (step.__name__, now_iso()))


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def add_columns(conn: sqlite3.Connection, table: str, wanted: dict[str, str]) -> None:
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    for name, declared in wanted.items():
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declared}")


# ------------------------------------------------------------------ the steps (never edit one once released:
# a database that had it will not have it again; add a step instead)

@migration
def m001_first_ledger(conn: sqlite3.Connection) -> None:
    """The first version's schema (c00038d): the mirror column, the history tables, the run ledger."""
    add_columns(conn, "files", {"ai_metadata_json": "TEXT"})  # the current AI metadata (a mirror)
    for statement in (
        """CREATE TABLE IF NOT EXISTS file_metadata_ai (metadata_id INTEGER PRIMARY KEY AUTOINCREMENT,
           file_path TEXT NOT NULL, metadata_json TEXT NOT NULL, model TEXT, prompt_version TEXT,
           extraction_config_hash TEXT, is_current INTEGER NOT NULL DEFAULT 1, created_at TEXT)""",
        "CREATE INDEX IF NOT EXISTS idx_file_metadata_ai_path ON file_metadata_ai(file_path, is_current)",
        """CREATE TABLE IF NOT EXISTS file_primary_topics (file_path TEXT NOT NULL, topic_tag TEXT NOT NULL,
           PRIMARY KEY (file_path, topic_tag))""",
        """CREATE TABLE IF NOT EXISTS objbatch_runs (run_name TEXT PRIMARY KEY, model TEXT, state TEXT NOT NULL,
           created_at TEXT NOT NULL, finished_at TEXT, counts_json TEXT)""",
        """CREATE TABLE IF NOT EXISTS objbatch_jobs (job_id TEXT PRIMARY KEY, run_name TEXT, run_id TEXT,
           model TEXT, status TEXT, total_requests INTEGER, completed_requests INTEGER,
           succeeded_requests INTEGER, failed_requests INTEGER, prompt_tokens INTEGER NOT NULL DEFAULT 0,
           completion_tokens INTEGER NOT NULL DEFAULT 0, created_at INTEGER, updated_at TEXT)""",
        """CREATE TABLE IF NOT EXISTS objbatch_claims (run_name TEXT NOT NULL, file_path TEXT NOT NULL,
           state TEXT NOT NULL, claimed_at TEXT NOT NULL, PRIMARY KEY (run_name, file_path))""",
        "CREATE INDEX IF NOT EXISTS idx_objbatch_claims_state ON objbatch_claims(state, file_path)",
        """CREATE TABLE IF NOT EXISTS objbatch_applied (result_key TEXT PRIMARY KEY, file_path TEXT NOT NULL,
           decision TEXT NOT NULL, outcome TEXT NOT NULL, applied_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS objbatch_files (file_path TEXT PRIMARY KEY,
           attempts INTEGER NOT NULL DEFAULT 0, reasons_json TEXT NOT NULL DEFAULT '[]')""",
    ):
        conn.execute(statement)


@migration
def m002_identity_and_parts(conn: sqlite3.Connection) -> None:
    """The ledger became the run's authority (67acf90): the database's identity, a run's parts, what was
    sent for each file, and why a file was skipped."""
    # objbatch_meta: library_id (this database's identity), db_path (where it lives)
    conn.execute("CREATE TABLE IF NOT EXISTS objbatch_meta (key TEXT PRIMARY KEY, value TEXT)")
    # input_file: the uploaded requests, recorded before the job is created
    conn.execute("""CREATE TABLE IF NOT EXISTS objbatch_parts (run_name TEXT NOT NULL, part INTEGER NOT NULL,
                    parts INTEGER NOT NULL, request_count INTEGER NOT NULL, input_file TEXT, job_id TEXT,
                    PRIMARY KEY (run_name, part))""")
    # run_id tags the run's jobs at the service (set when submission starts)
    add_columns(conn, "objbatch_runs", {"library_id": "TEXT", "db_path": "TEXT", "run_id": "TEXT"})
    add_columns(conn, "objbatch_claims", {"custom_id": "TEXT", "part": "INTEGER", "manifest_json": "TEXT"})
    add_columns(conn, "objbatch_files", {"skip_kind": "TEXT"})  # missing | unreadable: retried once readable


@migration
def m003_estimates_and_decisions(conn: sqlite3.Connection) -> None:
    """The estimate (a09431d), and each applied result's run, confidence, reasons and repairs."""
    add_columns(conn, "objbatch_runs", {"estimate_json": "TEXT"})
    add_columns(conn, "objbatch_applied", {"run_name": "TEXT", "confidence": "REAL", "reasons_json": "TEXT",
                                           "repairs_json": "TEXT"})
    conn.execute("CREATE INDEX IF NOT EXISTS idx_objbatch_applied_path ON objbatch_applied(file_path, applied_at)")


@migration
def m004_leases(conn: sqlite3.Connection) -> None:
    """One process works on a run at a time (990d5b4): owner host:pid, until (unix time)."""
    conn.execute("""CREATE TABLE IF NOT EXISTS objbatch_leases (run_name TEXT PRIMARY KEY, owner TEXT NOT NULL,
                    until REAL NOT NULL)""")


@migration
def m005_server_url(conn: sqlite3.Connection) -> None:
    """The service a run's jobs went to (4e63555). A database at this step is what 6ab6fb2 wrote."""
    add_columns(conn, "objbatch_runs", {"server_url": "TEXT"})


@migration
def m006_what_was_sent(conn: sqlite3.Connection) -> None:
    """Run life (76a9105): why a run ended (states.EndReason), and for each file the
    content sent and the blake2b digest of its request line, recorded before the upload."""
    add_columns(conn, "objbatch_runs", {"end_reason": "TEXT"})
    add_columns(conn, "objbatch_claims", {"content_hash": "TEXT", "request_digest": "TEXT"})


@migration
def m007_usage_and_models(conn: sqlite3.Connection) -> None:
    """Costs as data (c76120c): cached and reasoning tokens, the dated model that answered, when a job
    finished (its results expire 24 h later), its result files and when they were downloaded; after apply,
    what became of the run's files at the service."""
    add_columns(conn, "objbatch_runs", {"remote_cleanup": "TEXT"})
    add_columns(conn, "objbatch_jobs", {
        "cached_tokens": "INTEGER NOT NULL DEFAULT 0", "reasoning_tokens": "INTEGER NOT NULL DEFAULT 0",
        "resolved_model": "TEXT", "completed_at": "INTEGER", "output_file": "TEXT", "error_file": "TEXT",
        "fetched_at": "TEXT"})
    add_columns(conn, "file_metadata_ai", {"resolved_model": "TEXT"})  # beside model (the name asked for)
    add_columns(conn, "objbatch_applied", {"model": "TEXT", "resolved_model": "TEXT"})


# Earlier versions left only a message for a file skipped as missing or unreadable; its kind is taken from
# that message once, so no query decides by message text.
SKIPPED_BY_MESSAGE = """
SELECT file_path, CASE WHEN error_message LIKE 'file cannot be read%' THEN 'unreadable' ELSE 'missing' END AS skip_kind
FROM main.files WHERE ai_metadata_status = 'skipped' AND (error_message LIKE 'file not found on disk%'
     OR error_message LIKE 'file cannot be read%' OR error_message LIKE 'file no longer on disk%')
"""


@migration
def m008_skip_kind_from_messages(conn: sqlite3.Connection) -> None:
    """States as a vocabulary (5ca1bf4). The versions from then until numbered migrations marked this fill
    as objbatch_meta schema_version 2: a database they opened had it already. The mark is still written,
    so such a version, run again on this database, does not fill twice."""
    if filled_before(conn):
        return
    conn.execute(f"INSERT INTO objbatch_files (file_path, skip_kind) {SKIPPED_BY_MESSAGE} ON CONFLICT(file_path) "
                 "DO UPDATE SET skip_kind = excluded.skip_kind WHERE objbatch_files.skip_kind IS NULL")
    conn.execute("INSERT INTO objbatch_meta (key, value) VALUES ('schema_version', '2') ON CONFLICT(key) DO UPDATE "
                 "SET value = excluded.value")


def filled_before(conn: sqlite3.Connection) -> bool:
    if "objbatch_meta" not in table_names(conn):
        return False
    row = conn.execute("SELECT value FROM main.objbatch_meta WHERE key = 'schema_version'").fetchone()
    return bool(row) and str(row[0]).isdigit() and int(row[0]) >= 2


def skip_kinds_filled(table: str, defaults: dict[str, str]) -> str:
    """objbatch_files as m008 would leave it, for a reader that cannot apply it: `table` is a SELECT of
    objbatch_files as it is, with each of its current columns (`defaults`)."""
    kept = ", ".join("COALESCE(o.skip_kind, fill.skip_kind) AS skip_kind" if name == "skip_kind" else f"o.{name}"
                     for name in defaults)
    added = ", ".join(f"fill.{name}" if name in ("file_path", "skip_kind") else value
                      for name, value in defaults.items())
    return (f"WITH o AS ({table}), fill AS ({SKIPPED_BY_MESSAGE}) SELECT {kept} FROM o LEFT JOIN fill "
            f"ON fill.file_path = o.file_path UNION ALL SELECT {added} FROM fill "
            "WHERE fill.file_path NOT IN (SELECT file_path FROM o)")


# ------------------------------------------------------------------ the schema the steps reach

def current_schema() -> dict[str, tuple[str, dict[str, str]]]:
    """Each table the steps create or extend, other than the library's `files`: its CREATE statement and
    each column's value in a row it did not have yet (its DEFAULT, else NULL). Built by applying every step
    to an empty database in memory, so it cannot disagree with them (the readers' stand-in uses it)."""
    memory = sqlite3.connect(":memory:")
    try:
        memory.execute("CREATE TABLE files (file_path TEXT PRIMARY KEY, ai_metadata_status TEXT, error_message TEXT)")
        apply(memory, MIGRATIONS)
        schema: dict[str, tuple[str, dict[str, str]]] = {}
        for name, sql in memory.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT IN "
                                        "('files', 'sqlite_sequence', ?)", (TABLE,)):
            defaults = {row[1]: row[4] if row[4] is not None else "NULL"
                        for row in memory.execute(f"PRAGMA table_info({name})")}
            schema[name] = (sql, defaults)
        return schema
    finally:
        memory.close()
