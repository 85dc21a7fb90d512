"""Trust no input's kind (style.md convention 14): issue 15 items 2, 5, 6, 8, 9, 10, 12 and 14, and issue
17 items 5 and 10. Every value read from outside (a database row, a result line, a file) may have the wrong
type, bytes that are not UTF-8, no end or a huge size: it affects its own record, with a reason the user
reads in review, never the run. Real commands, a real SQLite library and the real emulator."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from conftest import ROOT, jsonl, make, query, rows, run


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
    assert "back in the queue, 1 refused (file_path is not valid UTF-8" in requeue.stderr
    assert ": bad\\x02\ufffd.txt)" in requeue.stderr  # control characters escaped (issue 17)
    assert status(db, other)[0] == "pending"


# ---------------------------------------------------------------- issue 15 item 6, issue 17 item 10: odd result lines

def killed_after_download(emulator, db, runs_dir, name: str) -> tuple[list[dict], object]:
    """A run killed once its results were downloaded and before any was applied: (the kept raw lines, the
    kept file). Its results and decisions are made again from the kept file by the next make batch."""
    killed = make("batch", f"DB={db}", f"RUNS={runs_dir}", "POLL=0.1", f"NAME={name}",
                  env={**emulator.env, "OBJBATCH_KILL_AT": "apply-midway:1"})
    assert killed.returncode != 0
    [kept] = (runs_dir / name / "raw").glob("*.jsonl")
    for stage in ("results.jsonl", "decisions.jsonl"):
        (runs_dir / name / stage).unlink()
    return jsonl(kept.read_text()), kept


def custom_files(db) -> dict[str, str]:
    return dict(query(db, "SELECT custom_id, file_path FROM objbatch_claims WHERE custom_id IS NOT NULL"))


@pytest.mark.slow
def test_oddly_shaped_result_lines_fail_their_own_files_and_the_run_ends(emulator, library, runs_dir):
    """The kept download is reused by every rerun, so one odd line stopped its run for good: a string where
    the message object belongs (classify), usage [1,2] or prompt_tokens 'n/a' (apply's token sums), an
    answer of 3,000 '[' (RecursionError in the JSON search). Each now affects its own file only."""
    _, db = library
    lines, kept = killed_after_download(emulator, db, runs_dir, "o")
    odd = {0: lambda b: b["choices"][0].update(message="oops"), 1: lambda b: b.update(usage=[1, 2]),
           2: lambda b: b["usage"].update(prompt_tokens="n/a"),
           3: lambda b: b["choices"][0]["message"].update(content="[" * 3000),
           4: lambda b: b["choices"][0].update(finish_reason=["stop"]) or b.update(model={"x": 1}),
           5: lambda b: b.update(choices={"a": 1})}
    for i, change in odd.items():
        change(lines[i]["response"]["body"])
    lines[6]["response"] = "not an object"
    kept.write_text("".join(json.dumps(line) + "\n" for line in lines))
    again = batch(emulator, db, runs_dir, "NAME=o")
    assert again.returncode == 0, again.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'o'") == [("applied",)]
    files = custom_files(db)
    outcome = {i: status(db, files[lines[i]["custom_id"]]) for i in range(len(lines))}
    assert outcome[0] == ("failed_validation", "request failed: response's message was a string, not an object")
    assert outcome[3] == ("failed_validation", "answer nests JSON arrays or objects too deeply to be metadata")
    assert outcome[5][0] == outcome[6][0] == "failed_validation"
    assert "no choices" in outcome[5][1] and "no choices" in outcome[6][1]
    assert {outcome[i][0] for i in (1, 2, 4)} | {outcome[i][0] for i in range(7, len(lines))} <= {
        "extracted", "needs_review"}
    tokens = query(db, "SELECT prompt_tokens, completion_tokens FROM objbatch_jobs")[0]
    assert tokens[0] > 0 and tokens[1] > 0


MAX_RSS = """import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
sys.exit(done.returncode)"""


@pytest.mark.slow
def test_a_result_line_of_200_mb_fails_its_request_unread(emulator, library, runs_dir):
    """Issue 17 item 10: one 200 MB line pushed fetch and validate to 910 MB. A line over the stated limit
    (4 MiB) fails its own request with the reason; the rest of the run is applied; memory stays small."""
    import sys

    _, db = library
    lines, kept = killed_after_download(emulator, db, runs_dir, "big")
    huge = lines[0]
    with open(kept, "w") as out:
        head = json.dumps({"custom_id": huge["custom_id"], "response": {"status_code": 200, "body": {
            "choices": [{"message": {"content": ""}}]}}})
        out.write(head[:-6] + "x" * 200_000_000 + '"}}]}}}\n')
        out.writelines(json.dumps(line) + "\n" for line in lines[1:])
    again = subprocess_run([sys.executable, "-c", MAX_RSS, "make", "--no-print-directory", "-C", str(ROOT), "batch",
                            f"DB={db}", f"RUNS={runs_dir}", "POLL=0.1", "NAME=big"], emulator.env)
    assert again.returncode == 0, again.stderr
    assert int(again.stdout.split()[-1]) < 150, again.stdout  # MiB, for the largest process of the run
    file = custom_files(db)[huge["custom_id"]]
    size = os.path.getsize(kept) - sum(len(json.dumps(line)) + 1 for line in lines[1:])
    assert status(db, file) == ("failed_validation", f"request failed: result line is {size:,} bytes, over the "
                                                     "limit of 4,194,304; not read")
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'big'") == [("applied",)]


def subprocess_run(argv, env):
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


# ---------------------------------------------------------------- issue 15 item 2: SQLite URIs quoted

@pytest.mark.slow
def test_a_copy_of_a_database_whose_path_has_a_hash_does_not_cancel_the_originals_job(emulator, library, tmp_path):
    """DB='h#1/lib.db': the copy check opened 'file:…/h#1/lib.db?mode=ro' unquoted, that is the file 'h'
    (created empty), so the copy took the original's identity and cancelled its paid job."""
    import shutil

    _, base = library
    folder = tmp_path / "h#1"
    folder.mkdir()
    db = folder / "lib.db"
    shutil.copy(base, db)
    emulator.pace(queue_seconds=600)
    queued = make("batch", f"DB={db}", f"RUNS={tmp_path / 'runs'}", "NAME=q", "POLL=0.1", "TIMEOUT=0.2",
                  env=emulator.env)
    assert queued.returncode != 0 and len(emulator.record()["jobs_created"]) == 1, queued.stderr
    job_id = emulator.record()["jobs_created"][0]["id"]
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    cancel = run("batch-cancel", "--db", copy, "--run", "q", env=emulator.env)
    assert cancel.returncode != 0 and "belongs to database" in cancel.stderr, cancel.stderr
    assert emulator.sdk().batch.jobs.get(job_id=job_id).status in ("QUEUED", "RUNNING")
    assert not (tmp_path / "h").exists()


def test_every_sqlite_uri_quotes_its_path():
    from objbatch import ledger

    assert ledger.uri("/a/h#1/b?c%d.db", mode="ro") == "file:/a/h%231/b%3Fc%25d.db?mode=ro"


# ---------------------------------------------------------------- issue 15 item 9: an estimate writes nothing

def fingerprint(db) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in db.parent.glob(db.name + "*")}


