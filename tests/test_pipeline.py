"""The whole pipeline on a database in the library's existing schema: make batch end to end, every row
checked, and the library-side stages on their own."""

from __future__ import annotations

import json
import sqlite3

import jsonschema

from conftest import jsonl, make, query, rows, run
from objbatch import metadata
from objbatch.requests import custom_id_for


def prepare(db):
    """Give the sample database the states a real one has: approved, deleted, failed rows."""
    conn = sqlite3.connect(db)
    paths = [r[0] for r in conn.execute("SELECT file_path FROM files WHERE file_type = 'txt' ORDER BY file_path")]
    approved, deleted, failed = paths[0], paths[1], paths[2]
    conn.execute("UPDATE files SET ai_metadata_status = 'approved', "
                 "error_message = 'kept by a person', upload_status = 'uploaded' WHERE file_path = ?", (approved,))
    conn.execute("UPDATE files SET is_deleted = 1 WHERE file_path = ?", (deleted,))
    conn.execute("UPDATE files SET ai_metadata_status = 'failed_validation', error_message = 'old failure' "
                 "WHERE file_path = ?", (failed,))
    conn.execute("UPDATE files SET ai_metadata_status = NULL WHERE file_path = ?", (paths[3],))
    conn.execute("INSERT INTO upload_log (file_path, uploaded_at, status) VALUES (?, 'then', 'ok')", (approved,))
    conn.commit()
    conn.close()
    return approved, deleted, failed


def batch(emulator, db, runs, *extra):
    return make("batch", f"DB={db}", f"RUNS={runs}", "POLL=0.1", *extra, env=emulator.env)


def test_make_batch_end_to_end_checks_every_row(emulator, library, runs_dir):
    root, db = library
    approved, deleted, failed = prepare(db)
    before = rows(db)
    result = batch(emulator, db, runs_dir, "NAME=t1")
    assert result.returncode == 0, result.stderr + result.stdout
    after = rows(db)
    assert len(emulator.record()["jobs_created"]) == 1
    submitted = set(emulator.record()["jobs_created"][0]["custom_ids"])
    validator = jsonschema.Draft202012Validator(metadata.schema())
    for path, row in after.items():
        old = before[path]
        for column in ("content_hash", "filename", "file_size", "file_type", "metadata_json", "upload_status",
                       "remote_file_id", "created_at", "is_deleted"):
            assert row[column] == old[column], (path, column)
        if path in (approved, deleted):
            assert all(row[k] == old[k] for k in old.keys()) and row["ai_metadata_json"] is None
            assert custom_id_for(path, old["content_hash"]) not in submitted
        elif row["file_type"] not in ("txt", "md") or not (root / path).exists() or row["file_size"] >= 830_000:
            assert row["ai_metadata_status"] == "skipped" and row["error_message"], path
            assert row["ai_metadata_json"] is None
        else:
            assert row["ai_metadata_status"] in ("extracted", "needs_review"), (path, row["error_message"])
            stored = json.loads(row["ai_metadata_json"])
            validator.validate(stored)
            assert (row["error_message"] is None) == (row["ai_metadata_status"] == "extracted")
            assert 0 <= row["ai_confidence_score"] <= 1
            topics = {t for (t,) in query(db, "SELECT topic_tag FROM file_primary_topics WHERE file_path = ?", path)}
            assert topics == set(stored["primary_topics"])
            versions = query(db, "SELECT metadata_json, is_current, model, prompt_version, extraction_config_hash "
                                 "FROM file_metadata_ai WHERE file_path = ?", path)
            assert len(versions) == 1 and versions[0][1] == 1 and json.loads(versions[0][0]) == stored
            assert versions[0][2] == "mistral-small-latest" and versions[0][3] and versions[0][4]
            assert row["updated_at"] != old["updated_at"]
    assert after[failed]["ai_metadata_status"] in ("extracted", "needs_review")
    assert query(db, "PRAGMA user_version") == [(12,)]
    assert query(db, "SELECT COUNT(*) FROM upload_log") == [(1,)]
    assert "Run t1 applied" in result.stdout

    again = batch(emulator, db, runs_dir, "NAME=t1")
    assert again.returncode == 0 and len(emulator.record()["jobs_created"]) == 1
    assert {p: dict(r) for p, r in rows(db).items()} == {p: dict(r) for p, r in after.items()}
    nothing = batch(emulator, db, runs_dir)
    assert nothing.returncode == 0 and "No pending files: nothing to do." in nothing.stderr
    assert len(emulator.record()["jobs_created"]) == 1


