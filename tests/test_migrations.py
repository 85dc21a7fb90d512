"""Numbered migrations (lib/objbatch/migrations.py): the current schema is reached from a library objbatch
never touched, from a database at each earlier step, and from databases objbatch c00038d (the first
version) and 6ab6fb2 (the last before numbered migrations) actually wrote (tests/fixtures/ledger-*.sql,
made by running those versions: tests/fixtures/make_old_ledger.sh)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, batch, query, run
from objbatch import ledger, migrations
from objbatch.migrations import MIGRATIONS

FIXTURES = ROOT / "tests" / "fixtures"


def schema(db: Path) -> dict[str, list[tuple]]:
    """Every table's columns (name, type, not null, default, primary key) and every index's name."""
    conn = sqlite3.connect(db)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        found = {n: [tuple(c)[1:] for c in conn.execute(f"PRAGMA table_info({n})")] for n in names}
        found["(indexes)"] = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND "
                                          "name NOT LIKE 'sqlite_autoindex%' ORDER BY name").fetchall()
        return found
    finally:
        conn.close()


def dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def at_step(db: Path, step: int) -> None:
    """The database as a version whose last migration was MIGRATIONS[step - 1] left it."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        ledger.upgrade(conn, MIGRATIONS[:step])
    finally:
        conn.close()


def applied(db: Path) -> list[str]:
    return [n for (n,) in query(db, "SELECT name FROM objbatch_migrations ORDER BY name")]


def old_library(tmp_path: Path, version: str = "6ab6fb2") -> tuple[Path, Path]:
    """The database objbatch `version` wrote (tests/fixtures/ledger-<version>.sql), beside the same sample
    library regenerated here (so its files are there again, the one it found missing included)."""
    from mistral_emulator.sample_library import build

    root, db = tmp_path / "library", tmp_path / "library.db"
    build(root, tmp_path / "scratch.db", count=8, seed=3, small=version != "c00038d")  # it had no --small
    conn = sqlite3.connect(db)
    fixture = FIXTURES / f"ledger-{version}.sql"
    conn.executescript(fixture.read_text().replace("@DB@", str(db)).replace("@LIBRARY@", str(root)))
    conn.close()
    for path, content_hash in query(db, "SELECT file_path, content_hash FROM files WHERE file_path LIKE '%.txt'"):
        if Path(path).exists():  # the regenerated library is the one the old version read
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == content_hash, path
    return root, db


OLD = ["c00038d", "6ab6fb2"]  # the first version; the last before numbered migrations


# ---------------------------------------------------------------- the list itself

def test_the_migrations_are_numbered_in_order_and_each_says_what_it_adds():
    names = [step.__name__ for step in MIGRATIONS]
    assert names == [f"m{i:03d}_{name.split('_', 1)[1]}" for i, name in enumerate(names, 1)]
    assert len(set(names)) == len(names) and all(step.__doc__ for step in MIGRATIONS)


# ---------------------------------------------------------------- (a) a library objbatch never touched

def test_a_library_objbatch_never_touched_gets_every_migration_once_and_keeps_its_own_data(library):
    _, db = library
    before, files = dump(db), query(db, "SELECT * FROM files ORDER BY file_path")
    assert run("select-pending", "--db", db, "--max", "0").returncode == 0
    assert applied(db) == sorted(step.__name__ for step in MIGRATIONS)
    assert all(when[:2] == "20" and when[10] == "T" for (when,) in query(db, "SELECT applied_at FROM objbatch_migrations"))
    assert query(db, "PRAGMA user_version") == [(12,)]  # objlib's, never objbatch's
    assert query(db, "SELECT * FROM files ORDER BY file_path") == [(*row, None) for row in files]  # the mirror
    after = set(dump(db))
    assert all(line in after for line in before if not line.startswith(('INSERT INTO "files"', "CREATE TABLE files")))
    stamp = query(db, "SELECT applied_at FROM objbatch_migrations")
    assert run("stats", "--db", db).returncode == 0 and run("select-pending", "--db", db, "--max", "0").returncode == 0
    assert query(db, "SELECT applied_at FROM objbatch_migrations") == stamp  # applied once


# ---------------------------------------------------------------- (b) each step from the previous one