@pytest.mark.slow
def test_make_estimate_on_a_copied_database_changes_none_of_its_bytes(emulator, library, runs_dir, tmp_path):
    import shutil

    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=e1").returncode == 0
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET ai_metadata_status = 'pending'")
    conn.commit()
    conn.close()
    copy = tmp_path / "copy" / "library.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    before = fingerprint(copy)
    estimate = make("estimate", f"DB={copy}", f"RUNS={runs_dir}", env=emulator.env)
    assert estimate.returncode == 0, estimate.stderr
    assert "make batch would start a new run" in estimate.stdout and "is a copy" not in estimate.stderr
    assert fingerprint(copy) == before
    for reader in (["stats"], ["review"], ["export-metadata"]):
        assert run(reader[0], "--db", copy).returncode == 0
    assert fingerprint(copy) == before


# ---------------------------------------------------------------- issue 15 item 14: read-only databases

READ_ONLY_MOUNT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'


def on_read_only_media(folder, cmd: str, *args, env=None):
    """Run one of the commands with `folder` read-only: a read-only bind mount of its own (root), else the
    folder and its files without write permission."""
    import shutil
    import subprocess
    import sys

    from conftest import BIN

    argv = [cmd if cmd == "make" else str(BIN / cmd), *map(str, args)]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root without unshare: no way to make read-only media here")
        argv = ["unshare", "-m", "sh", "-c", READ_ONLY_MOUNT, "sh", str(folder), *argv]
        return subprocess.run(argv, capture_output=True, text=True, env=env or dict(os.environ), timeout=120)
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    for path in modes:
        path.chmod(modes[path] & ~0o222)
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env or dict(os.environ), timeout=120)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    del sys


