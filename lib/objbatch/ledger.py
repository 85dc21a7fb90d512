"""The library database: connecting safely, checking it can take what objbatch writes, giving it an
identity, and adding (never dropping) what objbatch needs.

The database is the user's. objbatch adds the column `files.ai_metadata_json`, the two history tables when
absent, and tables of its own prefixed `objbatch_` (its ledger: see runs.py), by numbered migrations
(migrations.py); it never drops or rewrites anything else. Every check here runs before anything is
claimed or paid for.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from . import migrations
from .common import Failure, log

BUSY_TIMEOUT_MS = 120_000

# What objbatch reads and writes in the library's own tables: checked before anything is claimed or paid.
LIBRARY_COLUMNS = {
    "files": ("file_path", "content_hash", "filename", "file_size", "metadata_json", "is_deleted",
              "ai_metadata_status", "ai_confidence_score", "error_message", "updated_at"),
    "file_metadata_ai": ("file_path", "metadata_json", "model", "prompt_version", "extraction_config_hash",
                         "is_current", "created_at"),
    "file_primary_topics": ("file_path", "topic_tag"),
}
COLUMN_TYPES = {"ai_confidence_score": "REAL", "is_deleted": "INTEGER DEFAULT 0", "file_size": "INTEGER",
                "ai_metadata_status": "TEXT DEFAULT 'pending'"}


class NotUtf8(str):
    """A text value from the database whose bytes are not UTF-8, shown with U+FFFD where they failed. It
    is a str (prints, serialises, compares), but it is not what the database holds: a row found by it is
    not found, so code that writes by it checks for this type first (select-pending sets such a path
    aside by rowid; requeue refuses it by name)."""


NOT_UTF8_PATH = "file_path is not valid UTF-8 in the database; fix the row (rescan the file with objlib)"


def tolerant_text(raw: bytes) -> str:
    """The connection's text factory: any text the database holds can be read, whatever its bytes. A
    strict decode would stop a whole query (and the command) at the first bad row."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return NotUtf8(raw.decode("utf-8", "replace"))


class Library(sqlite3.Connection):
    """A connection to a library database that knows the database's identity."""

    library_id: str = ""
    path: str = ""
    read_only: bool = False  # opened so that it cannot write (readers, the estimate)


def connect(path: str | Path, identity: bool = True, read_only: bool = False) -> Library:
    """Open the library database (it must exist and hold `files`), waiting on locks instead of failing;
    check it can take objbatch's results and give it an identity, before anything else happens. Commands
    that only read (stats, review, ...) pass identity=False: they never decide that a file is a copy; and
    read_only=True: a database objbatch has never touched is left as it is (see _stand_in)."""
    if not str(path).strip():
        raise Failure("no database given: pass --db with the library's SQLite file (or DB= to make)")
    path = Path(path)
    if path.is_dir():
        raise Failure(f"{path} is a folder; --db (DB= to make) must be the library's SQLite file")
    if not path.exists():
        raise Failure(f"database {path} does not exist; pass --db with the library's SQLite file (or DB= to make)")
    conn = _open(path, read_only)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise Failure(f"{path} is not a usable SQLite database ({exc}); check --db") from None
    if "files" not in tables:
        raise Failure(f"{path} has no 'files' table; --db must be the library database")
    check_library_tables(conn, path, tables)
    todo = migrations.pending(conn, tables)  # the one query every open makes for them
    if todo:
        if read_only:
            _stand_in(conn, tables, todo)
        else:
            upgrade(conn)
    if read_only:
        conn.execute("PRAGMA query_only = 1")  # after the stand-in's TEMP tables: nothing else is created
    if identity:
        conn.library_id = _identity(conn)
    else:
        row = conn.execute("SELECT value FROM objbatch_meta WHERE key = 'library_id'").fetchone()
        conn.library_id = row[0] if row else ""
    return conn


SQLITE_READONLY, SQLITE_CANTOPEN = 8, 14