@pytest.mark.parametrize("step", range(len(MIGRATIONS)), ids=[s.__name__ for s in MIGRATIONS])
def test_each_migration_from_the_previous_step(library, tmp_path, step):
    """A database whose last migration was the one before this step: opening it applies exactly the rest,
    keeps the ledger rows it held, and ends where a database migrated in one go ends. Each step also
    takes what it adds being there already (an earlier version's mixture), changing nothing."""
    _, db = library
    fresh = tmp_path / "fresh.db"
    fresh.write_bytes(db.read_bytes())
    at_step(fresh, len(MIGRATIONS))
    at_step(db, step)
    if step:
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO objbatch_runs (run_name, state, created_at) VALUES ('r', 'applied', 'then')")
    before = schema(db)
    assert run("stats", "--db", db).returncode == 0
    assert schema(db) == before  # a reader does not migrate
    assert run("select-pending", "--db", db, "--max", "0").returncode == 0
    assert applied(db) == sorted(s.__name__ for s in MIGRATIONS)
    assert schema(db) == schema(fresh)
    assert query(db, "SELECT run_name, state FROM objbatch_runs") == ([("r", "applied")] if step else [])
    conn = sqlite3.connect(db, isolation_level=None)
    MIGRATIONS[step](conn)
    conn.close()
    assert schema(db) == schema(fresh)


@pytest.mark.parametrize("version, step", [("c00038d", 1), ("6ab6fb2", 5)])
def test_the_step_a_version_reached_is_the_schema_it_wrote(library, tmp_path, version, step):
    _, db = library
    at_step(db, step)
    _, old = old_library(tmp_path / "old", version)
    here, there = schema(db), schema(old)
    for found in (here, there):
        found.pop("objbatch_migrations", None)
        found["files"] = [c for c in found["files"] if c[0] == "ai_metadata_json"]
    assert here == there


def test_the_skip_kind_fill_takes_the_kind_from_an_older_message_once(library):
    _, db = library
    at_step(db, 7)
    path = query(db, "SELECT file_path FROM files WHERE file_path LIKE '%.txt' ORDER BY file_path LIMIT 1")[0][0]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE files SET ai_metadata_status = 'skipped', error_message = 'file cannot be read "
                     "(permission denied)' WHERE file_path = ?", (path,))
    assert run("select-pending", "--db", db, "--max", "0").returncode == 0
    assert query(db, "SELECT file_path, skip_kind FROM objbatch_files") == [(path, "unreadable")]
    assert query(db, "SELECT value FROM objbatch_meta WHERE key = 'schema_version'") == [("2",)]


# ---------------------------------------------------------------- (c) databases older versions wrote

@pytest.mark.parametrize("version", OLD)
def test_a_database_an_older_version_wrote_upgrades_and_make_batch_then_finishes_its_run_and_the_rest(
        emulator, tmp_path, runs_dir, version):
    root, db = old_library(tmp_path, version)
    history = query(db, "SELECT * FROM file_metadata_ai")
    identity = None if version == "c00038d" else query(db, "SELECT value FROM objbatch_meta WHERE key = 'library_id'")
    assert query(db, "SELECT run_name, state FROM objbatch_runs ORDER BY run_name") == [("old", "applied"),
                                                                                          ("old2", "claimed")]
    first = batch(emulator, db, runs_dir)
    assert first.returncode == 0, first.stderr
    assert applied(db) == sorted(s.__name__ for s in MIGRATIONS)
    assert query(db, "SELECT state, end_reason FROM objbatch_runs WHERE run_name = 'old2'") == [("applied", "applied")]
    second = batch(emulator, db, runs_dir)
    assert second.returncode == 0, second.stderr
    statuses = dict(query(db, "SELECT file_path, ai_metadata_status FROM files"))
    removed = next(p for p in statuses if "Ethics of Egoism - Lesson 01" in p)
    assert statuses[removed] in ("extracted", "needs_review")  # skipped as missing by the old version, back
    text = [p for p in statuses if p.endswith(".txt") and Path(p).exists() and "Complete Lectures" not in p]
    assert len(text) == 9 and all(statuses[p] in ("extracted", "needs_review") for p in text), statuses
    assert query(db, "SELECT * FROM file_metadata_ai")[:len(history)] == [tuple(r) + (None,) for r in history]
    made = query(db, "SELECT value FROM objbatch_meta WHERE key = 'library_id'")
    assert made == (identity or made) and query(db, "SELECT DISTINCT library_id FROM objbatch_runs") == made
    assert query(db, "PRAGMA user_version") == [(12,)]
    stats = json.loads(run("stats", "--db", db, "--json").stdout)
    assert {r["run"] for r in stats["runs"]} >= {"old", "old2"}, stats["runs"]