def media_copy(emulator, library, runs_dir, tmp_path, journal: str):
    """The library database after a run, alone in a folder, in WAL or rollback-journal mode."""
    import shutil

    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=m").returncode == 0
    media = tmp_path / "media"
    media.mkdir()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.close()
    shutil.copy(db, media / "library.db")
    assert not list(media.glob("*-wal"))
    return media / "library.db"


@pytest.mark.slow
def test_readers_work_on_a_wal_database_on_read_only_media(emulator, library, runs_dir, tmp_path):
    """WAL on read-only media: even stats said 'is not a usable SQLite database'."""
    db = media_copy(emulator, library, runs_dir, tmp_path, "WAL")
    before = fingerprint(db)
    path = next(iter(query(db, "SELECT file_path FROM file_metadata_ai")))[0]
    for reader in (["stats"], ["review", "--skipped"], ["show", path], ["export-metadata", "--nl"]):
        done = on_read_only_media(db.parent, reader[0], "--db", db, *reader[1:])
        assert done.returncode == 0, (reader, done.stderr)
    estimate = on_read_only_media(db.parent, "batch-run", "--estimate", f"DB={db}", f"RUNS={runs_dir}",
                                  env=emulator.env)
    assert estimate.returncode == 0 and "make batch would" in estimate.stdout, estimate.stderr
    assert fingerprint(db) == before


@pytest.mark.slow
@pytest.mark.parametrize("journal", ["DELETE", "WAL"])
def test_writers_refuse_a_read_only_database_in_one_line(emulator, library, runs_dir, tmp_path, journal):
    """Rollback journal: writers printed 'OperationalError: attempt to write a readonly database'."""
    db = media_copy(emulator, library, runs_dir, tmp_path, journal)
    path = next(iter(query(db, "SELECT file_path FROM file_metadata_ai")))[0]
    for writer in (["approve", path], ["requeue", path], ["select-pending", "--claim", "w"]):
        done = on_read_only_media(db.parent, writer[0], "--db", db, *writer[1:])
        assert done.returncode == 1, (writer, done.stderr)
        assert done.stderr.count("\n") == 1 and f"database {db} is read-only: " in done.stderr, done.stderr
    made = on_read_only_media(db.parent, "batch-run", f"DB={db}", f"RUNS={runs_dir}", "NAME=w2", env=emulator.env)
    assert made.returncode == 1 and f"database {db} is read-only" in made.stderr, made.stderr
    assert "Traceback" not in made.stderr and "OperationalError" not in made.stderr
    assert run("stats", "--db", db).returncode == 0


# ---------------------------------------------------------------- issue 15 item 12: each stage checks its input's kind

@pytest.fixture
def stage_files(library, tmp_path):
    """Each stage's output for two files of the library, by hand: selection, requests, manifest, results
    (as batch-fetch writes them), decisions."""
    _, db = library
    files = {"selection": tmp_path / "select.jsonl", "requests": tmp_path / "requests.jsonl",
             "manifest": tmp_path / "manifest.jsonl", "results": tmp_path / "results.jsonl",
             "decisions": tmp_path / "decisions.jsonl"}
    assert run("select-pending", "--db", db, "--max", "2", "-o", files["selection"]).returncode == 0
    assert run("build-jsonl", files["selection"], "--manifest", files["manifest"], "-o",
               files["requests"]).returncode == 0
    results = [{"custom_id": r["custom_id"], "job_id": "job-1", "status_code": 200, "ok": True, "content": "{}",
                "finish_reason": "stop", "usage": {}, "model": "m"} for r in jsonl(files["requests"].read_text())]
    files["results"].write_text("".join(json.dumps(r) + "\n" for r in results))
    decided = run("validate", files["results"], "--manifest", files["manifest"], "-o", files["decisions"])
    assert decided.returncode == 0, decided.stderr
    return db, files


