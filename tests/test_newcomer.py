"""A newcomer's first day (issue 18): the rough edges a new user met, each as the user meets it, with the
real commands, a real SQLite library and the emulator."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess

import pytest

from conftest import BIN, ROOT, invoke, jsonl, make, query, rows, run


def batch(emu, db, runs, *extra):
    return make("batch", f"DB={db}", f"RUNS={runs}", "POLL=0.1", *extra, env=emu.env)


@pytest.fixture
def reviewed(emulator, library, runs_dir):
    """A library after one run whose answers leave needs_review and failed_validation files."""
    _, db = library
    emulator.faults(answers={"missing_confidence": 0.35, "prose": 0.15}, seed=4)
    done = batch(emulator, db, runs_dir, "NAME=r")
    assert done.returncode == 0, done.stderr
    return db, done


def on_a_terminal(cmd: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command with a terminal as its stdin, where the user types nothing but Ctrl-D."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(BIN / cmd), *args], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env or dict(os.environ))
        os.close(slave)
        os.write(master, b"\x04")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ---------------------------------------------------------------- 3: review --status | approve -

def test_review_status_piped_into_approve_approves_without_a_refusal_and_summarises_refusals(reviewed):
    db, _ = reviewed
    states = {p: r["ai_metadata_status"] for p, r in rows(db).items()}
    wanted = {p for p, s in states.items() if s == "needs_review"}
    failed = {p for p, s in states.items() if s == "failed_validation"}
    assert wanted and len(failed) >= 2
    listed = run("review", "--db", db, "--status", "needs_review", "--json")
    assert {i["group"] for i in json.loads(listed.stdout)} == {"needs_review"}
    assert listed.stderr.strip() == f"review: {len(wanted)} needs_review"
    both = run("review", "--db", db, "--status", "failed_validation", "--status", "skipped", "--nl")
    assert {i["group"] for i in jsonl(both.stdout)} == {"failed_validation", "skipped"}
    approved = run("approve", "--db", db, "-", input=listed.stdout)
    assert approved.returncode == 0 and approved.stderr.strip() == f"approve: {len(wanted)} files approved"
    # the whole review, failed files included: one short line naming a few, every one under --json
    everything = run("review", "--db", db, "--json").stdout
    refused = run("approve", "--db", db, "-", input=everything)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1 and len(refused.stderr) < 400
    assert f"{len(failed)} refused (failed_validation: no valid metadata: " in refused.stderr
    assert "approve --json lists them all" in refused.stderr
    listing = run("approve", "--db", db, "--json", "-", input=everything)
    assert listing.returncode == 1
    record = json.loads(listing.stdout)
    assert {r["file_path"] for r in record["refused"]} == failed
    assert {r["why"] for r in record["refused"]} == {"failed_validation: no valid metadata"}


# ---------------------------------------------------------------- 11: show finds a file by part of its name

def test_show_takes_a_unique_part_of_a_name_lists_several_and_labels_its_history(reviewed):
    db, _ = reviewed
    path = sorted(p for p, r in rows(db).items() if r["ai_metadata_status"] == "needs_review")[0]
    name = path.rsplit("/", 1)[1]
    tail = name.split(" - ", 1)[-1] if " - " in name else name[4:]
    unique = [p for p in rows(db) if p.endswith(tail)]
    part = tail if len(unique) == 1 else name
    shown = run("show", "--db", db, part[3:])  # not the whole file name: a part of it
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(path + "\n") and "run r  decided needs_review, stored needs_review" in shown.stdout
    several = run("show", "--db", db, ".txt")
    assert several.returncode == 1 and len(several.stderr.splitlines()) == 1
    assert "matches several files (" in several.stderr and "give more of its path" in several.stderr
    assert several.stderr.count("/") >= 5  # the candidates are named
    assert "not in the database" in run("show", "--db", db, "no such lecture").stderr


# ---------------------------------------------------------------- 10: on a terminal with nothing piped in

@pytest.mark.parametrize("cmd", ["batch-wait", "batch-fetch"])
def test_a_stage_reading_a_job_record_from_a_terminal_says_so_and_what_to_give(cmd, tmp_path):
    done = on_a_terminal(cmd)
    assert "reading the job record from the terminal; end with Ctrl-D" in done.stderr
    assert done.returncode == 2 and "no job record on stdin: give the file batch-submit wrote" in done.stderr
    assert "Expecting value" not in done.stderr


def test_approve_from_a_terminal_says_what_it_reads(library):
    _, db = library
    done = on_a_terminal("approve", "--db", str(db), "-")
    assert "reading paths (or review --nl/--json/--csv output) from the terminal; end with Ctrl-D" in done.stderr


def test_batch_submit_with_no_requests_submits_nothing_and_writes_no_record(emulator, tmp_path):
    done = on_a_terminal("batch-submit", "-o", str(tmp_path / "job.json"), env=emulator.env)
    assert done.returncode == 0, done.stderr
    assert "reading request lines from the terminal" in done.stderr or "from the terminal" in done.stderr
    assert done.stderr.strip().endswith("batch-submit: no requests: nothing submitted")
    assert not (tmp_path / "job.json").exists() and done.stdout == ""
    piped = run("batch-submit", input="", env=emulator.env)
    assert piped.returncode == 0 and piped.stdout == "" and "no requests: nothing submitted" in piped.stderr
    assert emulator.record()["jobs_created"] == []
    assert query  # (the ledger mode, make batch, still records an empty run: tests/test_pipeline covers it)


# ---------------------------------------------------------------- 4: batch-cron --set

@pytest.mark.parametrize("setting, message", [
    ("MAXX=5", "unknown variable 'MAXX'; the variables are: "),
    ("MAX=-1", "MAX must be a whole number of at least 0 (got '-1')"),
    ("DB=other.db", "--set DB=other.db: it conflicts with --db; give the database with --db only"),
    ("NAME=x", "--set NAME=x: batch-cron names its runs itself; leave NAME out"),
])
def test_batch_cron_refuses_a_bad_setting_as_a_usage_error_before_anything(library, tmp_path, setting, message):
    _, db = library
    done = run("batch-cron", "--db", db, "--runs", tmp_path / "runs", "--set", setting)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "needs attention" not in done.stderr and "cron-" not in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["POLL", "TIMEOUT", "TIMEOUT_HOURS", "MAX_ATTEMPTS", "MAX_IN_FLIGHT"])
def test_an_empty_number_that_has_a_default_is_refused_before_anything_is_claimed(library, runs_dir, name):
    """POLL= (typed to mean "the default") reached batch-wait as --poll '' after the job was paid for."""
    _, db = library
    done = run("batch-run", f"DB={db}", f"RUNS={runs_dir}", "NAME=empty", f"{name}=",
               env={**os.environ, "MISTRAL_SERVER_URL": "http://127.0.0.1:9", "MISTRAL_API_KEY": "unused"})
    assert done.returncode == 2, done.stderr
    assert f"{name} must be a " in done.stderr and f"(got ''); leave {name} out for its default" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not runs_dir.exists()
    assert query(db, "SELECT name FROM sqlite_master WHERE name = 'objbatch_claims'") == []


# ---------------------------------------------------------------- 5: a resumed run and a new MAX

def test_a_resumed_run_says_a_new_max_is_for_new_runs_and_estimate_only_would_resume(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    started = run("batch-run", f"DB={db}", f"RUNS={runs_dir}", "NAME=slow", "MAX=10", "TIMEOUT=0", "POLL=0",
                  env=emulator.env)
    assert started.returncode == 75, started.stderr
    estimate = make("estimate", f"DB={db}", f"RUNS={runs_dir}", "MAX=5", env=emulator.env)
    assert estimate.returncode == 0, estimate.stderr
    assert "Resuming" not in estimate.stdout + estimate.stderr
    assert estimate.stdout.startswith("make batch would resume run slow (submitted)")
    assert "Run slow is resumed with the files it claimed; MAX=5 is for new runs." in estimate.stderr
    emulator.release()
    resumed = run("batch-run", f"DB={db}", f"RUNS={runs_dir}", "MAX=5", env=emulator.env)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming unfinished run slow" in resumed.stderr
    assert "Run slow is resumed with the files it claimed; MAX=5 is for new runs." in resumed.stderr
    assert query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE run_name = 'slow'")[0][0] == 10


# ---------------------------------------------------------------- 13: the next step; STATUS= and N=

def test_make_batch_ends_with_the_next_step_and_review_and_export_take_status_and_n(reviewed):
    db, done = reviewed
    counts = dict(query(db, "SELECT ai_metadata_status, COUNT(*) FROM files GROUP BY 1"))
    assert done.stdout.rstrip().endswith(
        f"Next: {counts['needs_review']} need review, {counts['failed_validation']} failed validation (the next "
        "make batch retries them): make review (or make report for the whole picture).")
    assert "All runs: 1 run(s), 1 job(s), " in done.stdout and "Metadata of " in done.stdout
    listed = make("review", f"DB={db}", "STATUS=failed_validation", "N=1")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("failed_validation") and "needs_review" not in listed.stdout
    assert listed.stdout.count("attempt(s)") == 1
    exported = make("export", f"DB={db}", "STATUS=needs_review", "N=2", "FORMAT=nl")
    assert [r["status"] for r in jsonl(exported.stdout)] == ["needs_review", "needs_review"]


# ---------------------------------------------------------------- 14: make typos

def test_an_unknown_make_target_is_refused_with_the_nearest_before_anything_is_paid(emulator, library, runs_dir):
    _, db = library
    typo = make("bacth", f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)
    assert typo.returncode == 2 and typo.stdout == ""
    assert "unknown target 'bacth'; did you mean batch? (make help lists the targets; nothing was run)" in typo.stderr
    flag = make("batch", f"DB={db}", f"RUNS={runs_dir}", "--", "--dry", env=emulator.env)
    assert flag.returncode == 2 and "unknown target '--dry'; make passes no options on" in flag.stderr
    assert emulator.record()["jobs_created"] == [] and emulator.record()["uploads"] == []
    assert not query(db, "SELECT name FROM sqlite_master WHERE name LIKE 'objbatch%'")  # nothing claimed
    assert not runs_dir.exists()
    assert make("-n", "report", f"DB={db}").returncode == 0  # a known target still runs


# ---------------------------------------------------------------- 7: a reader that goes away

def with_stdout_closed(*args: str, env: dict) -> subprocess.CompletedProcess:
    """make ARGS with its stdout a pipe whose reader has already gone (as `| head` after its lines)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    finally:
        os.close(write)