def snapshot(db):
    tables = ["files", "file_metadata_ai", "file_primary_topics", "objbatch_files", "objbatch_claims"]
    return {t: sorted(map(tuple, query(db, f"SELECT * FROM {t}"))) for t in tables}


def test_applying_the_same_decisions_twice_changes_nothing(emulator, library, runs_dir):
    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=t2").returncode == 0
    first = snapshot(db)
    again = run("apply-sql", "--db", db, "--run", "t2", runs_dir / "t2" / "decisions.jsonl")
    assert again.returncode == 0 and "already applied" in again.stderr
    assert snapshot(db) == first


def test_content_changed_in_flight_goes_back_to_pending(emulator, library, runs_dir):
    root, db = library
    assert make(f"{runs_dir}/t3/results.jsonl", f"DB={db}", f"RUNS={runs_dir}", "NAME=t3", "POLL=0.1",
                env=emulator.env).returncode == 0
    flight = json.loads(run("stats", "--db", db, "--json").stdout)["in_flight"]
    job_id = json.loads((runs_dir / "t3" / "job.json").read_text())["jobs"][0]["job_id"]
    assert [(f["run"], [j.split(":")[0] for j in f["jobs"]]) for f in flight] == [("t3", [job_id])]
    assert "run t3 (submitted): 32 files" in run("stats", "--db", db).stdout
    manifest = jsonl((runs_dir / "t3" / "manifest.jsonl").read_text())
    sent = [m for m in manifest if m.get("custom_id")]
    on_disk, in_db, gone = sent[0]["file_path"], sent[1]["file_path"], sent[2]["file_path"]
    with open(on_disk, "a", encoding="utf-8") as handle:
        handle.write("\nA new paragraph added after the file was sent.\n")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET content_hash = 'rescanned' WHERE file_path = ?", (in_db,))
    conn.commit()
    conn.close()
    __import__("os").unlink(gone)
    applied = batch(emulator, db, runs_dir, "NAME=t3")
    assert applied.returncode == 0
    assert "1 stored though the file cannot be read now (kept: the database still has that content)" in applied.stderr
    after = rows(db)
    assert after[on_disk]["ai_metadata_status"] == "pending" and after[on_disk]["ai_metadata_json"] is None
    assert "changed since it was sent" in after[on_disk]["error_message"]
    assert after[in_db]["ai_metadata_status"] == "pending"
    assert after[gone]["ai_metadata_status"] in ("extracted", "needs_review")  # paid for, and the content it describes
    assert len(emulator.record()["jobs_created"]) == 1
    nxt = batch(emulator, db, runs_dir, "NAME=t4")
    assert nxt.returncode == 0
    assert rows(db)[on_disk]["ai_metadata_status"] in ("extracted", "needs_review")


def test_select_pending_skips_files_claimed_by_a_run_in_flight(library):
    _, db = library
    claimed = run("select-pending", "--db", db, "--max", "5", "--claim", "A")
    assert claimed.returncode == 0 and "5 files selected for run A" in claimed.stderr
    first = [r["file_path"] for r in jsonl(claimed.stdout)]
    others = run("select-pending", "--db", db, "--claim", "B")
    assert not set(first) & {r["file_path"] for r in jsonl(others.stdout)}
    assert "skipping 5 files in flight in run A" in others.stderr
    same = run("select-pending", "--db", db, "--claim", "A")
    assert [r["file_path"] for r in jsonl(same.stdout)] == first
    record = jsonl(claimed.stdout)[0]
    assert set(record) == {"file_path", "filename", "file_size", "content_hash", "scanner_metadata", "status",
                           "attempts", "library_root"}
    assert isinstance(record["scanner_metadata"], dict)


def test_select_pending_on_a_database_that_is_not_the_library(tmp_path):
    missing = run("select-pending", "--db", tmp_path / "nope.db")
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "--db" in missing.stderr
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    wrong = run("select-pending", "--db", other)
    assert wrong.returncode == 1 and "has no 'files' table" in wrong.stderr


