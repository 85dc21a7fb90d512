"""Hostile inputs and shared machines (issue 17): a hostile database, a hostile service, another user of the
machine, a careless user. Each test is an attack that worked on 6ab6fb2, run with the real commands, real
SQLite and the real emulator; docs/design.md ("Security") says what each shows."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import sqlite3
import stat
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import BIN, TEST_KEY, invoke, request_lines, run

ESC_SEQUENCES = ["\x1b]0;pwned\x07", "\x1b[2J", "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\", "\x9b2J"]


def control(emulator, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(emulator.url + path, data=data, method="POST" if data else "GET",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---------------------------------------------------------------- the emulator

@pytest.mark.emulator
@pytest.mark.parametrize("path, body", [("/_emulator/record", None), ("/_emulator/faults", {"http_rate": 1.0}),
                                        ("/_emulator/pace", {"queue_seconds": 99}),
                                        ("/_emulator/release", {})])
def test_the_emulators_control_endpoints_need_the_key(emulator, path, body):
    assert control(emulator, path, body)[0] == 401
    assert control(emulator, path, body, key="wrong-key")[0] == 401
    assert emulator.pace()["queue_seconds"] != 99 and emulator.faults()["http_rate"] != 1.0
    assert control(emulator, path, body, key=TEST_KEY)[0] == 200


@pytest.mark.emulator
def test_a_pace_of_the_wrong_type_is_refused_and_never_saved(emulator, tmp_path):
    status, answer = control(emulator, "/_emulator/pace", {"queue_seconds": "x"}, key=TEST_KEY)
    assert status == 422 and "queue_seconds must be a number" in json.dumps(answer)
    assert control(emulator, "/_emulator/pace", ["queue_seconds"], key=TEST_KEY)[0] == 422
    assert emulator.pace()["queue_seconds"] != "x"
    emulator.restart()  # what was saved is what a restarted emulator works with
    assert "\"x\"" not in (emulator.state_dir / "state.json").read_text()
    submitted = run("batch-submit", "--run-name", "p1", "--record-dir", tmp_path / "records",
                    input=request_lines(2), env=emulator.env)
    assert submitted.returncode == 0, submitted.stderr


@pytest.mark.emulator
def test_the_emulator_keeps_what_it_is_sent_to_its_user_only(emulator, tmp_path):
    for run_name, extra in (("inline", []), ("file", ["--inline-max-requests", "0"])):
        submitted = run("batch-submit", "--run-name", run_name, "--record-dir", tmp_path / "records", *extra,
                        input=request_lines(3), env=emulator.env)
        assert submitted.returncode == 0, submitted.stderr
        (tmp_path / "job.json").write_text(submitted.stdout)
        assert run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env).returncode == 0
    stored = list((emulator.state_dir / "files").iterdir())
    assert any(p.name.endswith(".requests") for p in stored) and len(stored) >= 4
    assert {oct(mode(p)) for p in stored} == {oct(0o600)}
    assert mode(emulator.state_dir) == 0o700 and mode(emulator.state_dir / "files") == 0o700


@pytest.mark.emulator
def test_the_emulators_help_says_it_accepts_any_key_without_api_key():
    shown = " ".join(invoke("mistral-emulator", "--help").stdout.split())
    assert "Without it the emulator accepts ANY non-empty key" in shown


# ---------------------------------------------------------------- a careless user: URLs

def test_plain_http_to_another_machine_is_refused_before_the_key_is_sent(tmp_path):
    env = {**os.environ, "MISTRAL_SERVER_URL": "http://192.0.2.2:18767", "MISTRAL_API_KEY": "k" * 32}
    result = run("batch-submit", "--run-name", "h1", "--record-dir", tmp_path, input=request_lines(1), env=env,
                 timeout=30)
    assert result.returncode == 1
    assert result.stderr == ("batch-submit: error: MISTRAL_SERVER_URL http://192.0.2.2:18767 is plain HTTP to another "
                             "machine: the API key would cross the network unencrypted; use https://, or set "
                             "OBJBATCH_ALLOW_HTTP=1 for a proxy you trust\n")


def test_http_is_allowed_to_this_machine_and_to_a_proxy_only_when_asked(monkeypatch):
    from objbatch import config

    for url in ("http://127.0.0.1:8765", "http://localhost:1", "http://[::1]:80", "https://10.0.0.5"):
        monkeypatch.setenv("MISTRAL_SERVER_URL", url)
        assert config.server_url() == url
    monkeypatch.setenv("MISTRAL_SERVER_URL", "http://proxy.internal:3128")
    with pytest.raises(config.Failure, match="plain HTTP to another machine"):
        config.server_url()
    monkeypatch.setenv("OBJBATCH_ALLOW_HTTP", "1")
    assert config.server_url() == "http://proxy.internal:3128"


def test_a_password_in_the_url_is_never_printed_nor_logged(library, tmp_path):
    _, db = library
    env = {**os.environ, "MISTRAL_SERVER_URL": "http://admin:hunter2secret@127.0.0.1:1", "MISTRAL_API_KEY": "local"}
    submitted = run("batch-submit", "--run-name", "u1", "--record-dir", tmp_path, input=request_lines(1), env=env)
    assert submitted.returncode == 1 and "hunter2secret" not in submitted.stderr + submitted.stdout
    assert "holds a user name or password" in submitted.stderr and "http://***@127.0.0.1:1" in submitted.stderr
    cron = run("batch-cron", "--db", db, "--runs", tmp_path / "runs", env=env)
    assert cron.returncode == 1
    logged = (tmp_path / "runs" / "cron.log").read_text()
    assert "user name or password" in logged
    assert "hunter2secret" not in logged + cron.stderr + cron.stdout


def test_a_url_password_in_any_message_is_masked():
    from objbatch.common import scrub

    assert scrub("cannot reach https://me:pw@host:1/x (see http://a@b)") == \
        "cannot reach https://***@host:1/x (see http://***@b)"


# ---------------------------------------------------------------- a hostile service: ids

def test_a_file_id_from_the_service_never_becomes_a_path(emulator, tmp_path):
    submitted = run("batch-submit", "--run-name", "f1", "--record-dir", tmp_path / "records",
                    input=request_lines(2), env=emulator.env)
    assert submitted.returncode == 0, submitted.stderr
    (tmp_path / "job.json").write_text(submitted.stdout)
    assert run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env).returncode == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret.jsonl").write_text('{"custom_id": "r0", "response": {"status_code": 200}}\n')
    for planted in (str(victim / "planted-by-service"), str(victim / "secret"), "../../victim/secret"):
        emulator.stop()
        state = json.loads((emulator.state_dir / "state.json").read_text())
        job = next(iter(state["jobs"].values()))
        job["output_file"] = planted
        (emulator.state_dir / "state.json").write_text(json.dumps(state))
        emulator.start()
        raw = tmp_path / "run" / "raw"
        fetched = run("batch-fetch", "--raw-dir", raw, tmp_path / "job.json", env=emulator.env)
        assert fetched.returncode == 1 and fetched.stdout == ""
        assert "is not a file id" in fetched.stderr and len(fetched.stderr.splitlines()) == 1
        assert sorted(p.name for p in victim.iterdir()) == ["secret.jsonl"]
        assert not raw.exists() or list(raw.iterdir()) == []


# ---------------------------------------------------------------- a hostile database: CSV cells

FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\tx", "'quoted"]


def stored_with(db, tmp_path, summaries: list[str]) -> list[str]:
    """The sample library with files whose paths and summaries start like formulas, as needs_review."""
    assert run("select-pending", "--db", db, "--max", "0").returncode == 0  # objbatch's columns and tables
    conn = sqlite3.connect(db)
    with conn:
        source = conn.execute("SELECT * FROM files LIMIT 1").fetchone()
        columns = [d[0] for d in conn.execute("SELECT * FROM files LIMIT 1").description]
        paths = []
        for i, summary in enumerate(summaries):
            row = dict(zip(columns, source, strict=True))
            meta = {"category": "course_transcript", "difficulty": "intro", "primary_topics": ["ethics"],
                    "topic_aspects": [summary], "semantic_description": {"summary": summary, "key_arguments": [],
                                                                         "philosophical_positions": []},
                    "confidence_score": 0.5}
            row.update(file_path=f"{summary}{i}.txt", filename=f"{summary}{i}.txt", ai_metadata_status="needs_review",
                       ai_confidence_score=0.5, ai_metadata_json=json.dumps(meta), error_message=summary)
            conn.execute(f"INSERT INTO files ({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values()))
            paths.append(row["file_path"])
    conn.close()
    return paths


def test_csv_cells_that_start_like_formulas_are_neutralised_and_round_trip(library, tmp_path):
    _, db = library
    paths = stored_with(db, tmp_path, FORMULAS)
    for command in (["export-metadata", "--csv", "--status", "needs_review"], ["review", "--csv"]):
        shown = run(*command, "--db", db)
        assert shown.returncode == 0, shown.stderr
        cells = [cell for row in csv.reader(io.StringIO(shown.stdout)) for cell in row]
        assert cells and not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
        raw = run(*command, "--csv-raw", "--db", db)
        assert {r["file_path"] for r in csv.DictReader(io.StringIO(raw.stdout))} >= set(paths[:5])  # as stored
    piped = f"{BIN}/review --csv --db {shlex.quote(str(db))} | {BIN}/approve --db {shlex.quote(str(db))} -"
    approved = subprocess.run(["bash", "-o", "pipefail", "-c", piped], capture_output=True)  # bytes: \r kept
    assert approved.returncode == 0, approved.stderr
    statuses = dict(sqlite3.connect(db).execute("SELECT file_path, ai_metadata_status FROM files"))
    assert {statuses[p] for p in paths} == {"approved"}


def test_a_cell_starting_with_a_carriage_return_is_neutralised_too():
    from objbatch import output

    assert output.neutralised("\rx") == "'\rx" and output.unquote(output.neutralised("\rx")) == "\rx"
    assert [output.unquote(output.neutralised(text)) for text in FORMULAS] == FORMULAS
    assert output.neutralised(-0.5) == -0.5 and output.neutralised("plain") == "plain"


# ---------------------------------------------------------------- terminal escapes

def test_review_show_and_errors_escape_what_a_terminal_would_act_on(library, tmp_path):
    _, db = library
    paths = stored_with(db, tmp_path, [f"a{seq}b" for seq in ESC_SEQUENCES])
    outputs = [run("review", "--db", db), run("review", "--db", db, "--json"), run("review", "--db", db, "--nl"),
               run("stats", "--db", db), run("export-metadata", "--db", db, "--table"),
               run("show", "--db", db, "--json", paths[0])]
    outputs += [run("show", "--db", db, path) for path in paths]
    outputs.append(run("show", "--db", db, "no\x1b]0;such\x07file"))
    for result in outputs:
        assert "\x1b" not in result.stdout + result.stderr and "\x9b" not in result.stdout + result.stderr
        assert "\x07" not in result.stdout + result.stderr
    shown = run("show", "--db", db, paths[1]).stdout
    assert shown.startswith("a\\x1b[2Jb1.txt\n") and "summary       a\\x1b[2Jb" in shown
    assert json.loads(outputs[1].stdout)[0]["file_path"] in paths  # JSON stays JSON: escaped, the same text
    assert outputs[-1].returncode == 1 and "no\\x1b]0;such\\x07file" in outputs[-1].stderr


def test_control_characters_in_an_answer_are_stripped_and_recorded():
    from objbatch import metadata

    answer = {"category": "course_transcript", "difficulty": "intro",
              "primary_topics": ["ethics", "reason", "values", "egoism", "rights", "capitalism", "politics",
                                 "epistemology"],
              "topic_aspects": ["honesty \x1b]8;;http://evil.example/\x1b\\as a virtue", "honesty in trade",
                                "honesty and self-esteem"],
              "semantic_description": {"summary": "A lecture on honesty.\x1b]0;pwned\x07\x1b[2J It says why honesty "
                                                  "matters\u202e in ethics.",
                                       "key_arguments": ["one\x9b2J"], "philosophical_positions": ["egoism"]},
              "confidence_score": 0.95}
    verdict = metadata.judge(json.dumps(answer), "stop", "Lecture-01-Honesty.txt")
    stored = json.dumps(verdict.metadata, ensure_ascii=False)
    assert not any(ch in stored for ch in "\x1b\x07\x9b\u202e")
    assert verdict.metadata["semantic_description"]["summary"] == \
        "A lecture on honesty.]0;pwned[2J It says why honesty matters in ethics."
    assert any("control characters" in repair for repair in verdict.repairs)
    assert verdict.decision == "needs_review"  # a person looks at an answer that tried to drive a terminal


# ---------------------------------------------------------------- another user: RUNS and what is written there

def batch_run(emulator, db, runs, *extra):
    return run("batch-run", f"DB={db}", f"RUNS={runs}", "POLL=0.05", *extra, env=emulator.env)


def test_writes_never_follow_a_planted_symlink(emulator, library, tmp_path):
    _, db = library
    victim, runs = tmp_path / "victim", tmp_path / "runs"
    victim.mkdir()
    (victim / "bashrc").write_text("victim's own\n")
    folder = runs / "s1"
    emulator.pace(queue_seconds=600)
    assert batch_run(emulator, db, runs, "NAME=s1", "MAX=3", "TIMEOUT=0").returncode == 75
    (folder / "select.jsonl").unlink()
    (folder / "select.jsonl").symlink_to(victim / "created-by-objbatch")
    (folder / "results.jsonl").symlink_to(victim / "bashrc")
    emulator.release()
    done = batch_run(emulator, db, runs, "NAME=s1")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["bashrc"]
    assert (victim / "bashrc").read_text() == "victim's own\n"
    assert not (folder / "select.jsonl").is_symlink() and not (folder / "results.jsonl").is_symlink()
    (runs / ".cron.lock").symlink_to(victim / "lock")
    cron = run("batch-cron", "--db", db, "--runs", runs, env=emulator.env)
    assert cron.returncode == 1 and "cannot open the lock" in cron.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["bashrc"]
    (runs / ".cron.lock").unlink()
    (runs / "cron.log").symlink_to(victim / "bashrc")
    cron = run("batch-cron", "--db", db, "--runs", runs, env=emulator.env)
    assert cron.returncode == 1 and "(a symlink there is not followed); remove it" in cron.stderr
    assert (victim / "bashrc").read_text() == "victim's own\n"


def test_a_planted_raw_folder_symlink_is_refused_never_written_through(emulator, library, tmp_path):
    _, db = library
    victim, runs = tmp_path / "victim", tmp_path / "runs"
    victim.mkdir()
    emulator.pace(queue_seconds=600)
    assert batch_run(emulator, db, runs, "NAME=s1", "MAX=3", "TIMEOUT=0").returncode == 75
    raw = runs / "s1" / "raw"
    if raw.exists():
        raw.rmdir()
    raw.symlink_to(victim)
    emulator.release()
    refused = batch_run(emulator, db, runs, "NAME=s1")
    assert refused.returncode == 1 and "is a symbolic link" in refused.stderr, refused.stderr
    assert list(victim.iterdir()) == []
    raw.unlink()
    done = batch_run(emulator, db, runs, "NAME=s1")
    assert done.returncode == 0, done.stderr
    assert list(victim.iterdir()) == [] and raw.is_dir() and not raw.is_symlink()


def test_what_objbatch_writes_only_its_user_can_read(emulator, library, tmp_path):
    _, db = library
    runs = tmp_path / "runs"
    done = batch_run(emulator, db, runs, "NAME=s1", "MAX=3")
    assert done.returncode == 0, done.stderr
    assert run("batch-cron", "--db", db, "--runs", runs, env=emulator.env).returncode in (0, 75)
    written = [p for p in runs.rglob("*")]
    assert {p.name for p in written} >= {"s1", "raw", "run.json", "select.jsonl", "requests.jsonl",
                                         "manifest.jsonl", "results.jsonl", "cron.log", ".cron.lock"}
    assert {(p.name, oct(mode(p))) for p in written if p.is_dir()} == {("s1", "0o700"), ("raw", "0o700")} | \
        {(p.name, "0o700") for p in written if p.is_dir() and p.name.startswith("cron-")}
    assert {oct(mode(p)) for p in written if p.is_file()} == {"0o600"}
    assert mode(runs) == 0o700


def test_a_runs_folder_others_can_write_to_is_refused_like_ssh(emulator, library, tmp_path):
    _, db = library
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o777)
    refused = batch_run(emulator, db, runs, "NAME=s1", "MAX=3")
    assert refused.returncode == 1
    assert refused.stderr.endswith(f"RUNS folder {runs} can be written by other users (mode 777); fix it with: "
                                   f"chmod go-w {runs}\n")
    cron = run("batch-cron", "--db", db, "--runs", runs, env=emulator.env)
    assert cron.returncode == 1 and "can be written by other users" in cron.stderr
    runs.chmod(0o755)
    (runs / "s1").mkdir(mode=0o755)
    (runs / "s1").chmod(0o775)
    refused = batch_run(emulator, db, runs, "NAME=s1", "MAX=3")
    assert refused.returncode == 1 and f"run folder {runs / 's1'} can be written by other users" in refused.stderr
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM files WHERE ai_metadata_status != 'pending'"
                                       ).fetchone() == (0,)


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_run_folder_another_user_owns_is_refused(emulator, library, tmp_path):
    _, db = library
    runs = tmp_path / "runs"
    (runs / "s1").mkdir(parents=True, mode=0o700)
    os.chown(runs / "s1", 65534, 65534)
    refused = batch_run(emulator, db, runs, "NAME=s1", "MAX=3")
    assert refused.returncode == 1
    assert f"run folder {runs / 's1'} belongs to another user (uid 65534)" in refused.stderr


# ---------------------------------------------------------------- shared database: the in-flight cap

def test_the_in_flight_cap_is_counted_where_the_run_is_claimed(library):
    _, db = library
    first = run("select-pending", "--db", db, "--claim", "one", "--max", "2", "--max-in-flight", "1")
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 2
    second = run("select-pending", "--db", db, "--claim", "two", "--max", "2", "--max-in-flight", "1")
    assert second.returncode == 0 and second.stdout == ""
    assert "1 run in flight (one) and the cap is 1: run two is not started" in second.stderr
    again = run("select-pending", "--db", db, "--claim", "one", "--max-in-flight", "1")  # its own run goes on
    assert len(again.stdout.splitlines()) == 2
    third = run("select-pending", "--db", db, "--claim", "three", "--max", "2", "--max-in-flight", "2")
    assert len(third.stdout.splitlines()) == 2
    names = [r[0] for r in sqlite3.connect(db).execute("SELECT run_name FROM objbatch_runs ORDER BY run_name")]
    assert names == ["one", "three"]


@pytest.mark.slow
def test_six_crons_on_other_runs_folders_share_the_databases_cap(emulator, library, tmp_path):
    _, db = library
    emulator.pace(queue_seconds=600)  # every run stays in flight
    crons = [subprocess.Popen([str(BIN / "batch-cron"), "--db", str(db), "--runs", str(tmp_path / f"runs{i}"),
                               "--max-in-flight", "1", "--set", "MAX=2"], env=emulator.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(6)]
    codes = [cron.wait(timeout=300) for cron in crons]
    assert set(codes) <= {75}, [cron.stderr.read() for cron in crons]
    assert len(emulator.record()["jobs_created"]) == 1
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM objbatch_runs").fetchone() == (1,)
    logged = "".join((tmp_path / f"runs{i}" / "cron.log").read_text() for i in range(6))
    assert "needs attention" not in logged and logged.count("still running") >= 1
    assert "no new run: 1 run in flight and the cap is 1" in logged


# ---------------------------------------------------------------- a hostile database: rows and symlinks

SECRET = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAfake\n-----END OPENSSH PRIVATE KEY-----\n"


def victim_library(tmp_path):
    """A library in ~/lectures whose database also names a symlink to ~/.ssh/id_rsa and ~/.aws/credentials.md."""
    from mistral_emulator.sample_library import build

    home = tmp_path / "victim"
    lectures, db = home / "lectures", home / "data" / "library.db"
    db.parent.mkdir(parents=True)
    build(lectures, db, count=3, seed=5)
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "id_rsa").write_text(SECRET * 20)
    (home / ".ssh" / "id_rsa").chmod(0o600)
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials.md").write_text("aws_secret_access_key = fakeSECRETfakeSECRET\n" * 40)
    (lectures / "Lecture-01-Ethics.txt").symlink_to(home / ".ssh" / "id_rsa")
    conn = sqlite3.connect(db)
    with conn:
        for path in (lectures / "Lecture-01-Ethics.txt", home / ".aws" / "credentials.md"):
            conn.execute("INSERT INTO files (file_path, content_hash, filename, file_size) VALUES (?, 'h', ?, 900)",
                         (str(path), path.name))
    conn.close()
    return home, lectures, db


def sent_anything_secret(emulator, runs) -> bool:
    stored = b"".join(p.read_bytes() for p in (emulator.state_dir / "files").iterdir())
    written = b"".join(p.read_bytes() for p in runs.rglob("*.jsonl") if p.is_file())
    return any(word in stored + written for word in (b"PRIVATE KEY", b"fakeSECRET"))


@pytest.mark.parametrize("where", ["objlib", "LIBRARY_ROOT", "rows"])
def test_files_outside_the_library_root_are_never_read_nor_sent(emulator, tmp_path, where):
    home, lectures, db = victim_library(tmp_path)
    settings = [f"DB={db}", f"RUNS={tmp_path / 'runs'}", "POLL=0.05", "NAME=r1"]
    if where == "objlib":  # objlib's own config beside data/library.db names the root
        (home / "config").mkdir()
        (home / "config" / "scanner_config.json").write_text(json.dumps({"library_path": str(lectures)}))
    elif where == "LIBRARY_ROOT":
        settings.append(f"LIBRARY_ROOT={lectures}")
    else:  # no root recorded or given: the rows' common folder (lectures) still stops the symlink
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("DELETE FROM files WHERE file_path LIKE '%credentials.md'")
        conn.close()
    estimate = run("batch-run", "--estimate", *settings, env=emulator.env)
    assert estimate.returncode == 0, estimate.stderr
    source = {"objlib": f"objlib's {home / 'config' / 'scanner_config.json'}", "LIBRARY_ROOT": "LIBRARY_ROOT",
              "rows": "the common folder of the database's rows; set LIBRARY_ROOT to narrow it"}[where]
    assert f"Library root:   {lectures} (from {source}); nothing outside it is read" in estimate.stdout
    done = run("batch-run", *settings, env=emulator.env)
    assert done.returncode == 0, done.stderr
    assert not sent_anything_secret(emulator, tmp_path / "runs")
    skipped = {m["filename"]: m for m in map(json.loads, (tmp_path / "runs" / "r1" / "manifest.jsonl").open())
               if m.get("skip")}
    assert skipped["Lecture-01-Ethics.txt"]["skip_kind"] == "outside_root"
    assert skipped["Lecture-01-Ethics.txt"]["skip"] == (f"file is outside the library root {lectures} (a symlink "
                                                         f"leads to {home / '.ssh' / 'id_rsa'}); only files under "
                                                         "it are read")
    if where != "rows":
        assert skipped["credentials.md"]["skip"].startswith(f"file is outside the library root {lectures};")
    assert sum(1 for m in map(json.loads, (tmp_path / "runs" / "r1" / "manifest.jsonl").open())
               if "custom_id" in m) >= 3  # the library itself is sent


def test_build_jsonl_needs_a_root_for_lines_that_do_not_carry_one(tmp_path):
    line = json.dumps({"file_path": str(tmp_path / "a.txt"), "filename": "a.txt"}) + "\n"
    built = run("build-jsonl", "--manifest", tmp_path / "m.jsonl", input=line)
    assert built.returncode == 1 and built.stderr == (
        "build-jsonl: error: selection line 1 has no library_root (the folder files may be read from); pipe "
        "select-pending's output, or give --library-root\n")


def test_the_key_is_in_no_file_objbatch_or_the_emulator_writes(emulator, library, tmp_path):
    _, db = library
    runs = tmp_path / "runs"
    assert batch_run(emulator, db, runs, "NAME=k1", "MAX=4").returncode == 0
    assert run("batch-cron", "--db", db, "--runs", runs, "--set", "MAX=2", env=emulator.env).returncode in (0, 75)
    files = [p for root in (runs, emulator.state_dir, tmp_path / "state", db.parent) if root.exists()
             for p in root.rglob("*") if p.is_file()]
    assert db in files and any(p.name == "cron.log" for p in files) and any(p.name == "state.json" for p in files)
    assert not [p for p in files if TEST_KEY.encode() in p.read_bytes()]


@pytest.mark.emulator
def test_a_fault_setting_of_the_wrong_type_is_refused_and_never_saved(emulator, tmp_path):
    for change in ({"http_rate": "x"}, {"answers": {"prose": "often"}}, {"shuffle": 1}, {"preset": "nope"},
                   {"no_such": 1}, ["http_rate"]):
        status, answer = control(emulator, "/_emulator/faults", change, key=TEST_KEY)
        assert status == 422 and ("not changed" in json.dumps(answer) or "JSON object" in json.dumps(answer))
    emulator.restart()
    assert emulator.faults(http_rate=0.0)["http_rate"] == 0.0
    submitted = run("batch-submit", "--run-name", "q1", "--record-dir", tmp_path / "records",
                    input=request_lines(2), env=emulator.env)
    assert submitted.returncode == 0, submitted.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="making a symlink another user owns needs root")
def test_an_output_symlink_another_user_planted_in_a_shared_folder_is_not_followed(library, tmp_path):
    _, db = library
    shared, victim = tmp_path / "shared", tmp_path / "bashrc"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    victim.write_text("victim's own\n")
    trap = shared / "export.csv"
    trap.symlink_to(victim)
    os.lchown(trap, 65534, 65534)
    refused = run("export-metadata", "--db", db, "--csv", "-o", trap)
    assert refused.returncode == 2 and "is a symbolic link another user made" in refused.stderr
    assert victim.read_text() == "victim's own\n" and trap.is_symlink()


def test_a_planted_raw_file_is_replaced_by_the_download_never_read(emulator, tmp_path):
    submitted = run("batch-submit", "--run-name", "w1", "--record-dir", tmp_path / "records",
                    input=request_lines(2), env=emulator.env)
    (tmp_path / "job.json").write_text(submitted.stdout)
    assert run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env).returncode == 0
    output_file = emulator.record()["jobs"][0]["output_file"]
    raw, planted = tmp_path / "raw", tmp_path / "planted.jsonl"
    raw.mkdir()
    planted.write_text(json.dumps({"custom_id": "r0", "response": {"status_code": 200, "body": {"choices": [
        {"message": {"content": "planted"}, "finish_reason": "stop"}]}}}) + "\n")
    (raw / f"{output_file}.jsonl").symlink_to(planted)
    fetched = run("batch-fetch", "--raw-dir", raw, tmp_path / "job.json", env=emulator.env)
    assert fetched.returncode == 0, fetched.stderr
    assert all(r["ok"] and r["content"] != "planted" for r in map(json.loads, fetched.stdout.splitlines()))
    assert not (raw / f"{output_file}.jsonl").is_symlink() and "planted" in planted.read_text()


def test_a_fifo_for_objlibs_config_is_no_root_and_no_hang(emulator, tmp_path):
    home, lectures, db = victim_library(tmp_path)
    (home / "config").mkdir()
    os.mkfifo(home / "config" / "scanner_config.json")
    estimate = run("batch-run", "--estimate", f"DB={db}", f"RUNS={tmp_path / 'runs'}", env=emulator.env, timeout=60)
    assert estimate.returncode == 0, estimate.stderr
    assert f"Library root:   {home} (from the common folder" in estimate.stdout