def test_a_closed_stdout_ends_a_reader_quietly_and_a_paid_run_keeps_going(emulator, library, runs_dir):
    _, db = library
    ran = with_stdout_closed("batch", f"DB={db}", f"RUNS={runs_dir}", "POLL=0.1", "NAME=piped", env=emulator.env)
    assert ran.returncode == 0, ran.stderr
    assert "Broken pipe" not in ran.stderr and "apply-sql: " in ran.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'piped'") == [("applied",)]
    for target in ("export", "stats", "review", "estimate"):
        read = with_stdout_closed(target, f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)
        assert read.returncode == 0 and "Broken pipe" not in read.stderr and "Error" not in read.stderr, \
            (target, read.stderr)


# ---------------------------------------------------------------- 2: setting the key from the clone

def test_make_key_checks_the_key_then_stores_it_where_every_command_finds_it(emulator, tmp_path):
    from conftest import TEST_KEY

    store = tmp_path / "keyring"
    env = {k: v for k, v in emulator.env.items() if k != "MISTRAL_API_KEY"}
    env.update({"PYTHON_KEYRING_BACKEND": "keyring_backend.EnvKeyring", "PYTHONPATH": str(ROOT / "tests"),
                "OBJBATCH_TEST_KEYRING_FILE": str(store)})
    wrong = subprocess.run(["make", "-s", "-C", str(ROOT), "key"], input="not-the-key\n", capture_output=True,
                           text=True, env=env, timeout=120)
    assert wrong.returncode != 0 and "not-the-key" not in wrong.stderr + wrong.stdout and not store.exists()
    assert "API key" in wrong.stderr or "401" in wrong.stderr
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "key"], input=TEST_KEY + "\n", capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert TEST_KEY not in done.stderr + done.stdout
    assert f"set-key: the key works at {emulator.url}; stored in the keyring (" in done.stderr
    assert "as objlib-mistral/api_key; every command reads it from there" in done.stderr
    assert store.read_text() == TEST_KEY
    from conftest import request_lines

    submitted = run("batch-submit", input=request_lines(1), env=env)  # the stored key is found and used
    assert submitted.returncode == 0, submitted.stderr
    assert len(emulator.record()["jobs_created"]) == 1
    no_keyring = run("set-key", input=TEST_KEY + "\n",
                     env={**env, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    assert no_keyring.returncode == 1 and "no usable keyring" in no_keyring.stderr


# ---------------------------------------------------------------- 6: retry lines say who retries, and until when

def test_a_retry_line_names_its_command_its_attempt_and_when_it_gives_up(emulator, tmp_path):
    from conftest import request_lines

    submitted = run("batch-submit", "-o", tmp_path / "job.json", input=request_lines(2), env=emulator.env)
    assert submitted.returncode == 0, submitted.stderr
    emulator.faults(http_storm=2, http_status=503, retry_after=0.1)
    waited = run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env)
    assert waited.returncode == 0, waited.stderr
    retries = [line for line in waited.stderr.splitlines() if "retrying in" in line]
    assert len(retries) == 2, waited.stderr
    assert retries[0].startswith("batch-wait: status of job ") and "HTTP 503" in retries[0]
    assert re.search(r"; retrying in 0\.1s \(attempt 1; giving up in \d+s\)$", retries[0]), retries[0]
    assert "(attempt 2; giving up in " in retries[1]
    emulator.faults(http_storm=1, http_status=429, retry_after=0.1)
    slow = run("batch-wait", "--poll", "0.05", tmp_path / "job.json",
               env={**emulator.env, "OBJBATCH_RETRY_SECONDS": "3600"})
    assert re.search(r"\(attempt 1; giving up at \d\d:\d\d\)$", slow.stderr.splitlines()[0]), slow.stderr


# ---------------------------------------------------------------- 12: stats and summaries read plainly

def test_after_a_cancel_validate_and_apply_say_the_same_thing(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    started = run("batch-run", f"DB={db}", f"RUNS={runs_dir}", "NAME=gone", "MAX=6", "TIMEOUT=0", "POLL=0",
                  env=emulator.env)
    assert started.returncode == 75, started.stderr
    cancelled = make("cancel", f"DB={db}", f"RUNS={runs_dir}", "NAME=gone", env=emulator.env)
    assert cancelled.returncode == 0, cancelled.stderr
    validate = next(line for line in cancelled.stderr.splitlines() if line.startswith("validate: "))
    applied = next(line for line in cancelled.stderr.splitlines() if line.startswith("apply-sql: "))
    assert "failed_validation" not in validate and "not processed (back to the queue, no attempt counted)" in validate
    assert "not processed (back to the queue, no attempt counted)" in applied and "requeued" not in applied
    assert query(db, "SELECT COUNT(*) FROM objbatch_files WHERE attempts > 0")[0][0] == 0


def test_long_run_names_keep_the_stats_columns_in_line(emulator, library, runs_dir):
    _, db = library
    for name, files in (("a-run-name-much-longer-than-twenty-four", "2"), ("short", "2")):
        done = make("batch", f"DB={db}", f"RUNS={runs_dir}", "POLL=0.1", f"NAME={name}", f"MAX={files}",
                    env=emulator.env)
        assert done.returncode == 0, done.stderr
    lines = run("stats", "--db", db).stdout.splitlines()
    runs = lines[lines.index("Recent runs:") + 1:][:2]
    assert [line.index(" applied ") for line in runs][0] == [line.index(" applied ") for line in runs][1], runs


# ---------------------------------------------------------------- 9: help and errors alike everywhere

def test_the_offline_world_commands_have_verbose_and_one_line_errors_naming_the_port(emulator, tmp_path):
    for cmd in ("make-sample-library", "mistral-emulator", "with-emulator"):
        assert "--verbose" in invoke(cmd, "--help").stdout, cmd
    taken = run("mistral-emulator", "--state-dir", tmp_path / "second", "--port", emulator.port, timeout=30)
    assert taken.returncode == 1 and taken.stderr == (
        f"mistral-emulator: error: cannot start: port {emulator.port} on 127.0.0.1 is in use (another emulator?); "
        "choose another --port, or --port 0 for a free one\n")
    missing = invoke("with-emulator", "--state-dir", tmp_path / "third", "--", "no-such-command-here")
    assert missing.exit_code == 1 and missing.stderr == "with-emulator: error: no-such-command-here: no such command\n"
    (tmp_path / "lib.db").write_text("")
    exists = invoke("make-sample-library", "--root", tmp_path / "lib", "--db", tmp_path / "lib.db", "--count", "3")
    assert exists.exit_code == 1 and exists.stderr.startswith("make-sample-library: error: database ")
    assert "--count 3 makes 4 text files" in " ".join(invoke("make-sample-library", "--help").stdout.split())


def test_help_says_what_stats_lines_are_and_batch_run_lists_its_variables():
    stats = " ".join(invoke("stats", "--help").stdout.split())
    assert "--nl Print the recent runs as JSON lines" in stats and "approve" not in stats
    variables = invoke("batch-run", "--help").stdout
    for name in ("DB=data/library.db", "MAX=", "BUDGET=", "MODEL=mistral-small-latest", "THRESHOLD="):
        assert f"\n    {name}" in variables, name


def test_readers_of_a_ledger_an_earlier_version_made_see_the_new_columns_defaults(library, tmp_path):
    """A library whose ledger predates the token columns (an upgrade): stats and report read it as it is."""
    import sqlite3

    from objbatch.ledger import upgrade
    from objbatch.migrations import MIGRATIONS, m007_usage_and_models

    _, db = library
    conn = sqlite3.connect(db, isolation_level=None)
    upgrade(conn, MIGRATIONS[:MIGRATIONS.index(m007_usage_and_models)])  # the ledger before the token columns
    conn.execute("INSERT INTO objbatch_runs (run_name, model, state, created_at) VALUES "
                 "('old', 'mistral-small-latest', 'claimed', '2026-11-29T10:00:00.000')")
    conn.execute("INSERT INTO objbatch_jobs (job_id, run_name, model, status, prompt_tokens, completion_tokens) "
                 "VALUES ('j1', 'old', 'mistral-small-latest', 'SUCCESS', 1000000, 0)")
    conn.close()
    stats = run("stats", "--db", db, "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["totals"]["cost_usd"] > 0
    assert run("report", "--db", db, "-o", tmp_path / "r.html").returncode == 0


# ---------------------------------------------------------------- 8: make from another folder

@pytest.mark.parametrize("how", [["-f", str(ROOT / "Makefile")], ["-C", str(ROOT)]])
def test_make_from_another_folder_reads_relative_paths_from_there(library, tmp_path, how):
    _, db = library
    env = {**os.environ, "PWD": str(tmp_path)}  # as the shell sets it in the folder where make is typed
    done = subprocess.run(["make", "--no-print-directory", *how, "estimate", f"DB={db.name}", "RUNS=r"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("make batch would start a new run with 32 files")
    listed = subprocess.run(["make", "-s", "--no-print-directory", *how, "vars", f"DB={db.name}", "RUNS=r"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert f"DB={db}\n" in listed.stdout and f"RUNS={tmp_path / 'r'}\n" in listed.stdout
    default = subprocess.run(["make", "-s", "--no-print-directory", *how, "vars"], cwd=tmp_path,
                             capture_output=True, text=True, env=env, timeout=60)
    assert "DB=data/library.db\n" in default.stdout  # the defaults are the clone's


def test_the_budget_refusal_advice_works_as_given_for_a_run_with_a_max(emulator, library, runs_dir):
    """The README's session: `make batch MAX=50 BUDGET=0.01 NAME=first` is refused, advising a command. Typed as
    given, that command must pay for the same run, not select every pending file and be refused again."""
    _, db = library
    refused = batch(emulator, db, runs_dir, "MAX=6", "NAME=first", "BUDGET=0.000001")
    assert refused.returncode != 0 and "is over the budget" in refused.stderr, refused.stderr
    advised = re.search(r"\): make batch ((?:[A-Z_]+=\S+ ?)+)", refused.stderr)
    assert advised, refused.stderr
    again = batch(emulator, db, runs_dir, *advised.group(1).split())
    assert again.returncode == 0, again.stderr
    assert "select-pending: 6 files selected for run first" in again.stderr
    assert len(emulator.record()["jobs_created"]) == 1