def test_build_jsonl_skips_what_cannot_be_sent_and_keeps_going(tmp_path):
    files = {
        "good.txt": "Reason and ethics. " * 50,
        "latin1.txt": "Caf\xe9 culture and aesthetics. " * 30,
        "long.txt": "".join(f"Paragraph {i} on epistemology and induction. " for i in range(10000)),
    }
    selection = []
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("cp1252"))
    (tmp_path / "binary.txt").write_bytes(b"abc\x00def")
    (tmp_path / "undecodable.txt").write_bytes(b"\x81\x8d\x8f\x90 not text in any encoding \xff\xfe")
    (tmp_path / "empty.txt").write_bytes(b"  \n")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    for name in ["good.txt", "latin1.txt", "long.txt", "binary.txt", "undecodable.txt", "empty.txt", "doc.pdf",
                 "gone.txt"]:
        selection.append(json.dumps({"file_path": str(tmp_path / name), "filename": name, "content_hash": "h",
                                     "scanner_metadata": {"topic": "x"}, "attempts": 0}))
    result = run("build-jsonl", "--manifest", tmp_path / "manifest.jsonl", "--text-tokens", "2000",
                 "--library-root", tmp_path,
                 input="\n".join(selection) + "\n")
    assert result.returncode == 0, result.stderr
    requests = jsonl(result.stdout)
    manifest = {m["filename"]: m for m in jsonl((tmp_path / "manifest.jsonl").read_text())}
    assert [r["custom_id"] for r in requests] == [manifest[n]["custom_id"] for n in ("good.txt", "latin1.txt",
                                                                                     "long.txt")]
    assert manifest["latin1.txt"]["encoding"] == "cp1252"
    assert manifest["long.txt"]["excerpted"] is True and manifest["good.txt"]["excerpted"] is False
    assert {n: manifest[n]["skip"] for n in manifest if "skip" in manifest[n]} == {
        "binary.txt": "file looks binary (NUL bytes), not text",
        "undecodable.txt": "text is not decodable as UTF-8 or Windows-1252",
        "empty.txt": "file is empty",
        "doc.pdf": "not a text file (.pdf); only .md, .txt are sent",
        "gone.txt": "file not found on disk (deleted, moved or on an unmounted disk)",
    }
    long_body = requests[2]["body"]
    user = long_body["messages"][1]["content"]
    assert "characters omitted" in user and "three evenly spaced excerpts" in user
    assert len(user) < 2000 * 4 + 1500
    assert "File name: good.txt" in requests[0]["body"]["messages"][1]["content"]
    assert '"topic": "x"' in requests[0]["body"]["messages"][1]["content"]
    assert long_body["response_format"]["json_schema"]["schema"]["properties"]["primary_topics"]["maxItems"] == 8
    rebuilt = run("build-jsonl", "--manifest", tmp_path / "m2.jsonl", "--text-tokens", "2000",
                  "--library-root", tmp_path,
                  input="\n".join(reversed(selection)) + "\n")
    assert {r["custom_id"] for r in jsonl(rebuilt.stdout)} == {r["custom_id"] for r in requests}


def test_stats_and_review(emulator, library, runs_dir):
    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=t5").returncode == 0
    data = json.loads(run("stats", "--db", db, "--json").stdout)
    assert sum(data["statuses"].values()) == len(rows(db))
    assert data["in_flight"] == [] and data["runs"][0]["run"] == "t5"
    run_info = data["runs"][0]
    assert run_info["prompt_tokens"] > 0 and run_info["cost_usd"] > 0 and run_info["jobs"][0]["status"] == "SUCCESS"
    text = run("stats", "--db", db).stdout
    assert "Files by status:" in text and "t5" in text
    listed = jsonl(run("review", "--db", db, "--nl").stdout)
    assert len(listed) == data["statuses"].get("needs_review", 0)
    assert [x["confidence"] for x in listed] == sorted(x["confidence"] for x in listed)
    assert json.loads(run("review", "--db", db, "--json").stdout) == listed


def test_a_busy_database_is_waited_for(library):
    import threading
    import time

    _, db = library
    run("select-pending", "--db", db, "--max", "1")  # adds objbatch's tables first
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(1.5, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    result = run("select-pending", "--db", db, "--claim", "busy")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1.2 and len(jsonl(result.stdout)) > 0


def test_cancel_without_a_run_folder_releases_its_claims(library, runs_dir):
    _, db = library
    assert run("select-pending", "--db", db, "--max", "4", "--claim", "lost").returncode == 0
    assert query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE state = 'claimed'") == [(4,)]
    result = make("cancel", f"DB={db}", f"RUNS={runs_dir}", "NAME=lost")
    assert result.returncode == 0
    assert "run lost cancelled before anything was submitted; its 4 files are back in the queue" in result.stderr
    assert query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE state = 'claimed'") == [(0,)]
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'lost'") == [("cancelled",)]
    unnamed = make("cancel", f"DB={db}", f"RUNS={runs_dir}")
    assert unnamed.returncode != 0 and f"database {db} has no unfinished run to cancel" in unnamed.stderr
