"""Violations the seeded simulation (tests/simulate.py) found that were none of issue 15's fourteen, each as a
plain test with the real commands, the real emulator and a real SQLite library."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading

import pytest

from conftest import BIN, query, run


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


def test_ctrl_c_while_a_stage_opens_its_input_is_an_interruption_not_an_unexpected_error(tmp_path):
    """make simulate SEED=847: a SIGINT that lands while click sets a stage up (here: opening its input, a
    FIFO nobody writes) became click's Abort, which batch-run printed as "error: Abort:  (rerun with
    --verbose for details)", exit 1. It is an interruption: exit 130, "rerun the same command"."""
    from objbatch import pipeline

    fifo = tmp_path / "results.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "manifest.jsonl").write_text("")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(pipeline.check(["validate", "--manifest", str(tmp_path / "manifest.jsonl"), str(fifo)]))
    finally:
        timer.cancel()


def test_a_ctrl_c_wrapped_in_another_exception_is_an_interruption(capsys):
    """make simulate SEED=896: a SIGINT that landed while batch-submit first imported the SDK came out as
    "RuntimeError: Error calling __set_name__ on 'PydanticDescriptorProxy' ... (rerun with --verbose)",
    exit 1: Python 3.11 wraps an exception raised while a class is being made. Any Ctrl-C is an
    interruption: exit 130, one line."""
    from objbatch.common import cli

    @cli("wrapped")
    def wrapped() -> None:
        raise RuntimeError("Error calling __set_name__ on 'PydanticDescriptorProxy'") from KeyboardInterrupt()

    with pytest.raises(SystemExit) as done:
        wrapped.main(args=[], prog_name="wrapped")
    assert done.value.code == 130
    assert capsys.readouterr().err == "wrapped: error: interrupted; rerun the same command to resume\n"


def test_a_ctrl_c_a_library_turned_into_its_own_error_is_an_interruption(capsys):
    """make simulate SEED=211: a SIGINT that landed while pydantic-core built a schema came out as
    "SchemaError: ... KeyboardInterrupt:" with no exception chained, exit 1. A Ctrl-C seen by the command's
    handler is an interruption whatever the error it became; a later error of the same process is not."""
    from objbatch.common import cli

    @cli("swallowed")
    def swallowed() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass
        raise ValueError("Error building validator: KeyboardInterrupt:")

    @cli("plain")
    def plain() -> None:
        raise ValueError("a plain bug")

    with pytest.raises(SystemExit) as done:
        swallowed.main(args=[], prog_name="swallowed")
    assert done.value.code == 130
    assert capsys.readouterr().err == "swallowed: error: interrupted; rerun the same command to resume\n"
    with pytest.raises(SystemExit) as done:
        plain.main(args=[], prog_name="plain")
    assert done.value.code == 1 and "ValueError: a plain bug" in capsys.readouterr().err


def test_requeue_given_a_name_that_is_not_utf8_refuses_it_in_one_line(library, tmp_path):
    """make simulate SEED=18: a shell passes a file name's bytes as they are; requeue given one that is not
    UTF-8 (a file of the library whose row holds such a path) failed with "UnicodeEncodeError ... (rerun
    with --verbose)". It is refused by name, in one line, and the other files are requeued."""
    _, db = library
    bad = str(tmp_path / "library" / "Bad ").encode() + b"\xff.txt"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO files (file_path, content_hash, filename, file_size, ai_metadata_status) "
                     "VALUES (CAST(? AS TEXT), 'h', 'Bad.txt', 1, 'skipped')", (bad,))
        good = conn.execute("SELECT file_path FROM files WHERE file_path LIKE '%.txt' AND file_path NOT LIKE "
                            "'%Bad%' LIMIT 1").fetchone()[0]
        conn.execute("UPDATE files SET ai_metadata_status = 'failed_validation' WHERE file_path = ?", (good,))
    conn.close()
    proc = subprocess.run([str(BIN / "requeue"), "--db", str(db), bad, good], capture_output=True,
                          env=dict(os.environ))
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, err
    assert "rerun with --verbose" not in err and "Error" not in err
    assert "not valid UTF-8" in err and len(err.strip().splitlines()) == 1
    assert query(db, "SELECT ai_metadata_status FROM files WHERE file_path = ?", good) == [("pending",)]


def test_a_name_that_is_not_utf8_is_shown_as_its_bytes_on_any_stream():
    """make simulate SEED=507: requeue's refusal line named a path from argv holding \\udcff (a byte that is
    not UTF-8, as surrogateescape gives it); a stream that writes strict UTF-8 (a pipe under some locales,
    the simulator's capture) failed with UnicodeEncodeError. Every text output shows such a byte as \\xff."""
    from objbatch.common import printable

    shown = printable("Bad 3 \udcff.txt, a lone \ud800")
    assert shown == "Bad 3 \\xff.txt, a lone \\ud800"
    shown.encode("utf-8")  # strict: writable anywhere