@pytest.mark.parametrize("version", OLD)
def test_readers_read_a_database_an_older_version_wrote_without_migrating_it_even_on_read_only_media(
        tmp_path, version):
    from test_bad_input import fingerprint, on_read_only_media

    _, db = old_library(tmp_path, version)
    before = fingerprint(db)
    path = query(db, "SELECT file_path FROM file_metadata_ai LIMIT 1")[0][0]
    readers = (["stats", "--json"], ["review", "--skipped"], ["show", path], ["export-metadata", "--nl"])
    for reader in readers:
        done = run(reader[0], "--db", db, *reader[1:])
        assert done.returncode == 0, (reader, done.stderr)
        media = on_read_only_media(db.parent, reader[0], "--db", db, *reader[1:])
        assert media.returncode == 0 and media.stdout == done.stdout, (reader, media.stderr)
    assert fingerprint(db) == before
    assert "objbatch_migrations" not in {n for (n,) in query(db, "SELECT name FROM sqlite_master")}
    stats = json.loads(run("stats", "--db", db, "--json").stdout)
    assert stats["totals"]["cost_usd"] > 0 and {r["run"] for r in stats["runs"]} == {"old", "old2"}


# ---------------------------------------------------------------- a failure midway

def broken(conn: sqlite3.Connection) -> None:
    """A step that fails after it changed something."""
    conn.execute("ALTER TABLE objbatch_runs ADD COLUMN half_done TEXT")
    raise sqlite3.OperationalError("disk I/O error")


@pytest.mark.parametrize("version", OLD)
def test_a_migration_that_fails_midway_leaves_the_database_as_it_was_and_the_next_open_completes(
        tmp_path, version):
    _, db = old_library(tmp_path, version)
    before = dump(db)
    conn = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        ledger.upgrade(conn, [*MIGRATIONS[:6], broken, *MIGRATIONS[6:]])
    conn.close()
    assert dump(db) == before
    assert run("select-pending", "--db", db, "--max", "0").returncode == 0
    assert applied(db) == sorted(s.__name__ for s in MIGRATIONS)


KILLED_MIDWAY = """
import os, signal, sqlite3, sys
from objbatch import ledger
from objbatch.migrations import MIGRATIONS

def killed(conn):
    conn.execute("ALTER TABLE objbatch_runs ADD COLUMN half_done TEXT")
    os.kill(os.getpid(), signal.SIGKILL)

ledger.upgrade(sqlite3.connect(sys.argv[1], isolation_level=None), [*MIGRATIONS[:6], killed, *MIGRATIONS[6:]])
"""


def test_a_process_killed_in_the_middle_of_a_migration_leaves_the_database_as_it_was(tmp_path):
    _, db = old_library(tmp_path)
    before = dump(db)
    done = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, str(db)], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert dump(db) == before  # the next connection rolls the journal back
    assert run("select-pending", "--db", db, "--max", "0").returncode == 0
    assert applied(db) == sorted(s.__name__ for s in MIGRATIONS)


def test_an_estimate_on_an_old_database_counts_a_file_it_skipped_as_missing_that_is_back(
        emulator, library, runs_dir, tmp_path):
    """A reader cannot apply m008 (the skip kind from an older version's message): it sees that fill as a
    view, so the estimate selects what a writer's selection would, even on read-only media."""
    from test_bad_input import fingerprint, on_read_only_media

    _, original = library
    at_step(original, 7)
    path = query(original, "SELECT file_path FROM files WHERE file_path LIKE '%.txt' ORDER BY file_path")[0][0]
    with sqlite3.connect(original) as conn:
        conn.execute("UPDATE files SET ai_metadata_status = 'skipped', error_message = 'file not found on disk "
                     "(deleted, moved or on an unmounted disk)' WHERE file_path = ?", (path,))
    conn.close()
    db = tmp_path / "old" / "library.db"
    db.parent.mkdir()
    db.write_bytes(original.read_bytes())
    before = fingerprint(db)
    estimate = on_read_only_media(db.parent, "batch-run", "--estimate", f"DB={db}", f"RUNS={runs_dir}",
                                  env=emulator.env)
    assert estimate.returncode == 0, estimate.stderr
    assert fingerprint(db) == before
    assert run("select-pending", "--db", original, "--max", "0").returncode == 0
    assert applied(original) == sorted(s.__name__ for s in MIGRATIONS)
    migrated = run("batch-run", "--estimate", f"DB={original}", f"RUNS={runs_dir}", env=emulator.env)
    assert estimate.stdout.replace(str(db), str(original)) == migrated.stdout


def test_two_writers_that_both_found_migrations_pending_apply_each_once(tmp_path):
    """Both opened the old database before either upgraded it: the second finds the list done under the lock."""
    _, db = old_library(tmp_path)
    first, second = (sqlite3.connect(db, isolation_level=None) for _ in range(2))
    try:
        for conn in (first, second):
            assert migrations.pending(conn, migrations.table_names(conn)) == MIGRATIONS
        ledger.upgrade(first)
        ledger.upgrade(second)
    finally:
        first.close()
        second.close()
    assert query(db, "SELECT COUNT(*) FROM objbatch_migrations") == [(len(MIGRATIONS),)]
