"""Trust no input's kind (style.md convention 14): issue 15 items 2, 5, 6, 8, 9, 10, 12 and 14, and issue
17 items 5 and 10. Every value read from outside (a database row, a result line, a file) may have the wrong
type, bytes that are not UTF-8, no end or a huge size: it affects its own record, with a reason the user
reads in review, never the run. Real commands, a real SQLite library and the real emulator."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from conftest import jsonl, make, query, rows, run


def batch(emu, db, runs, *extra, timeout=240):
    return make("batch", f"DB={db}", f"RUNS={runs}", "POLL=0.1", *extra, env=emu.env, timeout=timeout)


def status(db, path) -> tuple:
    return query(db, "SELECT ai_metadata_status, error_message FROM files WHERE file_path = ?", path)[0]


def texts(db) -> list[str]:
    return sorted(p for p in rows(db) if p.endswith(".txt") and os.path.isfile(p))


def add_row(db, path_sql: str, filename: str = "x.txt", *params) -> None:
    """A row the library's scanner might have written (path_sql is SQL for the path: bytes can be any)."""
    conn = sqlite3.connect(db)
    conn.execute(f"INSERT INTO files (file_path, content_hash, filename, file_size) VALUES ({path_sql}, 'h', ?, 10)",
                 (*params, filename))
    conn.commit()
    conn.close()


# ---------------------------------------------------------------- issue 15 item 5, issue 17 item 5: bad rows

def test_a_fifo_a_device_a_nul_path_and_a_bad_file_name_each_skip_their_own_file(library):
    """select-pending, then build-jsonl, on rows that stopped every run: a file name that is not UTF-8
    (the claim query decoded strictly), a NUL byte in a path (open() raised), a FIFO named .txt (build-jsonl
    hung holding the lease) and a .txt symlink to /dev/zero (read 2.6 GB). Each is one file's reason."""
    root, db = library
    fifo, zero = root / "pipe.txt", root / "zero.txt"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    named = texts(db)[0]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET filename = CAST(X'4261642dff2e747874' AS TEXT) WHERE file_path = ?", (named,))
    conn.commit()
    conn.close()
    add_row(db, "?", "pipe.txt", str(fifo))
    add_row(db, "?", "zero.txt", str(zero))
    add_row(db, "?", "nul.txt", f"{root}/nul\x00.txt")
    select = run("select-pending", "--db", db, "--claim", "r1", timeout=60)
    assert select.returncode == 0, select.stderr
    picked = {r["file_path"]: r for r in jsonl(select.stdout)}
    assert picked[named]["filename"] == "Bad-\ufffd.txt" and str(fifo) in picked
    built = run("build-jsonl", "--manifest", root / "m.jsonl", input=select.stdout, timeout=60)
    assert built.returncode == 0, built.stderr
    manifest = {e["file_path"]: e for e in jsonl((root / "m.jsonl").read_text())}
    assert manifest[str(fifo)]["skip"] == "not a regular file (a named pipe); only regular files are sent"
    assert manifest[str(zero)]["skip_kind"] in ("not_regular", "outside_root")  # 17.1 may stop it before
    assert manifest[f"{root}/nul\x00.txt"]["skip_kind"] == "bad_path"
    assert manifest[named]["custom_id"] in {r["custom_id"] for r in jsonl(built.stdout)}


@pytest.mark.slow
def test_make_batch_sets_bad_rows_aside_and_the_next_run_starts(emulator, library, runs_dir):
    """The issue's reproduction end to end: the run ends, the bad rows are skipped with a reason each, and the
    next make batch (and cron) starts a new run instead of failing on the same rows again."""
    root, db = library
    fifo = root / "pipe.txt"
    os.mkfifo(fifo)
    add_row(db, "?", "pipe.txt", str(fifo))
    add_row(db, "?", "nul.txt", f"{root}/nul\x00.txt")
    named = texts(db)[0]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET filename = CAST(X'4261642dff2e747874' AS TEXT) WHERE file_path = ?", (named,))
    conn.commit()
    conn.close()
    first = batch(emulator, db, runs_dir, "NAME=b1")
    assert first.returncode == 0, first.stderr
    assert status(db, str(fifo)) == ("skipped", "not a regular file (a named pipe); only regular files are sent")
    assert status(db, f"{root}/nul\x00.txt")[0] == "skipped"
    assert status(db, named)[0] in ("extracted", "needs_review")
    assert query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE state = 'claimed'") == [(0,)]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET ai_metadata_status = 'pending' WHERE file_path = ?", (named,))
    conn.commit()
    conn.close()
    second = batch(emulator, db, runs_dir, "NAME=b2")
    assert second.returncode == 0, second.stderr
    assert [j["metadata"]["objbatch_run_name"] for j in emulator.record()["jobs_created"]] == ["b1", "b2"]


def test_apply_sees_a_file_turned_into_a_pipe_as_changed_without_waiting(library, tmp_path):
    """apply-sql compares the file with what was sent: a FIFO in its place is a change, not a hang."""
    root, db = library
    path = texts(db)[0]
    os.unlink(path)
    os.mkfifo(path)
    decision = {"custom_id": "c1", "job_id": "j1", "file_path": path, "db_hash": rows(db)[path]["content_hash"],
                "sent_hash": "0" * 64, "sent_stat": {"size": 1, "mtime_ns": 1}, "decision": "failed_validation",
                "reasons": ["x"], "metadata": None, "confidence": None, "repairs": [], "usage": {}}
    applied = run("apply-sql", "--db", db, input=json.dumps(decision) + "\n", timeout=60)
    assert applied.returncode == 0, applied.stderr
    assert status(db, path)[0] == "pending" and "changed" in status(db, path)[1]


# ---------------------------------------------------------------- issue 15 item 10: readers on set-aside rows

def test_review_and_requeue_work_on_a_row_objbatch_set_aside(library):
    """After a non-UTF-8 file_path was set aside, review --skipped listed nothing but 'Could not decode' and
    requeue --status skipped requeued nothing. Now review shows it (U+FFFD), requeue takes the other skipped
    files and refuses that one by name."""
    _, db = library
    other = texts(db)[0]
    add_row(db, "CAST(X'2f6c69622f62616402ff2e747874' AS TEXT)", "bad.txt")
    assert run("select-pending", "--db", db, "--claim", "s1").returncode == 0
    assert query(db, "SELECT ai_metadata_status FROM files WHERE filename = 'bad.txt'") == [("skipped",)]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET ai_metadata_status = 'skipped', error_message = 'file is empty' "
                 "WHERE file_path = ?", (other,))
    conn.execute("UPDATE objbatch_claims SET state = 'done'")  # run s1 let go of its files
    conn.commit()
    conn.close()
    review = run("review", "--db", db, "--skipped", "--nl")
    assert review.returncode == 0, review.stderr
    listed = {r["file_path"]: r for r in jsonl(review.stdout)}
    assert "; ".join(listed["/lib/bad\x02\ufffd.txt"]["reasons"]) == ("file_path is not valid UTF-8 in the "
                                                                    "database; fix the row (rescan the file with objlib)")
    assert run("review", "--db", db, "--skipped").returncode == 0
    assert run("show", "--db", db, other).returncode == 0
    requeue = run("requeue", "--db", db, "--status", "skipped")
    assert requeue.returncode == 1
    assert "requeue: error: 1 refused: /lib/bad\\x02\ufffd.txt (file_path is not valid UTF-8" in requeue.stderr  # control characters escaped (issue 17)
    assert status(db, other)[0] == "pending"