def uri(path: str | Path, **params: object) -> str:
    """A file: URI for SQLite, the path quoted: '#', '?' and '%' are legal in a file name but not in a URI
    (unquoted, 'h#1/lib.db?mode=ro' opens, or creates, the file 'h')."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?{urllib.parse.urlencode(params)}"


def _open(path: Path, read_only: bool) -> Library:
    """A connection that writes (it refuses a database it cannot write, saying why), or one that cannot
    write (read_only: the readers and the estimate): query_only where the database can be written (so its
    -wal and -shm files are cleaned up as usual), mode=ro where it cannot, and immutable for a WAL
    database on read-only media (SQLite cannot create its -shm file there)."""
    if not read_only or not read_only_place(path):  # a reader here is made query_only once it is set up
        if not read_only:
            _refuse_read_only(path)
        return _configured(sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                           factory=Library), path, read_only)
    conn = _configured(sqlite3.connect(uri(path, mode="ro"), uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, factory=Library), path, True)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != SQLITE_CANTOPEN or not read_only_place(path):
            raise
        conn.close()
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size:
            raise Failure(f"database {path} is in WAL mode on read-only media and {wal} holds changes not yet in "
                          "it; copy both files to a folder that can be written and use that copy") from None
        conn = _configured(sqlite3.connect(uri(path, mode="ro", immutable=1), uri=True, isolation_level=None,
                                           factory=Library), path, True)
    return conn


def _configured(conn: Library, path: Path, read_only: bool) -> Library:
    conn.row_factory = sqlite3.Row
    conn.text_factory = tolerant_text
    conn.path = str(path.resolve())
    conn.read_only = read_only
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def read_only_place(path: Path) -> str | None:
    """Why the database at `path` cannot be written, or None: read-only media, or no permission on the file
    or on its folder (SQLite writes a journal or a -shm file beside it)."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        pass
    if not os.access(path, os.W_OK):
        return "the file cannot be written (permissions)"
    if not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} cannot be written (SQLite writes its journal there)"
    return None


def _refuse_read_only(path: Path) -> None:
    why = read_only_place(path)
    if why:
        raise Failure(f"database {path} is read-only: {why}; this command writes to it (the readers stats, review, "
                      "show, export-metadata and make estimate work on it): copy it to a folder that can be written, "
                      "or make it writable")


def columns(conn: sqlite3.Connection, table: str) -> dict[str, sqlite3.Row]:
    return {row["name"]: row for row in conn.execute(f"PRAGMA table_info({table})")}


