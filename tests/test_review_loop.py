"""Cost before paying and the review loop after (issue 9), with the real commands on a real SQLite library
against the emulator: estimate, budget, unpriced models, review, show, approve, requeue, export, the
answers as the library's own tools need them (8 topics, a confidence_score), its statuses, cron's log."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3

import pytest

from conftest import ROOT, jsonl, make, query, rows, run

pytestmark = pytest.mark.slow


def batch(emu, db, runs, *extra, env=None):
    return make("batch", f"DB={db}", f"RUNS={runs}", "POLL=0.1", *extra, env={**emu.env, **(env or {})})


def jobs(emu) -> list[dict]:
    return emu.record()["jobs_created"]


def current(db) -> dict[str, dict]:
    return {p: json.loads(m) for p, m in query(db, "SELECT file_path, metadata_json FROM file_metadata_ai "
                                                   "WHERE is_current = 1")}


def status(db, path) -> str:
    return query(db, "SELECT ai_metadata_status FROM files WHERE file_path = ?", path)[0][0]


# ---------------------------------------------------------------- cost before paying

def test_the_estimate_matches_the_run_that_follows_and_claims_nothing(emulator, library, runs_dir):
    _, db = library
    estimate = make("estimate", f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)
    assert estimate.returncode == 0, estimate.stderr
    assert "make batch would start a new run with 32 files" in estimate.stdout
    assert "Requests:       25\nSkipped:        7 (1 missing, 5 not text, 1 too big)" in estimate.stdout
    assert "(450 a request, the default: no past runs in this database)" in estimate.stdout
    predicted = int(re.search(r"Input tokens:\s+([\d,]+)", estimate.stdout).group(1).replace(",", ""))
    cost = re.search(r"Cost:\s+\$([\d.]+) at the batch price \(\$([\d.]+) synchronous\)", estimate.stdout)
    assert cost and float(cost.group(2)) == pytest.approx(2 * float(cost.group(1)), abs=0.0002)
    assert jobs(emulator) == [] and emulator.record()["uploads"] == []
    assert not query(db, "SELECT name FROM sqlite_master WHERE name LIKE 'objbatch%'")  # the database is untouched
    assert batch(emulator, db, runs_dir, "NAME=e1").returncode == 0
    ran = json.loads(run("stats", "--db", db, "--json").stdout)["runs"][0]
    assert abs(ran["prompt_tokens"] - predicted) / ran["prompt_tokens"] < 0.15
    assert ran["estimate_input_tokens"] == predicted and ran["estimate_usd"] == pytest.approx(float(cost.group(1)),
                                                                                             abs=0.0001)
    assert len(jobs(emulator)[0]["custom_ids"]) == int(re.search(r"Requests:\s+(\d+)", estimate.stdout).group(1))
    assert f"(estimate ${ran['estimate_usd']:.4f})" in run("stats", "--db", db).stdout
    nothing = make("estimate", f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)
    assert nothing.returncode == 0 and nothing.stdout.strip() == "make batch would do nothing: no pending files."
    run("requeue", "--db", db, next(iter(current(db))))
    again = make("estimate", f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)
    per_answer = ran["completion_tokens"] / 25
    assert f"Output tokens:  {round(per_answer):,} ({per_answer:,.0f} a request, the average of this database's past " \
           "runs: 25 answers)" in again.stdout


def test_the_estimate_command_reads_build_jsonl_output(emulator, library, tmp_path):
    _, db = library
    selection = run("select-pending", "--db", db).stdout
    built = run("build-jsonl", "--manifest", tmp_path / "m.jsonl", input=selection)
    figures = run("estimate", "--manifest", tmp_path / "m.jsonl", "--json", input=built.stdout)
    assert figures.returncode == 0, figures.stderr
    data = json.loads(figures.stdout)
    assert data["requests"] == len(jsonl(built.stdout)) and data["files"] == 32
    assert data["skipped"] == {"missing": 1, "not_text": 5, "too_big": 1} and data["requests"] == 25
    over = run("estimate", "--budget", "0.000001", input=built.stdout)
    assert over.returncode == 1 and "is over the budget $0.0000" in over.stderr and "nothing was sent" in over.stderr


def test_a_budget_below_the_estimate_creates_no_job(emulator, library, runs_dir):
    _, db = library
    refused = batch(emulator, db, runs_dir, "NAME=b1", "BUDGET=0.000001")
    assert refused.returncode != 0
    assert "is over the budget $0.000001" in refused.stderr and "nothing was submitted" in refused.stderr
    assert jobs(emulator) == [] and emulator.record()["uploads"] == []
    assert query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE state = 'claimed'") == [(0,)]
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'b1'") == []  # dropped: the advice works as given
    cron = run("batch-cron", "--db", db, "--runs", runs_dir, "--set", "BUDGET=0.000001", env=emulator.env)
    assert cron.returncode == 1 and "over the budget" in cron.stderr and jobs(emulator) == []
    estimate = make("estimate", f"DB={db}", f"RUNS={runs_dir}", "BUDGET=0.000001", env=emulator.env)
    assert estimate.returncode != 0 and "make batch would refuse" in estimate.stderr
    paid = batch(emulator, db, runs_dir, "BUDGET=5")
    assert paid.returncode == 0 and len(jobs(emulator)) == 1


def test_a_model_without_a_price_is_refused_unless_allowed(emulator, library, runs_dir):
    _, db = library
    typo = batch(emulator, db, runs_dir, "MODEL=mistral-smal-latest")
    assert typo.returncode != 0 and not runs_dir.exists() and jobs(emulator) == []
    assert "model 'mistral-smal-latest' has no price in schemas/prices.json (known: ministral-14b-latest" in typo.stderr
    assert "ALLOW_UNPRICED=1" in typo.stderr
    capped = batch(emulator, db, runs_dir, "MODEL=my-finetune", "ALLOW_UNPRICED=1", "BUDGET=1", "NAME=u0")
    assert capped.returncode != 0 and jobs(emulator) == []
    assert "the budget $1.0000 cannot be checked: model my-finetune has no price" in capped.stderr
    assert "add the model's price to schemas/prices.json, or leave BUDGET out" in capped.stderr
    allowed = batch(emulator, db, runs_dir, "MODEL=my-finetune", "ALLOW_UNPRICED=1", "NAME=u")
    assert allowed.returncode == 0, allowed.stderr
    assert jobs(emulator)[0]["model"] == "my-finetune"
    assert "cost unknown (no price)" in run("stats", "--db", db).stdout


# ---------------------------------------------------------------- answers as the library needs them

def test_every_stored_object_has_eight_topics_and_a_confidence_score(emulator, library, runs_dir):
    _, db = library
    emulator.faults(answers={"few_topics": 0.3, "too_many_topics": 0.3, "missing_confidence": 0.3})
    assert batch(emulator, db, runs_dir, "NAME=t").returncode == 0
    stored = current(db)
    assert len(stored) == len(jobs(emulator)[0]["custom_ids"])
    for path, meta in stored.items():
        assert len(set(meta["primary_topics"])) == len(meta["primary_topics"]) == 8, path
        assert 0 <= meta["confidence_score"] <= 1
        assert sorted(t for (t,) in query(db, "SELECT topic_tag FROM file_primary_topics WHERE file_path = ?",
                                          path)) == sorted(meta["primary_topics"])
        assert json.loads(rows(db)[path]["ai_metadata_json"]) == meta
    repairs = [r for (text,) in query(db, "SELECT repairs_json FROM objbatch_applied") for r in json.loads(text)]
    assert any(r.startswith("added topic '") and "mentions in the text" in r for r in repairs)
    assert any(r.startswith("kept the 8 topics best supported by the text; dropped") for r in repairs)
    assert any(r.startswith("confidence_score was missing; stored the computed") for r in repairs)
    body = json.loads((runs_dir / "t" / "requests.jsonl").read_text().splitlines()[0])["body"]
    topics = body["response_format"]["json_schema"]["schema"]["properties"]["primary_topics"]
    assert topics["minItems"] == topics["maxItems"] == 8  # the schema and the prompt ask for exactly 8
    assert "primary_topics: exactly 8 distinct tags" in body["messages"][0]["content"]


def test_the_library_own_statuses_and_edits_are_honoured(emulator, library, runs_dir):
    root, db = library
    assert batch(emulator, db, runs_dir, "NAME=s1").returncode == 0
    done = sorted(current(db))
    rescheduled, old_failure, edited = done[0], done[1], done[2]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET ai_metadata_status = 'retry_scheduled' WHERE file_path = ?", (rescheduled,))
    conn.execute("UPDATE files SET ai_metadata_status = 'failed_json' WHERE file_path = ?", (old_failure,))
    person = {**current(db)[edited], "category": "qa_session", "confidence_score": 0.99}
    conn.execute("UPDATE file_metadata_ai SET is_current = 0 WHERE file_path = ?", (edited,))  # objlib's review
    conn.execute("INSERT INTO file_metadata_ai (file_path, metadata_json, model, prompt_version, "
                 "extraction_config_hash, is_current) VALUES (?, ?, 'human_edited', 'manual', 'manual', 1)",
                 (edited, json.dumps(person)))
    conn.commit()
    conn.close()
    shown = json.loads(run("show", "--db", db, "--json", edited).stdout)
    assert shown["metadata"] == person and shown["model"] == "human_edited"
    exported = {r["file_path"]: r for r in jsonl(run("export-metadata", "--db", db, "--nl").stdout)}
    assert exported[edited]["category"] == "qa_session"
    assert run("requeue", "--db", db, edited).returncode == 0
    emulator.faults(answers={"prose": 1.0})  # the next answers are unusable: the edit stays current
    assert batch(emulator, db, runs_dir, "NAME=s2").returncode == 0
    sent = {c.split("-")[0] for c in jobs(emulator)[1]["custom_ids"]}
    assert len(sent) == 3  # retry_scheduled, failed_json and the requeued file
    assert json.loads(rows(db)[edited]["ai_metadata_json"]) == person  # the mirror follows the library's edit
    assert status(db, rescheduled) == status(db, old_failure) == "failed_validation"


# ---------------------------------------------------------------- the review loop

@pytest.fixture
def reviewed(emulator, library, runs_dir):
    """A library after one run at a fault mix that leaves needs_review, failed and skipped files."""
    _, db = library
    emulator.faults(answers={"missing_confidence": 0.35, "prose": 0.15}, seed=4)
    assert batch(emulator, db, runs_dir, "NAME=r").returncode == 0
    return db


def test_review_lists_each_group_with_its_reasons(reviewed):
    db = reviewed
    listed = run("review", "--db", db, "--skipped", "--nl")
    items = jsonl(listed.stdout)
    groups = {g: [i for i in items if i["group"] == g] for g in ("needs_review", "failed_validation", "skipped")}
    counts = {s: n for s, n in query(db, "SELECT ai_metadata_status, COUNT(*) FROM files WHERE is_deleted = 0 "
                                         "GROUP BY 1")}
    assert {g: len(v) for g, v in groups.items()} == {g: counts.get(g, 0) for g in groups} and all(groups.values())
    assert listed.stderr.strip() == (f"review: {counts['needs_review']} needs_review, {counts['failed_validation']} "
                                     f"failed_validation, {counts['skipped']} skipped")
    assert all(i["reasons"] and i["file_path"] for i in items)
    assert all(i["attempts"] == 1 and "answer contained no JSON" in i["reasons"][0] for i in groups["failed_validation"])
    assert [i["confidence"] for i in groups["needs_review"]] == sorted(i["confidence"] for i in groups["needs_review"])
    default = run("review", "--db", db)
    assert "needs_review" in default.stdout and "skipped" not in default.stdout.split("\n")[0]
    table = run("review", "--db", db, "--csv", "-n", "2")
    assert table.stdout.splitlines()[0].startswith("file_path,group,status,confidence")
    shown = [row["group"] for row in csv.DictReader(io.StringIO(table.stdout))]
    assert sorted(shown) == sorted(g for g in ("needs_review", "failed_validation") for _ in range(min(2, len(groups[g]))))


def test_review_json_piped_into_approve_approves_exactly_those(reviewed):
    db = reviewed
    listed = run("review", "--db", db, "--json")
    wanted = {i["file_path"] for i in json.loads(listed.stdout) if i["group"] == "needs_review"}
    failed = {i["file_path"] for i in json.loads(listed.stdout) if i["group"] == "failed_validation"}
    before = {p: r["ai_metadata_status"] for p, r in rows(db).items()}
    approved = run("approve", "--db", db, "-", input=listed.stdout)
    assert approved.returncode == 1  # the failed ones have nothing to approve: refused by name
    assert f"approve: {len(wanted)} files approved" in approved.stderr
    assert f"{len(failed)} refused (failed_validation: no valid metadata: " in approved.stderr
    after = {p: r["ai_metadata_status"] for p, r in rows(db).items()}
    assert {p for p, s in after.items() if s == "approved"} == wanted
    assert {p: s for p, s in after.items() if p not in wanted} == {p: s for p, s in before.items() if p not in wanted}
    again = run("approve", "--db", db, *sorted(wanted)[:1])
    assert again.returncode == 0 and "0 files approved, 1 already were" in again.stderr
    by_filter = run("approve", "--db", db, "--min-confidence", "0.9")
    assert by_filter.returncode == 0
    confident = {p for p, r in rows(db).items() if (r["ai_confidence_score"] or 0) >= 0.9}
    assert confident - wanted and all(status(db, p) == "approved" for p in confident)
    nothing = run("approve", "--db", db)
    assert nothing.returncode == 2 and "name the files to approve" in nothing.stderr


def test_show_prints_one_file_with_its_history(reviewed):
    db = reviewed
    path = sorted(p for p, r in rows(db).items() if r["ai_metadata_status"] == "needs_review"
                  and "the model gave no confidence_score" in r["error_message"])[0]
    name = path.rsplit("/", 1)[1]
    shown = run("show", "--db", db, name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(path + "\n  status      needs_review")
    assert "the model gave no confidence_score" in shown.stdout and "confidence_score was missing" in shown.stdout
    assert "versions    1 (newest first)" in shown.stdout and "run r  decided needs_review, stored needs_review" in shown.stdout
    data = json.loads(run("show", "--db", db, "--json", path).stdout)
    assert data["status"] == "needs_review" and len(data["versions"]) == 1 and data["results"][0]["run_name"] == "r"
    assert len(data["metadata"]["primary_topics"]) == 8 and data["repairs"]
    missing = run("show", "--db", db, "no-such-file.txt")
    assert missing.returncode == 1 and "no-such-file.txt: not in the database" in missing.stderr


def test_requeue_sends_files_back_and_resets_attempts(emulator, reviewed, runs_dir):
    db = reviewed
    skipped = {p for p, r in rows(db).items() if r["ai_metadata_status"] == "skipped"}
    failed = {p for p, r in rows(db).items() if r["ai_metadata_status"] == "failed_validation"}
    result = run("requeue", "--db", db, "--status", "skipped", "--status", "failed_validation")
    assert result.returncode == 0 and f"requeue: {len(skipped | failed)} files back in the queue" in result.stderr
    assert all(status(db, p) == "pending" for p in skipped | failed)
    assert query(db, "SELECT COUNT(*) FROM objbatch_files WHERE attempts > 0") == [(0,)]
    selected = {r["file_path"] for r in jsonl(run("select-pending", "--db", db).stdout)}
    assert skipped | failed <= selected
    approved = next(p for p, r in rows(db).items() if r["ai_metadata_status"] == "needs_review")
    run("approve", "--db", db, approved)
    refused = run("requeue", "--db", db, approved)
    assert refused.returncode == 1 and "add --include-approved" in refused.stderr and status(db, approved) == "approved"
    assert run("requeue", "--db", db, "--include-approved", approved).returncode == 0 and status(db, approved) == "pending"


def test_export_csv_round_trips_the_stored_metadata(reviewed, tmp_path):
    db = reviewed
    written = run("export-metadata", "--db", db, "--csv", "-o", tmp_path / "out.csv")
    assert written.returncode == 0 and written.stdout == ""
    stored = current(db)
    table = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert {r["file_path"] for r in table} == set(stored)
    for row in table:
        meta = stored[row["file_path"]]
        rebuilt = {"category": row["category"], "difficulty": row["difficulty"],
                   "primary_topics": json.loads(row["primary_topics"]), "topic_aspects": json.loads(row["topic_aspects"]),
                   "semantic_description": {"summary": row["summary"], "key_arguments": json.loads(row["key_arguments"]),
                                            "philosophical_positions": json.loads(row["philosophical_positions"])},
                   "confidence_score": float(row["confidence_score"])}
        assert rebuilt == meta
    as_json = json.loads(run("export-metadata", "--db", db, "--json").stdout)
    assert as_json == jsonl(run("export-metadata", "--db", db, "--nl").stdout)
    only = jsonl(run("export-metadata", "--db", db, "--nl", "--status", "needs_review").stdout)
    assert only and {r["status"] for r in only} == {"needs_review"}
    assert make("export", f"DB={db}", "FORMAT=nl").stdout == run("export-metadata", "--db", db, "--nl").stdout


# ---------------------------------------------------------------- unattended

def test_cron_says_what_it_did_in_its_log(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=600)
    cron = ["--db", db, "--runs", runs_dir, "--set", "POLL=0.1"]
    assert run("batch-cron", *cron, env=emulator.env).returncode == 75
    emulator.release()
    assert run("batch-cron", *cron, env=emulator.env).returncode == 0
    lines = (runs_dir / "cron.log").read_text().splitlines()
    assert len(lines) == 3, lines
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run cron-\S+ still running: job \S+ QUEUED 0/\d+$", lines[0])
    assert re.search(r"run cron-\S+ applied: \d+ extracted", lines[1])
    assert lines[2].endswith("nothing pending: no new run")


def test_without_a_keyring_the_missing_key_message_says_use_the_environment(emulator, tmp_path):
    from conftest import request_lines

    env = {k: v for k, v in emulator.env.items() if k != "MISTRAL_API_KEY"}
    headless = run("batch-submit", "--run-name", "k", input=request_lines(1), env=env)
    assert "set MISTRAL_API_KEY (this machine has no usable keyring" in headless.stderr
    with_keyring = {**env, "PYTHON_KEYRING_BACKEND": "keyring_backend.EnvKeyring", "PYTHONPATH": str(ROOT / "tests"),
                    "OBJBATCH_TEST_KEYRING": ""}
    desktop = run("batch-submit", "--run-name", "k", input=request_lines(1), env=with_keyring)
    assert "or store it in the keyring with 'make key' (bin/set-key)" in desktop.stderr


def test_review_table_or_csv_piped_into_approve(reviewed):
    db = reviewed
    before = {p: r["ai_metadata_status"] for p, r in rows(db).items()}
    table = run("approve", "--db", db, "-", input=run("review", "--db", db).stdout)
    assert table.returncode == 1 and "is a line of review's table, not a path; pipe review --nl" in table.stderr
    assert {p: r["ai_metadata_status"] for p, r in rows(db).items()} == before
    listed = run("review", "--db", db, "--csv")
    wanted = {r["file_path"] for r in csv.DictReader(io.StringIO(listed.stdout)) if r["group"] == "needs_review"}
    approved = run("approve", "--db", db, "-", input=listed.stdout)
    assert f"approve: {len(wanted)} files approved" in approved.stderr
    assert {p for p, r in rows(db).items() if r["ai_metadata_status"] == "approved"} == wanted


def test_export_output_file_edges(reviewed, tmp_path):
    db = reviewed
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    out.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(out)
    assert run("export-metadata", "--db", db, "--csv", "-o", link).returncode == 0
    assert link.is_symlink() and (out.stat().st_mode & 0o777) == 0o640 and out.read_text().startswith("file_path,")
    fresh = tmp_path / "fresh.json"
    assert run("export-metadata", "--db", db, "-o", fresh).returncode == 0
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert run("export-metadata", "--db", db, "-o", "/dev/null").returncode == 0
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    for target, code, message in [("", 2, "-o needs a file name (or - for stdout)"),
                                  (tmp_path, 2, f"-o {tmp_path} is a folder; give a file name in it"),
                                  ("/proc/nope.json", 1, "cannot write /proc/nope.json: ")]:
        result = run("export-metadata", "--db", db, "-o", target)
        assert result.returncode == code and result.stderr.startswith(f"export-metadata: error: {message}"), \
            result.stderr


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
