"""One authority for a run (the database ledger): each reproduction of issue 8, with the real commands, the
real emulator and a real SQLite library. Every test checks what the service was asked (jobs created,
cancels) and what the database holds, not only the messages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    ROOT,
    TEST_KEY,
    Started,
    batch,
    batch_run,
    claimed,
    jobs,
    make,
    query,
    rows,
    run,
    stopped,
    wait_until,
)
from objbatch import runs as run_ledger
from objbatch.ledger import opened

pytestmark = pytest.mark.slow


def stored(db) -> dict[str, str]:
    return {p: r["ai_metadata_status"] for p, r in rows(db).items()}


# ---------------------------------------------------------------- 1. run names, and nothing outside RUNS removed

@pytest.mark.parametrize("name", ["../victim", "a`touch x`", ".hidden", "a b", "x" * 65, "a/b"])
def test_an_unsafe_run_name_is_refused_before_anything(emulator, library, runs_dir, tmp_path, name):
    _, db = library
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    made = batch(emulator, db, runs_dir, f"NAME={name}")
    direct = batch_run(emulator, db, runs_dir, f"NAME={name}")
    assert made.returncode != 0 and direct.returncode == 2, (made.stderr, direct.stderr)
    assert "is not allowed" in made.stderr + direct.stderr
    assert (victim / "keep.txt").read_text() == "mine"
    assert not (ROOT / "x").exists() and not (tmp_path / "x").exists() and not runs_dir.exists()
    assert jobs(emulator) == [] and "objbatch_claims" not in {t for (t,) in query(
        db, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_nothing_pending_removes_only_a_folder_it_made(emulator, library, runs_dir):
    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=all").returncode == 0
    mine = runs_dir / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    for name in ("notes", "fresh"):
        result = batch(emulator, db, runs_dir, f"NAME={name}")
        assert result.returncode == 0 and "No pending files: nothing to do." in result.stderr
    assert (mine / "todo.txt").read_text() == "keep me"
    assert sorted(p.name for p in runs_dir.iterdir()) == ["all", "notes"]


# ---------------------------------------------------------------- 2. make variables and a bare make

@pytest.mark.parametrize("typo", ["MAXX=5", "max=5", "Name=x"])
def test_an_unknown_make_variable_is_refused_before_any_paid_step(emulator, library, runs_dir, typo):
    _, db = library
    result = batch(emulator, db, runs_dir, typo)
    assert result.returncode == 2
    assert f"unknown variable '{typo.split('=')[0]}'" in result.stderr and "MAX_ATTEMPTS" in result.stderr
    direct = batch_run(emulator, db, runs_dir, typo)
    assert direct.returncode == 2 and f"unknown variable '{typo.split('=')[0]}'" in direct.stderr
    assert jobs(emulator) == [] and not runs_dir.exists()


def test_a_bare_make_prints_help_and_pays_nothing(emulator, library):
    result = make(env=emulator.env)
    assert result.returncode == 0
    assert "Targets:" in result.stdout and "batch " in result.stdout and "MAX=" in result.stdout
    assert jobs(emulator) == []


# ---------------------------------------------------------------- 3. cancel never pays, and works without a folder

def test_cancel_of_a_built_run_creates_no_job(emulator, library, runs_dir):
    _, db = library
    built = make(f"{runs_dir}/b/requests.jsonl", f"DB={db}", f"RUNS={runs_dir}", "NAME=b", env=emulator.env)
    assert built.returncode == 0, built.stderr
    result = make("cancel", f"DB={db}", f"RUNS={runs_dir}", "NAME=b", env=emulator.env)
    assert result.returncode == 0, result.stderr
    assert "cancelled before anything was submitted" in result.stderr
    assert jobs(emulator) == [] and claimed(db) == 0
    assert query(db, "SELECT state FROM objbatch_runs") == [("cancelled",)]
    again = batch(emulator, db, runs_dir, "NAME=b")
    assert again.returncode == 0 and "Run b is finished (cancelled" in again.stderr and jobs(emulator) == []


def test_cancel_of_a_run_whose_folder_is_gone_stops_its_job_and_keeps_what_it_finished(emulator, library, runs_dir):
    _, db = library
    emulator.pace(hold_at=0.5)  # the job stops half done until cancelled
    assert make(f"{runs_dir}/g/job.json", f"DB={db}", f"RUNS={runs_dir}", "NAME=g",
                env=emulator.env).returncode == 0
    job_id = jobs(emulator)[0]["id"]
    shutil.rmtree(runs_dir / "g")
    wait_until(lambda: emulator.record()["jobs"][0]["completed_requests"], "requests done")
    result = make("cancel", f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)  # the only unfinished run
    assert result.returncode == 0, result.stderr
    assert emulator.record()["cancels"] == [job_id] and len(jobs(emulator)) == 1
    after = stored(db)
    done = [p for p, s in after.items() if s in ("extracted", "needs_review")]
    back = [p for p, s in after.items() if s == "pending"]
    assert done and back and claimed(db) == 0
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'g'") == [("cancelled",)]
    emulator.pace(hold_at=None)
    assert batch(emulator, db, runs_dir, "NAME=next").returncode == 0
    resent = {c.split("-")[0] for c in jobs(emulator)[1]["custom_ids"]}
    first = {c.split("-")[0] for c in jobs(emulator)[0]["custom_ids"]}
    assert len(resent) == len(back) and resent <= first  # only what the cancelled job never did


# ---------------------------------------------------------------- 4. a run belongs to one database

def test_a_run_is_never_resumed_in_a_copy_of_its_database(emulator, library, runs_dir, tmp_path):
    _, db = library
    early_copy = tmp_path / "before.db"
    shutil.copy(db, early_copy)  # a backup made before objbatch touched the database
    emulator.pace(queue_seconds=600)  # held until released
    held = batch(emulator, db, runs_dir, "NAME=r1", "TIMEOUT=0.2")
    assert held.returncode != 0 and claimed(db) > 0
    late_copy = tmp_path / "after.db"
    shutil.copy(db, late_copy)  # a backup made while run r1 is in flight
    emulator.release()
    for copy in (early_copy, late_copy):
        before = stored(copy)
        refused = batch_run(emulator, copy, runs_dir, "NAME=r1")
        assert refused.returncode == 1, refused.stderr
        assert f"run r1 belongs to database {db}, not {copy}" in refused.stderr
        assert stored(copy) == before
    assert f"database {late_copy} is a copy of {db}: it gets an identity of its own" in refused.stderr
    for copy in (early_copy, late_copy):
        cancel = make("cancel", f"DB={copy}", f"RUNS={runs_dir}", "NAME=r1", env=emulator.env)
        assert cancel.returncode != 0
        assert "has no run r1" in cancel.stderr or f"run r1 belongs to database {db}" in cancel.stderr
    assert emulator.record()["cancels"] == [] and len(jobs(emulator)) == 1
    assert query(late_copy, "SELECT COUNT(*) FROM file_metadata_ai") == [(0,)]
    done = batch(emulator, db, runs_dir)  # the original resumes and finishes its run
    assert done.returncode == 0 and "Resuming unfinished run r1" in done.stderr, done.stderr
    assert claimed(db) == 0 and query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'r1'") == [("applied",)]


# ---------------------------------------------------------------- 5. exit codes survive make

def test_still_running_exits_75_from_batch_run_and_says_still_running(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    direct = batch_run(emulator, db, runs_dir, "NAME=w", "TIMEOUT=0.2")
    assert direct.returncode == 75, direct.stderr
    assert "batch-wait: still running: job" in direct.stderr and "error" not in direct.stderr
    made = batch(emulator, db, runs_dir, "NAME=w", "TIMEOUT=0.2")
    assert made.returncode == 2 and "batch-wait: still running: job" in made.stderr
    make_lines = [line for line in made.stderr.splitlines() if "***" in line]
    assert make_lines == [make_lines[0]] and "[Makefile" in make_lines[0] and "batch] Error 75" in make_lines[0]
    emulator.release()
    assert batch_run(emulator, db, runs_dir).returncode == 0
    assert len(jobs(emulator)) == 1


# ---------------------------------------------------------------- 6. a paid result is never thrown away

def test_a_paid_result_is_stored_when_the_library_disk_is_away_at_apply(emulator, library, runs_dir, tmp_path):
    root, db = library
    assert make(f"{runs_dir}/u/results.jsonl", f"DB={db}", f"RUNS={runs_dir}", "NAME=u",
                env=emulator.env).returncode == 0
    away = tmp_path / "unmounted"
    root.rename(away)  # the library disk is unmounted
    try:
        result = batch(emulator, db, runs_dir, "NAME=u")
    finally:
        away.rename(root)
    assert result.returncode == 0, result.stderr
    assert "stored though the file cannot be read now" in result.stderr
    sent = {e["file_path"] for e in map(json.loads, (runs_dir / "u" / "manifest.jsonl").read_text().splitlines())
            if e.get("custom_id")}
    assert sent and all(stored(db)[p] in ("extracted", "needs_review") for p in sent)
    assert len(jobs(emulator)) == 1


def test_a_file_skipped_as_missing_is_retried_once_it_is_back(emulator, library, runs_dir, tmp_path):
    root, db = library
    target = next(p for p in sorted(root.rglob("*.txt")))
    hidden = tmp_path / "hidden.txt"
    target.rename(hidden)
    assert batch(emulator, db, runs_dir, "NAME=m1").returncode == 0
    assert stored(db)[str(target)] == "skipped"
    assert batch(emulator, db, runs_dir, "NAME=m2").returncode == 0  # still missing: not sent
    assert len(jobs(emulator)) == 1
    hidden.rename(target)
    assert batch(emulator, db, runs_dir, "NAME=m3").returncode == 0
    assert stored(db)[str(target)] in ("extracted", "needs_review")
    assert len(jobs(emulator)) == 2 and len(jobs(emulator)[1]["custom_ids"]) == 1


# ---------------------------------------------------------------- 7. the database is checked before paying

def test_a_database_missing_a_column_is_refused_before_anything_is_claimed(emulator, library, runs_dir):
    _, db = library
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE files DROP COLUMN ai_confidence_score")
    conn.commit()
    conn.close()
    result = batch_run(emulator, db, runs_dir)
    assert result.returncode == 1
    assert "table files has no column ai_confidence_score" in result.stderr
    assert "ALTER TABLE files ADD COLUMN ai_confidence_score REAL" in result.stderr
    assert jobs(emulator) == [] and not runs_dir.exists()
    assert "objbatch_claims" not in {t for (t,) in query(db, "SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_history_table_that_cannot_take_objbatch_rows_is_refused(emulator, library, runs_dir):
    _, db = library
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE file_metadata_ai (metadata_id INTEGER PRIMARY KEY, file_path TEXT, "
                 "metadata_json TEXT NOT NULL, model TEXT NOT NULL, model_version TEXT NOT NULL, prompt_version TEXT, "
                 "extraction_config_hash TEXT, is_current INTEGER, created_at TEXT)")
    conn.commit()
    conn.close()
    result = batch_run(emulator, db, runs_dir)
    assert result.returncode == 1 and "table file_metadata_ai requires model_version" in result.stderr
    assert jobs(emulator) == []


def test_the_library_own_history_tables_are_accepted(emulator, library, runs_dir):
    """objlib's own definitions (model and prompt_version NOT NULL, an extra model_version column)."""
    _, db = library
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE file_metadata_ai (metadata_id INTEGER PRIMARY KEY AUTOINCREMENT, file_path TEXT NOT NULL,
            metadata_json TEXT NOT NULL, model TEXT NOT NULL, model_version TEXT, prompt_version TEXT NOT NULL,
            extraction_config_hash TEXT, is_current BOOLEAN DEFAULT 1,
            created_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
            FOREIGN KEY (file_path) REFERENCES files(file_path));
        CREATE TABLE file_primary_topics (file_path TEXT NOT NULL, topic_tag TEXT NOT NULL,
            PRIMARY KEY (file_path, topic_tag), FOREIGN KEY (file_path) REFERENCES files(file_path));
    """)
    conn.close()
    assert batch(emulator, db, runs_dir, "NAME=ok").returncode == 0
    assert query(db, "SELECT COUNT(*) FROM file_metadata_ai WHERE model IS NOT NULL")[0][0] > 0


# ---------------------------------------------------------------- 8. a key with a newline

def test_a_key_with_a_line_break_is_refused_at_once_without_echoing_it(emulator, library, runs_dir):
    _, db = library
    secret = "sk-" + "Q" * 30
    started = time.monotonic()
    result = batch_run(emulator, db, runs_dir, env={"MISTRAL_API_KEY": f"{secret}\nuser: me"})
    assert result.returncode == 1 and time.monotonic() - started < 20
    assert "MISTRAL_API_KEY contains a line break" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert jobs(emulator) == [] and not runs_dir.exists()
    submit = run("batch-submit", "--run-name", "x", input='{"custom_id":"a","body":{"messages":[{"role":"user",'
                 '"content":"x"}]}}\n', env={**emulator.env, "MISTRAL_API_KEY": f"{secret}\n"})
    assert submit.returncode == 1 and secret not in submit.stderr and "line break" in submit.stderr


# ---------------------------------------------------------------- 9. claims are found from the ledger

def test_killed_after_claiming_before_the_selection_file_then_resumed(emulator, library, runs_dir):
    _, db = library
    killed = batch(emulator, db, runs_dir, "NAME=k", env={"OBJBATCH_KILL_AT": "after-claim"})
    assert killed.returncode != 0 and claimed(db) > 0 and not (runs_dir / "k" / "select.jsonl").exists()
    resumed = batch(emulator, db, runs_dir)
    assert resumed.returncode == 0 and "Resuming unfinished run k" in resumed.stderr
    assert claimed(db) == 0 and len(jobs(emulator)) == 1


def test_a_run_folder_deleted_while_its_job_runs_is_rebuilt_from_the_ledger(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    assert batch(emulator, db, runs_dir, "NAME=d", "TIMEOUT=0.2").returncode != 0
    shutil.rmtree(runs_dir / "d")
    emulator.release()
    resumed = batch(emulator, db, runs_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "its manifest" in resumed.stderr and "comes from the database ledger" in resumed.stderr
    assert len(jobs(emulator)) == 1 and claimed(db) == 0
    assert {s for s in stored(db).values()} <= {"extracted", "needs_review", "skipped"}
    assert query(db, "SELECT COUNT(*) FROM file_metadata_ai")[0][0] == len(jobs(emulator)[0]["custom_ids"])


# ---------------------------------------------------------------- 10. bad rows never stop a run

def test_an_undecodable_path_and_an_empty_hash_do_not_stop_the_run(emulator, library, runs_dir):
    root, db = library
    conn = sqlite3.connect(db)
    empty = sorted(p for p in rows(db) if p.endswith(".txt") and os.path.exists(p))[0]
    conn.execute("UPDATE files SET content_hash = '' WHERE file_path = ?", (empty,))
    status = "SELECT ai_metadata_status FROM files WHERE file_path = ?"
    conn.execute("INSERT INTO files (file_path, content_hash, filename, file_size) VALUES "
                 "(CAST(X'2f6c69622f62616402ff2e747874' AS TEXT), 'h', 'bad.txt', 10)")
    conn.commit()
    conn.close()
    first = batch(emulator, db, runs_dir, "NAME=b1")
    assert first.returncode == 0, first.stderr
    assert "1 file set aside as skipped: file_path is not valid UTF-8" in first.stderr
    assert query(db, "SELECT ai_metadata_status FROM files WHERE filename = 'bad.txt'") == [("skipped",)]
    assert query(db, status, empty)[0][0] in ("extracted", "needs_review")
    assert batch(emulator, db, runs_dir, "NAME=b2").returncode == 0
    assert len(jobs(emulator)) == 1  # the empty-hash file is not sent again


# ---------------------------------------------------------------- 11. a finished run is finished; locks

def test_a_finished_run_name_selects_nothing_again_even_without_its_folder(emulator, library, runs_dir):
    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=f").returncode == 0
    shutil.rmtree(runs_dir / "f")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET ai_metadata_status = 'pending'")  # more work waiting
    conn.commit()
    conn.close()
    again = batch(emulator, db, runs_dir, "NAME=f")
    assert again.returncode == 0 and "Run f is finished (applied" in again.stderr
    assert len(jobs(emulator)) == 1 and not (runs_dir / "f").exists()
    claim = run("select-pending", "--db", db, "--claim", "f")
    assert claim.returncode == 1 and "run f is finished" in claim.stderr


def test_cron_and_cancel_take_the_run_lease(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    assert batch(emulator, db, runs_dir, "NAME=l", "TIMEOUT=0.2").returncode != 0
    emulator.release()
    with opened(db) as conn, run_ledger.lease(conn, "l"):
        stranger = {k: v for k, v in emulator.env.items() if k != run_ledger.LEASE_ENV}  # not handed the lease
        cron = run("batch-cron", "--db", db, "--runs", runs_dir, env=stranger)
        assert cron.returncode == 75  # left to the process working on it
        assert claimed(db) > 0 and len(jobs(emulator)) == 1
    with opened(db) as conn, run_ledger.lease(conn, "l"):
        stranger = {k: v for k, v in emulator.env.items() if k != run_ledger.LEASE_ENV}
        cancel = Started(["make", "--no-print-directory", "-C", ROOT, "cancel", f"DB={db}", f"RUNS={runs_dir}",
                          "NAME=l"], env=stranger)
        cancel.wait_for("run l is being worked on by another process")  # it waits: the lease is held here
        assert cancel.proc.poll() is None
    returncode, _, err = cancel.finish()  # the lease given back, it goes on
    assert returncode == 0, err
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'l'") == [("applied",)]


def test_two_submitters_with_different_homes_pay_once(emulator, library, runs_dir, tmp_path):
    """The run's lease is in the database: a second user (another HOME, another state folder) waits."""
    _, db = library
    emulator.pace(queue_seconds=600)
    assert make(f"{runs_dir}/q/requests.jsonl", f"DB={db}", f"RUNS={runs_dir}", "NAME=q",
                env=emulator.env).returncode == 0
    procs = [subprocess.Popen([str(Path(sys.executable).parent / "batch-run"), f"DB={db}", f"RUNS={runs_dir}",
                               "NAME=q", "TIMEOUT=1"], env={**emulator.env, "XDG_STATE_HOME": str(tmp_path / home)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for home in ("a", "b")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [75, 75], outputs
    assert len(jobs(emulator)) == 1
    assert any("is being worked on by another process" in err for _, err in outputs)


def test_a_restored_backup_keeps_its_run(emulator, library, runs_dir, tmp_path):
    _, db = library
    emulator.pace(queue_seconds=600)
    assert batch(emulator, db, runs_dir, "NAME=r1", "TIMEOUT=0.2").returncode != 0
    backup = Path(f"{db}.bak")
    shutil.copy(db, backup)
    assert run("stats", "--db", backup).returncode == 0  # looking at the backup decides nothing
    db.unlink()
    backup.rename(db)  # the backup is restored over the database
    emulator.release()
    resumed = batch(emulator, db, runs_dir)
    assert resumed.returncode == 0 and "Resuming unfinished run r1" in resumed.stderr, resumed.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'r1'") == [("applied",)]
    assert claimed(db) == 0 and len(jobs(emulator)) == 1


def test_apply_never_finishes_a_run_with_files_still_out(emulator, library, runs_dir):
    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=a", "MAX=6").returncode == 0
    emulator.pace(queue_seconds=600)
    assert batch(emulator, db, runs_dir, "NAME=b", "TIMEOUT=0.2").returncode != 0
    for decisions in (runs_dir / "a" / "decisions.jsonl", "/dev/null"):
        wrong = run("apply-sql", "--db", db, "--run", "b", decisions)
        assert wrong.returncode == 1 and "run b is not finished: 26 of its files have no result yet" in wrong.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'b'") == [("submitted",)]
    emulator.release()
    assert batch(emulator, db, runs_dir, "NAME=b").returncode == 0
    sent = [c for job in jobs(emulator) for c in job["custom_ids"]]
    assert len(sent) == len(set(sent)) and claimed(db) == 0


def test_a_submission_that_never_reached_the_service_is_redone_after_the_folder_is_deleted(emulator, library,
                                                                                          runs_dir):
    _, db = library
    emulator.faults(http_storm=1000, http_storm_path="POST /v1/batch/jobs", http_status=503)
    stuck = batch(emulator, db, runs_dir, "NAME=st", env={"OBJBATCH_RETRY_SECONDS": "1"})
    assert stuck.returncode != 0 and "job creation failed" in stuck.stderr and jobs(emulator) == []
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'st'") == [("submitting",)]
    emulator.faults(http_storm=0)
    shutil.rmtree(runs_dir / "st")
    resumed = batch(emulator, db, runs_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert len(jobs(emulator)) == 1 and claimed(db) == 0
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'st'") == [("applied",)]


def test_retry_exhausted_0_means_off_and_other_values_are_refused(emulator, library, runs_dir):
    _, db = library
    emulator.faults(answers={"prose": 1.0})
    for round_ in range(3):
        assert batch(emulator, db, runs_dir, f"NAME=x{round_}", "MAX=4").returncode == 0
    emulator.faults(answers={})
    sent = len(jobs(emulator))
    off = batch(emulator, db, runs_dir, "NAME=off", "MAX=4", "RETRY_EXHAUSTED=0")
    assert off.returncode == 0 and len(jobs(emulator)) == sent + 1
    assert not set(jobs(emulator)[-1]["custom_ids"]) & set(jobs(emulator)[0]["custom_ids"])
    odd = batch_run(emulator, db, runs_dir, "RETRY_EXHAUSTED=yes")
    assert odd.returncode == 2 and "RETRY_EXHAUSTED is 1 (on) or empty or 0 (off), not 'yes'" in odd.stderr


def test_a_copy_never_adopts_or_cancels_the_original_jobs(emulator, library, runs_dir, tmp_path):
    _, db = library
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)  # before the original's run started: the same files, the same custom_ids
    emulator.pace(queue_seconds=600)
    assert batch(emulator, db, runs_dir, "NAME=r1", "TIMEOUT=0.2").returncode != 0
    other = batch(emulator, copy, tmp_path / "runs-copy", "NAME=r1", "TIMEOUT=0.2")
    assert "found in the service's job list" not in other.stderr and len(jobs(emulator)) == 2
    cancel = make("cancel", f"DB={copy}", f"RUNS={tmp_path / 'runs-copy'}", "NAME=r1", env=emulator.env)
    assert cancel.returncode == 0 and emulator.record()["cancels"] == [jobs(emulator)[1]["id"]]
    emulator.release()
    done = batch(emulator, db, runs_dir)
    assert done.returncode == 0 and "not processed (back to the queue" not in done.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'r1'") == [("applied",)]


def test_a_person_and_cron_starting_at_once(emulator, library, runs_dir):
    _, db = library
    """The overlap is forced: the person's batch-run stops itself right after claiming its files (before its
    selection file exists), cron runs to its end meanwhile, then the person goes on."""
    emulator.pace(queue_seconds=600)
    person = Started([Path(sys.executable).parent / "batch-run", f"DB={db}", f"RUNS={runs_dir}", "NAME=h1",
                      "TIMEOUT=0.5"], env={**emulator.env, "OBJBATCH_STOP_AT": "after-claim"})
    try:
        wait_until(lambda: stopped(person.proc), "the person's batch-run stopping after its claim")
        assert claimed(db) > 0 and jobs(emulator) == []
        cron = run("batch-cron", "--db", db, "--runs", runs_dir, env=emulator.env)
    finally:
        person.proc.send_signal(signal.SIGCONT)
    returncode, _, err = person.finish()
    assert cron.returncode in (0, 75), cron.stderr
    assert "needs attention" not in cron.stderr
    assert returncode == 75, err  # the person's run was submitted and is still queued
    sent = [c for job in jobs(emulator) for c in job["custom_ids"]]
    assert len(sent) == len(set(sent)) and len(jobs(emulator)) >= 1


def test_relative_paths_are_the_callers(emulator, library, runs_dir, tmp_path):
    _, db = library
    result = run("batch-run", f"DB={db.name}", "RUNS=myruns", "NAME=rel", cwd=db.parent, env=emulator.env)
    assert result.returncode == 0, result.stderr
    assert (db.parent / "myruns" / "rel" / "applied.json").exists() and (db.parent / "myruns" / "rel" / "run.json").exists()
    assert not (ROOT / "myruns").exists()


@pytest.mark.parametrize("value, message", [("", "no database given"), ("{folder}", "is a folder")])
def test_an_empty_or_folder_db_is_one_clear_line(emulator, library, runs_dir, value, message):
    _, db = library
    result = batch_run(emulator, value.format(folder=db.parent), runs_dir)
    assert result.returncode == 1 and message in result.stderr and "OperationalError" not in result.stderr


def test_ctrl_c_is_one_line(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "batch-run"), f"DB={db}", f"RUNS={runs_dir}",
                             "NAME=c", "POLL=1"], env=emulator.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_until(lambda: jobs(emulator), "the job created")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted; rerun the same command" in err
    emulator.release()
    assert batch(emulator, db, runs_dir).returncode == 0 and len(jobs(emulator)) == 1


def test_a_dollar_in_a_make_value_is_refused(emulator, library, runs_dir):
    _, db = library
    result = batch(emulator, db, runs_dir, "NAME=$(id)")
    assert result.returncode == 2 and "NAME contains '$', which make would expand" in result.stderr
    assert jobs(emulator) == [] and not runs_dir.exists()


# ---------------------------------------------------------------- 12. settings, folders, a dead URL

def test_a_bad_retry_setting_is_one_line(emulator, library, runs_dir):
    _, db = library
    result = batch_run(emulator, db, runs_dir, env={"OBJBATCH_RETRY_SECONDS": "abc"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("batch-run: error: OBJBATCH_RETRY_SECONDS must be a number of seconds (got "
                                     "'abc'); unset it for the default of 900")


def test_a_failed_batch_leaves_no_empty_run_folder(emulator, library, runs_dir):
    _, db = library
    bad_max = batch(emulator, db, runs_dir, "MAX=lots")
    assert bad_max.returncode != 0 and "MAX must be a whole number of at least 0 (got 'lots')" in bad_max.stderr
    bad_key = batch(emulator, db, runs_dir, env={"MISTRAL_API_KEY": "wrong-key"})
    assert bad_key.returncode != 0 and "refused the API key" in bad_key.stderr
    assert not runs_dir.exists() or list(runs_dir.iterdir()) == []
    assert jobs(emulator) == [] and claimed(db) == 0


def test_an_unreachable_service_url_fails_within_seconds_naming_it(library, runs_dir):
    _, db = library
    env = {**os.environ, "MISTRAL_SERVER_URL": "http://127.0.0.1:9", "MISTRAL_API_KEY": TEST_KEY,
           "OBJBATCH_RETRY_SECONDS": "900"}
    started = time.monotonic()
    result = run("batch-run", f"DB={db}", f"RUNS={runs_dir}", env=env)
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert "cannot reach the Mistral service at http://127.0.0.1:9" in result.stderr
    assert claimed(db) == 0


def test_a_run_is_resumed_with_its_own_model_whatever_model_is_given(emulator, library, runs_dir):
    _, db = library
    killed = batch(emulator, db, runs_dir, "NAME=m", "MODEL=mistral-large-latest", env={"OBJBATCH_KILL_AT": "after-claim"})
    assert killed.returncode != 0
    resumed = batch(emulator, db, runs_dir, "NAME=m")
    assert resumed.returncode == 0, resumed.stderr
    assert "Run m uses model mistral-large-latest; MODEL=mistral-small-latest is for new runs." in resumed.stderr
    assert [job["model"] for job in jobs(emulator)] == ["mistral-large-latest"]


@pytest.mark.parametrize("setting", ["BUDGET=nan", "BUDGET=inf", "TIMEOUT=nan", "POLL=inf"])
def test_a_number_that_is_not_a_number_is_refused(emulator, library, runs_dir, setting):
    _, db = library
    result = batch_run(emulator, db, runs_dir, setting)
    name, value = setting.split("=")
    assert result.returncode == 2 and f"{name} must be a number of at least 0 (got '{value}')" in result.stderr
    assert jobs(emulator) == [] and not runs_dir.exists()


def test_a_run_is_followed_only_at_the_service_it_was_submitted_to(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    assert batch_run(emulator, db, runs_dir, "NAME=s", "TIMEOUT=0.2").returncode == 75
    elsewhere = {"MISTRAL_SERVER_URL": "http://127.0.0.1:9"}
    line = f"run s was submitted to {emulator.url}, not http://127.0.0.1:9: set MISTRAL_SERVER_URL={emulator.url}"
    for result in (batch_run(emulator, db, runs_dir, "NAME=s", env=elsewhere),
                   run("batch-wait", "--db", db, runs_dir / "s" / "job.json", env={**emulator.env, **elsewhere}),
                   run("batch-cancel", "--db", db, "--run", "s", env={**emulator.env, **elsewhere})):
        assert result.returncode == 1 and line in result.stderr, result.stderr
    emulator.release()
    assert batch_run(emulator, db, runs_dir, "NAME=s").returncode == 0
    assert len(jobs(emulator)) == 1
