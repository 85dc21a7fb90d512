"""Violations the seeded simulation (tests/simulate.py) found that were none of issue 15's fourteen, each as a
plain test with the real commands, the real emulator and a real SQLite library."""

from __future__ import annotations

import sqlite3

from conftest import query, run


def batch_run(emu, db, runs, *extra):
    return run("batch-run", f"DB={db}", f"RUNS={runs}", "POLL=0.05", *extra, env=emu.env)


def backup(db, to) -> None:
    source, target = sqlite3.connect(db), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def test_a_restored_database_whose_run_the_folder_shows_applied_still_finishes_it(emulator, library, runs_dir,
                                                                                tmp_path):
    """make simulate SEED=13: the database is backed up while run a's job runs, the run is applied, the
    backup is restored. The ledger says run a is submitted, its folder holds an applied.json: make batch
    said "Run a submitted", exit 0, forever, and make cancel could not end it either."""
    _, db = library
    emulator.pace(queue_seconds=1000)
    held = batch_run(emulator, db, runs_dir, "NAME=a", "MAX=3", "TIMEOUT=0")
    assert held.returncode == 75, held.stderr
    backup(db, tmp_path / "backup.db")
    emulator.release()
    done = batch_run(emulator, db, runs_dir, "NAME=a")
    assert done.returncode == 0, done.stderr
    assert (runs_dir / "a" / "applied.json").exists()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"library.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "backup.db").replace(db)
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'a'") == [("submitted",)]

    again = batch_run(emulator, db, runs_dir)
    assert again.returncode == 0, again.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'a'") == [("applied",)]
    assert query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE state = 'claimed'") == [(0,)]
    assert len(emulator.record()["jobs_created"]) == 1  # collected from the job it paid for, not sent again