def test_validate_refuses_request_lines_and_apply_writes_nothing(stage_files):
    """`validate --manifest manifest.jsonl requests.jsonl | apply-sql --db …` turned two extracted files into
    failed_validation and exited 0."""
    db, files = stage_files
    paths = [r["file_path"] for r in jsonl(files["selection"].read_text())]
    conn = sqlite3.connect(db)
    conn.executemany("UPDATE files SET ai_metadata_status = 'extracted' WHERE file_path = ?", [(p,) for p in paths])
    conn.commit()
    conn.close()
    before = query(db, "SELECT file_path, ai_metadata_status, error_message FROM files ORDER BY file_path")
    validate = run("validate", "--manifest", files["manifest"], files["requests"])
    assert validate.returncode == 1 and validate.stdout == ""
    assert validate.stderr == ("validate: error: result line 1 is a request (build-jsonl's output), not a result; "
                               "pipe batch-fetch's output\n")
    applied = run("apply-sql", "--db", db, input=validate.stdout)
    assert applied.returncode == 0
    assert query(db, "SELECT file_path, ai_metadata_status, error_message FROM files ORDER BY file_path") == before


@pytest.mark.parametrize("stage, wanted, given, says", [
    ("validate", "result", "decisions", "a decision (validate's output)"),
    ("validate", "result", "selection", "a selection (select-pending's output)"),
    ("apply-sql", "decision", "results", "a result (batch-fetch's output)"),
    ("apply-sql", "decision", "requests", "a request (build-jsonl's output)"),
    ("apply-sql", "decision", "manifest", "a manifest line (build-jsonl --manifest's output)"),
    ("build-jsonl", "selection", "decisions", "a decision (validate's output)"),
    ("build-jsonl", "selection", "requests", "a request (build-jsonl's output)"),
    ("estimate", "request", "results", "a result (batch-fetch's output)"),
    ("batch-submit", "request", "decisions", "a decision (validate's output)"),
    ("batch-fetch", "job record", "results", "a result (batch-fetch's output)"),
    ("batch-wait", "job record", "requests", "a request (build-jsonl's output)"),
])
def test_every_stage_names_the_kind_it_was_given_and_the_stage_that_belongs_there(stage_files, tmp_path, stage,
                                                                                  wanted, given, says):
    from objbatch.kinds import KINDS

    db, files = stage_files
    args = {"apply-sql": ["--db", db], "build-jsonl": ["--manifest", tmp_path / "m2.jsonl"],
            "batch-submit": ["--run-name", "k"]}.get(stage, [])
    env = {**os.environ, "MISTRAL_API_KEY": "test-key-not-secret", "MISTRAL_SERVER_URL": "http://127.0.0.1:9"}
    before = query(db, "SELECT * FROM files ORDER BY file_path")
    done = run(stage, *args, files[given], env=env)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert says in done.stderr and f"not {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}" in done.stderr, done.stderr
    assert f"pipe {KINDS[wanted][0]}'s output" in done.stderr and done.stderr.count("\n") == 1
    assert query(db, "SELECT * FROM files ORDER BY file_path") == before
    assert not (tmp_path / "m2.jsonl").exists()


def test_apply_refuses_a_decision_whose_fields_have_the_wrong_type_writing_nothing(stage_files):
    db, files = stage_files
    lines = jsonl(files["decisions"].read_text())
    lines[-1]["model"] = ["not", "a", "string"]
    before = query(db, "SELECT * FROM files ORDER BY file_path")
    applied = run("apply-sql", "--db", db, input="".join(json.dumps(d) + "\n" for d in lines))
    assert applied.returncode == 1
    assert f"decision line {len(lines)}: model is an array, not a string; pipe validate's output" in applied.stderr
    assert query(db, "SELECT * FROM files ORDER BY file_path") == before


