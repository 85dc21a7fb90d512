"""The real service as documented (issue 16): dated prices, cost from the usage the service reports, the
model that answered, the real limits, results that expire, reasoning models and cleanup at the service.
Everything against the emulator with the real SDK over HTTP."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date

import pytest

from conftest import jsonl, make, query, request_lines, run

PRICES = json.loads((__import__("conftest").ROOT / "schemas" / "prices.json").read_text())


def batch(emu, db, runs, *extra, env=None):
    return make("batch", f"DB={db}", f"RUNS={runs}", "POLL=0.05", *extra, env=env or emu.env)


def ledger_rows(db, sql, *params) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def usd(model: str, prompt: int, cached: int, output: int) -> float:
    """The batch price of what the service reported, from schemas/prices.json as documented."""
    entry = PRICES["models"][PRICES["models"][model].get("resolves_to", model)]
    paid_input = (prompt - cached) * entry["input"] + cached * entry["input"] * entry["cached_input_factor"]
    return (paid_input + output * entry["output"]) * entry["batch_factor"] / 1_000_000


# ---------------------------------------------------------------- prices as dated data

def test_prices_are_dated_and_the_estimate_uses_them(tmp_path):
    """The documented prices: Small 4 at $0.15 / $0.60 synchronous, so $0.075 / $0.30 batch per M tokens."""
    small = PRICES["models"]["mistral-small-latest"]
    assert small["resolves_to"] == "mistral-small-2603"
    dated = PRICES["models"]["mistral-small-2603"]
    assert (dated["input"], dated["output"], dated["batch_factor"]) == (0.15, 0.6, 0.5)
    assert PRICES["models"]["mistral-large-2512"]["input"] == 0.5 and PRICES["models"]["mistral-medium-3-5"]["output"] == 7.5
    figures = run("estimate", "--json", input=request_lines(3))
    assert figures.returncode == 0, figures.stderr
    data = json.loads(figures.stdout)
    expected = (data["input_tokens"] * 0.075 + data["output_tokens"] * 0.30) / 1_000_000
    assert data["batch_usd"] == pytest.approx(expected, abs=1e-6)
    assert data["sync_usd"] == pytest.approx(2 * expected, abs=1e-6)
    assert data["resolves_to"] == "mistral-small-2603"
    table = run("estimate", input=request_lines(3))
    assert "prices as of 2026-08-21 (mistralai/platform-docs-public@222f4ba9 model cards)" in table.stdout
    stale = (date.today() - date.fromisoformat(PRICES["as_of"])).days > PRICES["stale_after_days"]
    assert ("days old (as of 2026-08-21); check Mistral's current prices" in table.stderr) == stale
    assert table.returncode == 0  # stale prices are said, never refused


def test_stale_prices_are_said_in_one_line_only_after_90_days():
    from objbatch import costs

    as_of = date.fromisoformat(PRICES["as_of"])
    assert costs.stale_note(as_of) is None
    assert costs.stale_note(date.fromordinal(as_of.toordinal() + 90)) is None
    note = costs.stale_note(date.fromordinal(as_of.toordinal() + 91))
    assert note and "91 days old" in note and "\n" not in note


def test_a_retired_model_is_refused_before_paying_naming_its_replacement(emulator, library, runs_dir, tmp_path):
    _, db = library
    refused = batch(emulator, db, runs_dir, "MODEL=open-mistral-nemo", "ALLOW_UNPRICED=1")
    assert refused.returncode != 0
    assert "model open-mistral-nemo was retired on 2026-07-31; use its replacement ministral-8b-latest" in refused.stderr
    assert emulator.record()["jobs_created"] == [] and emulator.record()["uploads"] == []
    assert not query(db, "SELECT name FROM sqlite_master WHERE name = 'objbatch_claims'") or \
        not query(db, "SELECT * FROM objbatch_claims")
    by_hand = run("batch-submit", "--model", "open-mistral-nemo", "--record-dir", tmp_path / "records",
                  input=request_lines(2), env=emulator.env)
    assert by_hand.returncode == 1 and "retired on 2026-07-31" in by_hand.stderr
    assert run("estimate", "--model", "open-mistral-nemo-2407", input=request_lines(1)).returncode == 1


# ---------------------------------------------------------------- the real limits

def tiny_requests(n: int) -> str:
    return "".join(f'{{"custom_id":"c{i}","body":{{"messages":[{{"role":"user","content":"x"}}]}}}}\n'
                   for i in range(n))


@pytest.mark.slow
def test_a_100001_request_run_splits_in_two_jobs(emulator, tmp_path):
    emulator.pace(queue_seconds=1000)  # the jobs need not run: what was created is the point
    submitted = run("batch-submit", "--run-name", "big", "--record-dir", tmp_path / "records", "-o",
                    tmp_path / "job.json", input=tiny_requests(100_001), env=emulator.env, timeout=600)
    assert submitted.returncode == 0, submitted.stderr
    record = json.loads((tmp_path / "job.json").read_text())
    assert [(e["part"], e["request_count"]) for e in record["jobs"]] == [("1/2", 100_000), ("2/2", 1)]
    created = emulator.record()["jobs_created"]
    assert [len(j["custom_ids"]) for j in created] == [100_000, 1]
    assert [j["inline"] for j in created] == [False, True]  # 100,000 is uploaded; 1 request goes inline


def test_inline_only_below_10000_and_the_bounds_are_checked_before_anything_is_sent(emulator, tmp_path):
    records = ("--record-dir", tmp_path / "records")
    for option, value in (("--inline-max-requests", "10000"), ("--timeout-hours", "169"),
                          ("--timeout-hours", "0"), ("--max-requests-per-job", "100001")):
        refused = run("batch-submit", option, value, *records, input=request_lines(2), env=emulator.env)
        assert refused.returncode == 2 and option in refused.stderr, refused.stderr
    assert emulator.record()["uploads"] == [] and emulator.record()["jobs_created"] == []
    from objbatch import client
    from objbatch.common import Failure

    with pytest.raises(Failure, match="metadata key 'k{33}' must have 1-32"):
        client.check_job("m", {"k" * 33: "v"}, 24)
    with pytest.raises(Failure, match="1-512 characters"):
        client.check_job("m", {"k": "v" * 513}, 24)
    with pytest.raises(Failure, match="timeout_hours must be 1 to 168"):
        client.check_job("m", {"k": "v"}, 169)
    bad = make("batch", "TIMEOUT_HOURS=200", env=emulator.env)
    assert bad.returncode != 0 and "TIMEOUT_HOURS must be a whole number from 1 to 168" in bad.stderr
    # 9,999 requests still go inline; the part is one job of the service's own maximum
    ok = run("batch-submit", "--run-name", "edge", *records, "-o", tmp_path / "job.json", input=tiny_requests(9_999),
             env=emulator.env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert emulator.record()["jobs_created"][0]["inline"] is True


@pytest.mark.emulator
def test_the_emulator_refuses_what_the_service_refuses(emulator):
    from mistralai.client import errors

    sdk = emulator.sdk()
    requests = [{"custom_id": str(i), "body": {"messages": [{"role": "user", "content": "x"}]}} for i in range(10_000)]
    cases = [dict(requests=requests),
             dict(requests=requests[:1], timeout_hours=169),
             dict(requests=requests[:1], metadata={"k" * 33: "v"}),
             dict(requests=requests[:1], metadata={"k": "v" * 513})]
    for case in cases:
        with pytest.raises(errors.SDKError) as refused:
            sdk.batch.jobs.create(endpoint="/v1/chat/completions", model="mistral-small-latest", **case)
        assert refused.value.status_code == 422
    assert emulator.record()["jobs_created"] == []


# ---------------------------------------------------------------- provenance and cost

def test_the_resolved_model_is_stored_beside_the_alias(emulator, library, runs_dir):
    _, db = library
    done = batch(emulator, db, runs_dir, "NAME=p1")
    assert done.returncode == 0, done.stderr
    versions = ledger_rows(db, "SELECT model, resolved_model FROM file_metadata_ai")
    assert versions and {(r["model"], r["resolved_model"]) for r in versions} == \
        {("mistral-small-latest", "mistral-small-2603")}
    assert {r[0] for r in query(db, "SELECT resolved_model FROM objbatch_jobs")} == {"mistral-small-2603"}
    applied = query(db, "SELECT model, resolved_model FROM objbatch_applied WHERE resolved_model IS NOT NULL")
    assert applied and set(applied) == {("mistral-small-latest", "mistral-small-2603")}
    path = query(db, "SELECT file_path FROM file_metadata_ai LIMIT 1")[0][0]
    shown = run("show", "--db", db, path)
    assert "mistral-small-latest (answered by mistral-small-2603)" in shown.stdout
    exported = json.loads(run("export-metadata", "--db", db, "--json").stdout)
    assert {(r["model"], r["resolved_model"]) for r in exported} == {("mistral-small-latest", "mistral-small-2603")}


def test_cached_prompt_tokens_are_reported_and_costed_at_their_price(emulator, library, runs_dir):
    _, db = library
    assert batch(emulator, db, runs_dir, "NAME=c1").returncode == 0
    job = ledger_rows(db, "SELECT * FROM objbatch_jobs")[0]
    assert 0 < job["cached_tokens"] < job["prompt_tokens"]  # every request but the first reuses the prefix
    stats = json.loads(run("stats", "--db", db, "--json").stdout)
    expected = usd("mistral-small-latest", job["prompt_tokens"], job["cached_tokens"], job["completion_tokens"])
    assert stats["runs"][0]["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert stats["by_model"] == [{"model": "mistral-small-2603", "asked_as": ["mistral-small-latest"],
                                  "prompt_tokens": job["prompt_tokens"], "cached_tokens": job["cached_tokens"],
                                  "completion_tokens": job["completion_tokens"], "reasoning_tokens": 0,
                                  "cost_usd": pytest.approx(expected, abs=1e-6)}]
    table = run("stats", "--db", db).stdout
    assert "prices as of 2026-08-21" in table and "mistral-small-2603" in table


# ---------------------------------------------------------------- reasoning models

def test_a_reasoning_answer_is_parsed_from_its_text_and_costed(emulator, library, runs_dir):
    _, db = library
    estimate = make("estimate", f"DB={db}", f"RUNS={runs_dir}", "MODEL=mistral-medium-latest", env=emulator.env)
    assert "(2,450 a request, the default for a reasoning model: 450 + 2,000 reasoning)" in estimate.stdout
    done = batch(emulator, db, runs_dir, "NAME=m1", "MODEL=mistral-medium-latest")
    assert done.returncode == 0, done.stderr
    sent = jsonl((runs_dir / "m1" / "requests.jsonl").read_text())
    assert {r["body"]["max_tokens"] for r in sent} == {16_384} and "reasoning_effort" not in sent[0]["body"]
    raw = [json.loads(line) for path in (runs_dir / "m1" / "raw").glob("*.jsonl") for line in path.open()]
    content = next(r["response"]["body"]["choices"][0]["message"]["content"] for r in raw if r["error"] is None)
    assert [chunk["type"] for chunk in content] == ["thinking", "text"]
    stored = [r[0] for r in query(db, "SELECT ai_metadata_json FROM files WHERE ai_metadata_json IS NOT NULL")]
    assert stored and all("the text mostly discusses" not in text for text in stored)  # reasoning never stored
    assert all(json.loads(text)["category"] for text in stored)
    job = ledger_rows(db, "SELECT * FROM objbatch_jobs")[0]
    assert job["resolved_model"] == "mistral-medium-3-5" and 0 < job["reasoning_tokens"] < job["completion_tokens"]
    cost = json.loads(run("stats", "--db", db, "--json").stdout)["runs"][0]["cost_usd"]
    assert cost == pytest.approx(usd("mistral-medium-latest", job["prompt_tokens"], job["cached_tokens"],
                                     job["completion_tokens"]), abs=1e-6)
    again = make("estimate", f"DB={db}", f"RUNS={runs_dir}", "MODEL=mistral-medium-latest", env=emulator.env)
    assert "the average of this database's past runs of mistral-medium-latest" in again.stdout or \
        "no pending files" in again.stdout


def test_reasoning_effort_is_passed_only_when_set_and_only_to_a_model_that_takes_it(emulator, library, runs_dir):
    _, db = library
    refused = batch(emulator, db, runs_dir, "MODEL=mistral-large-latest", "REASONING_EFFORT=high")
    assert refused.returncode != 0 and "does not take a reasoning effort" in refused.stderr
    wrong = batch(emulator, db, runs_dir, "MODEL=mistral-medium-latest", "REASONING_EFFORT=extreme")
    assert wrong.returncode != 0 and "not one of none, minimal, low, medium, high, xhigh" in wrong.stderr
    done = batch(emulator, db, runs_dir, "NAME=e1", "MODEL=mistral-medium-latest", "REASONING_EFFORT=none")
    assert done.returncode == 0, done.stderr
    sent = jsonl((runs_dir / "e1" / "requests.jsonl").read_text())
    assert {r["body"]["reasoning_effort"] for r in sent} == {"none"} and {r["body"]["max_tokens"] for r in sent} == {2048}
    assert ledger_rows(db, "SELECT reasoning_tokens FROM objbatch_jobs")[0][0] == 0


# ---------------------------------------------------------------- results that expire

def test_an_expired_result_requeues_its_files_with_no_attempt_spent_and_the_budget_holds(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=1000)
    started = batch(emulator, db, runs_dir, "NAME=x1", "TIMEOUT=0")
    assert "still running" in started.stderr
    sent = query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE run_name = 'x1' AND custom_id IS NOT NULL")[0][0]
    emulator.release()
    emulator._control("/_emulator/advance", {"hours": 25})  # nobody fetched it within the 24 hours
    late = batch(emulator, db, runs_dir, "NAME=x1")
    assert late.returncode == 0, late.stderr
    job_id = emulator.record()["jobs_created"][0]["id"]
    gone = [line for line in late.stderr.splitlines() if "can no longer be downloaded" in line]
    assert len(gone) == 1 and f"job {job_id} (finished " in gone[0] and "no attempt spent" in gone[0]
    assert query(db, "SELECT COUNT(*) FROM files WHERE ai_metadata_status = 'pending'")[0][0] >= sent
    assert query(db, "SELECT COALESCE(SUM(attempts), 0) FROM objbatch_files")[0][0] == 0
    again = make("estimate", f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)
    assert f"Requests:       {sent}" in again.stdout  # the lost files are estimated again, to be paid again
    cost = float(re.search(r"Cost:\s+\$([\d.]+)", again.stdout).group(1))
    capped = batch(emulator, db, runs_dir, "NAME=x2", f"BUDGET={cost / 2:.6f}")
    assert capped.returncode != 0 and "is over the budget" in capped.stderr
    assert len(emulator.record()["jobs_created"]) == 1  # nothing paid again silently
    emulator.pace(queue_seconds=0.05)
    assert batch(emulator, db, runs_dir, "NAME=x3", f"BUDGET={cost * 2:.6f}").returncode == 0


def test_finished_results_are_downloaded_at_once_and_old_unfetched_ones_are_warned_about(emulator, library, runs_dir):
    _, db = library
    emulator.pace(queue_seconds=1000)
    assert "still running" in batch(emulator, db, runs_dir, "NAME=w1", "TIMEOUT=0").stderr
    emulator.release()
    waited = run("batch-wait", "--poll", "0.05", "--db", db, "--raw-dir", runs_dir / "w1" / "raw",
                 runs_dir / "w1" / "job.json", env=emulator.env)
    assert waited.returncode == 0 and "its results are downloaded" in waited.stderr
    assert list((runs_dir / "w1" / "raw").glob("*.jsonl")) and \
        query(db, "SELECT fetched_at IS NOT NULL FROM objbatch_jobs")[0][0] == 1
    # had nobody fetched them, 13 hours later (the ledger's clock moved back: objbatch reads the real time)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE objbatch_jobs SET completed_at = strftime('%s', 'now') - 13 * 3600, fetched_at = NULL")
    conn.commit()
    conn.close()
    stats = run("stats", "--db", db)
    assert "finished 13 hours ago and its results are not fetched yet" in stats.stdout
    cron = run("batch-cron", "--db", db, "--runs", runs_dir, "--set", "MAX=0", env=emulator.env)
    assert "finished 13 hours ago and its results are not fetched yet" in cron.stderr
    assert "finished 13 hours ago" in (runs_dir / "cron.log").read_text() and "run w1 applied" in cron.stderr + \
        (runs_dir / "cron.log").read_text()  # then collected at once
    assert "not fetched" not in run("stats", "--db", db).stdout


# ---------------------------------------------------------------- cleanup at the service

def test_remote_files_are_deleted_after_apply_and_kept_with_keep_remote(emulator, library, runs_dir):
    _, db = library
    upload = {**emulator.env, "OBJBATCH_INLINE_MAX_REQUESTS": "0"}  # send a file, so there is an input to delete
    crashed = batch(emulator, db, runs_dir, "NAME=d1", "MAX=6",
                    env={**upload, "OBJBATCH_KILL_AT": "apply-midway"})
    assert crashed.returncode != 0
    assert emulator.record()["deleted_files"] == []  # nothing deleted before its results are in the database
    done = batch(emulator, db, runs_dir, "NAME=d1", env=upload)
    assert done.returncode == 0, done.stderr
    job = emulator.record()["jobs"][0]
    mine = {emulator.record()["uploads"][0]["id"], job["output_file"]} | ({job["error_file"]} - {None})
    assert set(emulator.record()["deleted_files"]) == mine
    assert "deleted at the service" in done.stdout
    kept = batch(emulator, db, runs_dir, "NAME=d2", "MAX=6", "KEEP_REMOTE=1", env=upload)
    assert kept.returncode == 0, kept.stderr
    assert set(emulator.record()["deleted_files"]) == mine and "kept at the service (KEEP_REMOTE=1" in kept.stdout
    emulator.faults(http_storm=10_000, http_status=503, retry_after=0.05, http_storm_path="DELETE /v1/files")
    failing = batch(emulator, db, runs_dir, "NAME=d3", "MAX=6", env=upload)  # each delete is retried 1 s here (OBJBATCH_CLEANUP_SECONDS)
    assert failing.returncode == 0, failing.stderr
    assert "Warning: could not delete file" in failing.stdout and "2 not deleted" in failing.stdout
    assert "; 1 more not tried; the service deletes them after 30 days" in failing.stdout  # no wait per file
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'd3'")[0][0] == "applied"


# ---------------------------------------------------------------- what the emulator answers

@pytest.mark.emulator
def test_the_429_body_and_headers_are_the_services(emulator):
    from mistralai.client import errors

    emulator.faults(http_storm=1, http_status=429, retry_after=1)
    with pytest.raises(errors.SDKError) as limited:
        emulator.sdk().batch.jobs.list()
    assert limited.value.status_code == 429
    assert json.loads(limited.value.body) == {"object": "error", "message": "Rate limit exceeded",
                                              "type": "rate_limited", "param": None, "code": "1300"}
    headers = {k.lower(): v for k, v in limited.value.headers.items()}
    assert headers["retry-after"] == "1" and any(k.startswith("x-ratelimit-") for k in headers)


@pytest.mark.emulator
def test_files_can_be_deleted_and_then_cannot_be_downloaded(emulator):
    from mistralai.client import errors

    sdk = emulator.sdk()
    uploaded = sdk.files.upload(file={"file_name": "r.jsonl", "content": request_lines(1).encode()}, purpose="batch")
    assert sdk.files.delete(file_id=uploaded.id).deleted is True
    with pytest.raises(errors.SDKError) as missing:
        sdk.files.download(file_id=uploaded.id)
    assert missing.value.status_code == 404
    assert emulator.record()["deleted_files"] == [uploaded.id]


def test_failure_lines_may_have_a_null_custom_id(emulator, tmp_path):
    emulator.faults(error_in_error_file=1.0, null_custom_id=1.0)
    records = ("--record-dir", tmp_path / "records")
    assert run("batch-submit", *records, "-o", tmp_path / "job.json", input=request_lines(3),
               env=emulator.env).returncode == 0
    emulator.release()
    fetched = run("batch-fetch", "--raw-dir", tmp_path / "raw", tmp_path / "job.json", env=emulator.env)
    assert fetched.returncode == 0, fetched.stderr
    raw = [json.loads(line) for path in (tmp_path / "raw").glob("*.jsonl") for line in path.open()]
    assert raw and all(line["custom_id"] is None for line in raw)
    assert "3 failure lines name no custom_id" in fetched.stderr
    results = jsonl(fetched.stdout)
    assert sorted(r["custom_id"] for r in results) == ["r0", "r1", "r2"] and not any(r["ok"] for r in results)


@pytest.mark.emulator
def test_a_reasoning_model_answers_with_thinking_then_text_and_counts_it(emulator):
    sdk = emulator.sdk()
    answer = sdk.chat.complete(model="mistral-medium-latest", messages=[
        {"role": "user", "content": "File name: MOTM_2020-01-01_Honesty.txt\n\n--- Transcript ---\nhonesty ethics"}])
    chunks = answer.choices[0].message.content
    assert [type(c).__name__ for c in chunks] == ["ThinkChunk", "TextChunk"]
    assert answer.model == "mistral-medium-3-5"
    usage = json.loads(answer.model_dump_json())["usage"]
    plain = sdk.chat.complete(model="mistral-medium-latest", reasoning_effort="none", messages=[
        {"role": "user", "content": "File name: MOTM_2020-01-01_Honesty.txt"}])
    assert isinstance(plain.choices[0].message.content, str)
    assert usage["completion_tokens"] > 0