def check_library_tables(conn: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    """Every library column objbatch reads or writes must be there, and an existing history table must take
    the rows objbatch inserts: found out now, not by apply-sql after the job was paid."""
    for table, needed in LIBRARY_COLUMNS.items():
        if table not in tables:
            continue  # the history tables are created when absent
        have = columns(conn, table)
        missing = [c for c in needed if c not in have]
        if missing:
            fix = "; ".join(f"ALTER TABLE {table} ADD COLUMN {c} {COLUMN_TYPES.get(c, 'TEXT')}" for c in missing)
            raise Failure(f"database {path}: table {table} has no column {', '.join(missing)}, which objbatch "
                          f"needs; it is not a current library database (let objlib upgrade it, or: {fix})")
        if table != "files":
            blocking = [n for n, c in have.items() if c["notnull"] and c["dflt_value"] is None and not c["pk"]
                        and n not in needed]
            if blocking:
                raise Failure(f"database {path}: table {table} requires {', '.join(blocking)}, which objbatch "
                              "does not write; give those columns a default or drop the NOT NULL")


def upgrade(conn: sqlite3.Connection, steps: list[migrations.Migration] | None = None) -> None:
    """Apply the migrations this database has not had, in one transaction: all of them, or (on any failure)
    none. They are read again under the write lock: another process may have applied them meanwhile."""
    with transaction(conn):
        migrations.apply(conn, migrations.pending(conn, migrations.table_names(conn), steps))


def _stand_in(conn: sqlite3.Connection, tables: set[str], todo: list[migrations.Migration]) -> None:
    """For a reader on a database objbatch has not migrated (never touched, or an earlier version's): what
    the pending migrations would make, for this connection only (temp objects come first in name lookup):
    an absent table as an empty TEMP table, a table missing columns as a TEMP view adding them (with the
    value an added column holds in existing rows), and objbatch_files with m008's skip kinds when that
    fill is pending. The database itself is not written."""
    if "ai_metadata_json" not in columns(conn, "files"):
        conn.execute("CREATE TEMP VIEW files AS SELECT *, NULL AS ai_metadata_json FROM main.files")
    fill = migrations.m008_skip_kind_from_messages in todo and not migrations.filled_before(conn)
    for table, (create, defaults) in migrations.current_schema().items():
        source = _as_it_would_be(conn, table, defaults, tables)
        if table == "objbatch_files" and fill:
            filled = migrations.skip_kinds_filled(source or f"SELECT * FROM main.{table}", defaults)
            conn.execute(f"CREATE TEMP VIEW {table} AS {filled}")
        elif table not in tables:
            conn.execute(create.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
        elif source:
            conn.execute(f"CREATE TEMP VIEW {table} AS {source}")


def _as_it_would_be(conn: sqlite3.Connection, table: str, defaults: dict[str, str], tables: set[str]) -> str | None:
    """A SELECT of `table` with the columns the migrations would give it, or None when it has them all."""
    if table not in tables:
        return "SELECT " + ", ".join(f"{value} AS {name}" for name, value in defaults.items()) + " WHERE 0"
    missing = [name for name in defaults if name not in columns(conn, table)]
    if not missing:
        return None
    return "SELECT *, " + ", ".join(f"{defaults[name]} AS {name}" for name in missing) + f" FROM main.{table}"


# ------------------------------------------------------------------ identity

def _identity(conn: Library) -> str:
    """The database's identity, made the first time objbatch touches it. A database found at another path
    than it was made at was either moved (the old path is gone: it keeps its identity) or copied (the
    original is still there: the copy gets an identity of its own, so runs of the original are never
    resumed, fetched, applied or cancelled in the copy)."""
    meta: dict[str, str] = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM objbatch_meta")}
    library_id, recorded = meta.get("library_id"), meta.get("db_path")
    if library_id and recorded == conn.path:
        return library_id
    if conn.read_only:  # what the identity would be, deciding nothing: a copy's runs are none of the original's
        return "" if not library_id or _is_original(recorded, library_id, conn.path) else library_id
    with transaction(conn):
        if not library_id:
            library_id = str(uuid.uuid4())
        elif _is_original(recorded, library_id, conn.path):
            log(f"objbatch: database {conn.path} is a copy of {recorded}: it gets an identity of its own; "
                f"runs started in {recorded} stay with it")
            library_id = str(uuid.uuid4())
        conn.executemany("INSERT INTO objbatch_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = excluded.value", [("library_id", library_id), ("db_path", conn.path)])
        from .runs import adopt_unowned  # the run ledger's owner (it imports this module)

        adopt_unowned(conn, library_id, conn.path)
    return library_id


def _is_original(recorded: str | None, library_id: str, here: str) -> bool:
    """Whether `recorded` is another database file that still carries this identity."""
    if not recorded or not os.path.exists(recorded):
        return False
    try:
        if os.path.samefile(recorded, here):
            return False  # the same file reached by another path (a symlink, a bind mount)
        other = sqlite3.connect(uri(recorded, mode="ro"), uri=True, timeout=5)
        try:
            row = other.execute("SELECT value FROM objbatch_meta WHERE key = 'library_id'").fetchone()
        finally:
            other.close()
    except (OSError, sqlite3.Error):
        return False
    return bool(row) and row[0] == library_id


# ------------------------------------------------------------------ transactions

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
def opened(path: str | Path, identity: bool = True, read_only: bool = False) -> Iterator[Library]:
    conn = connect(path, identity, read_only)
    try:
        yield conn
    finally:
        conn.close()


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return column in columns(conn, table)


def load_json(text: Any, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return default