def test_a_run_folder_of_the_database_that_was_at_the_same_path_before_is_named_as_such(emulator, tmp_path):
    """The library database was rebuilt at the same path: the old run folder is not the new database's, and
    the refusal says so (it said "belongs to database P, not P; resume it with DB=P", a contradiction)."""
    from mistral_emulator.sample_library import build

    root, db, runs = tmp_path / "library", tmp_path / "library.db", tmp_path / "runs"
    build(root, db, count=3, seed=3)
    assert batch(emulator, db, runs, "NAME=n1").returncode == 0
    db.unlink()
    build(tmp_path / "library2", db, count=3, seed=4)
    refused = run("batch-run", f"DB={db}", f"RUNS={runs}", "NAME=n1", env=emulator.env)
    assert refused.returncode == 1
    assert f"holds run n1 of another database that was at {db} before" in refused.stderr, refused.stderr
    assert "move the folder away or choose another NAME" in refused.stderr
    assert query(db, "SELECT COUNT(*) FROM objbatch_runs") == [(0,)]


def test_a_key_with_a_character_that_is_not_ascii_is_refused_in_one_line_without_showing_it(emulator):
    """A key pasted with an accent or a typographic quote failed as "UnicodeEncodeError: 'ascii' codec can't
    encode character '\\xe9' in position 8", a bare exception that showed a character of the key."""
    secret = "sk-s3cr\u00e9t-\u201ckey\u201d"
    submit = run("batch-submit", "--run-name", "x", input='{"custom_id":"a","body":{"messages":[{"role":"user",'
                 '"content":"x"}]}}\n', env={**emulator.env, "MISTRAL_API_KEY": secret})
    assert submit.returncode == 1, submit.stderr
    assert "MISTRAL_API_KEY contains a character that is not plain ASCII" in submit.stderr, submit.stderr
    assert "UnicodeEncodeError" not in submit.stderr and "\\xe9" not in submit.stderr and "s3cr" not in submit.stderr
    assert len(submit.stderr.strip().splitlines()) == 1 and emulator.record()["jobs_created"] == []


# ---------------------------------------------------------------- issue 15 item 8: approve what was reviewed

def extracted(db, path: str, topics: list[str], job: str) -> None:
    """The file's metadata as a run's apply-sql stores it (its last stage, by hand)."""
    import hashlib

    content_hash = rows(db)[path]["content_hash"]
    with open(path, "rb") as handle:
        sent_hash = hashlib.sha256(handle.read()).hexdigest()
    decision = {"custom_id": f"c-{os.path.basename(path)}", "job_id": job, "file_path": path, "db_hash": content_hash,
                "sent_hash": sent_hash, "decision": "extracted", "confidence": 0.9, "reasons": [], "repairs": [], "usage": {},
                "metadata": {"category": "ethics", "difficulty": "intermediate", "primary_topics": topics,
                             "semantic_description": {"summary": "A lecture."}, "confidence_score": 0.9}}
    applied = run("apply-sql", "--db", db, input=json.dumps(decision) + "\n")
    assert applied.returncode == 0, applied.stderr


@pytest.mark.parametrize("fmt", ["--json", "--nl", "--csv"])
def test_approve_refuses_metadata_that_changed_after_it_was_reviewed(library, fmt):
    """A review line, then the file requeued and extracted again with other topics: `approve - < that line`
    said '1 file approved'. Review output now carries a digest of the metadata shown, and approve refuses
    the file, naming it, when its metadata no longer has that digest."""
    _, db = library
    path, other = [p for p in texts(db) if os.path.getsize(p) < 800_000][:2]
    extracted(db, path, ["ethics", "reason"], "job-1")
    extracted(db, other, ["ethics", "values"], "job-1")
    review = run("review", "--db", db, "--threshold", "1", fmt)
    assert review.returncode == 0, review.stderr
    assert run("requeue", "--db", db, path).returncode == 0
    extracted(db, path, ["ethics", "honesty"], "job-2")
    approve = run("approve", "--db", db, "-", input=review.stdout)
    assert approve.returncode == 1
    assert f"1 refused (its metadata changed since it was reviewed; review it again: {os.path.basename(path)})" \
        in approve.stderr, approve.stderr
    assert status(db, path)[0] == "extracted" and status(db, other)[0] == "approved"
    again = run("review", "--db", db, "--threshold", "1", fmt)
    assert run("approve", "--db", db, "-", input=again.stdout).returncode == 0
    assert status(db, path)[0] == "approved" and "metadata_digest" in again.stdout
