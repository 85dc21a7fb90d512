"""batch-submit, batch-wait and batch-fetch as a user runs them, against the emulator over HTTP."""

from __future__ import annotations

import json
import os

import pytest

from conftest import Emulator, jsonl, request_lines, run, wait_until


def submit(emulator, tmp_path, requests: str, *args, env=None, run_name="r1"):
    return run("batch-submit", "--run-name", run_name, "--record-dir", tmp_path / "records", *args,
               input=requests, env=env or emulator.env)


def test_submit_wait_fetch_by_hand(emulator, tmp_path):
    submitted = submit(emulator, tmp_path, request_lines(12))
    assert submitted.returncode == 0, submitted.stderr
    record = json.loads(submitted.stdout)
    assert record["request_count"] == 12 and len(record["jobs"]) == 1
    assert record["jobs"][0]["custom_ids"] == [f"r{i}" for i in range(12)]
    (tmp_path / "job.json").write_text(submitted.stdout)
    waited = run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env)
    assert waited.returncode == 0, waited.stderr
    assert jsonl(waited.stdout)[0]["status"] == "SUCCESS"
    assert "SUCCESS 12/12 (100%) done, 12 succeeded, 0 failed" in waited.stderr
    fetched = run("batch-fetch", tmp_path / "job.json", env=emulator.env)
    assert fetched.returncode == 0, fetched.stderr
    results = jsonl(fetched.stdout)
    assert sorted(r["custom_id"] for r in results) == sorted(f"r{i}" for i in range(12))
    assert all(r["ok"] and r["usage"]["total_tokens"] > 0 and r["model"] == "mistral-small-2603" for r in results)
    assert json.loads(results[0]["content"])["category"] == "cultural_commentary"
    created = emulator.record()["jobs_created"][0]
    assert created["metadata"]["objbatch_run_name"] == "r1"
    assert created["metadata"]["objbatch_run_id"] == record["run_id"] and created["inline"] is True


@pytest.mark.parametrize("text, message", [
    ('{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n\nnot json\n',
     "request line 3 is not valid JSON"),
    ('{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n'
     '{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "y"}]}}\n',
     "request line 2: custom_id 'a' repeats line 1; custom_ids must be unique"),
    ('{"custom_id": "", "body": {"messages": []}}\n', "request line 1 has no custom_id"),
    ('{"custom_id": "b", "body": {"messages": []}}\n', "request line 1 (custom_id 'b') has no body with messages"),
    ('[1, 2]\n', "request line 1 is not a JSON object"),
])
def test_submit_names_the_bad_line_and_creates_nothing(emulator, tmp_path, text, message):
    result = submit(emulator, tmp_path, text)
    assert result.returncode == 1
    assert result.stderr.startswith(f"batch-submit: error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert emulator.record()["jobs_created"] == []


def test_no_key_is_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MISTRAL_API_KEY"}
    result = run("batch-submit", "--run-name", "x", input=request_lines(1), env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == ("batch-submit: error: no Mistral API key: set MISTRAL_API_KEY (this machine "
                                     "has no usable keyring for a stored key)")


def test_the_key_never_appears_in_output_or_files(emulator, tmp_path):
    secret = "sk-" + "Z" * 30
    bad = submit(emulator, tmp_path, request_lines(2), env={**emulator.env, "MISTRAL_API_KEY": secret})
    assert bad.returncode == 1 and "refused the API key" in bad.stderr
    good = submit(emulator, tmp_path, request_lines(2), "--verbose")
    everything = bad.stdout + bad.stderr + good.stdout + good.stderr + "".join(
        p.read_text() for p in (tmp_path / "records").glob("*"))
    assert secret not in everything and emulator.env["MISTRAL_API_KEY"] not in everything


def test_resubmitting_the_same_run_never_creates_a_second_job(emulator, tmp_path):
    first = submit(emulator, tmp_path, request_lines(5))
    again = submit(emulator, tmp_path, request_lines(5))
    assert again.returncode == 0 and "already submitted" in again.stderr
    assert json.loads(again.stdout)["jobs"][0]["job_id"] == json.loads(first.stdout)["jobs"][0]["job_id"]
    for record in (tmp_path / "records").glob("*.json"):
        record.unlink()  # the record is lost: the job is found by its run id in the service's list
    recovered = submit(emulator, tmp_path, request_lines(5))
    assert recovered.returncode == 0 and "found in the service's job list" in recovered.stderr
    assert json.loads(recovered.stdout)["jobs"][0]["job_id"] == json.loads(first.stdout)["jobs"][0]["job_id"]
    assert len(emulator.record()["jobs_created"]) == 1
    other = submit(emulator, tmp_path, request_lines(5), run_name="r2")
    assert other.returncode == 0 and len(emulator.record()["jobs_created"]) == 2


def test_killed_between_creation_and_record_then_rerun(emulator, tmp_path):
    killed = submit(emulator, tmp_path, request_lines(4), env={**emulator.env, "OBJBATCH_KILL_AT": "after-create"})
    assert killed.returncode == -9
    assert len(emulator.record()["jobs_created"]) == 1
    rerun = submit(emulator, tmp_path, request_lines(4))
    assert rerun.returncode == 0 and "found in the service's job list" in rerun.stderr
    assert len(emulator.record()["jobs_created"]) == 1


def test_large_input_is_uploaded_and_split(emulator, tmp_path):
    result = submit(emulator, tmp_path, request_lines(10), "--inline-max-requests", "2",
                    "--max-requests-per-job", "4")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [j["request_count"] for j in record["jobs"]] == [4, 4, 2]
    assert all(j["input_file"] for j in record["jobs"][:2]) and record["jobs"][2]["input_file"] is None
    emu = emulator.record()
    assert len(emu["uploads"]) == 2 and emu["uploads"][0]["purpose"] == "batch"
    assert [c["metadata"]["objbatch_part"] for c in emu["jobs_created"]] == ["1/3", "2/3", "3/3"]
    (tmp_path / "job.json").write_text(result.stdout)
    assert run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env).returncode == 0
    fetched = jsonl(run("batch-fetch", tmp_path / "job.json", env=emulator.env).stdout)
    assert sorted(r["custom_id"] for r in fetched) == sorted(f"r{i}" for i in range(10))


def test_wait_times_out_with_75_and_resumes(emulator, tmp_path):
    emulator.pace(queue_seconds=600)  # held until released
    (tmp_path / "job.json").write_text(submit(emulator, tmp_path, request_lines(3)).stdout)
    early = run("batch-wait", "--poll", "0.2", "--timeout", "0.5", tmp_path / "job.json", env=emulator.env)
    assert early.returncode == 75
    assert "is still QUEUED" in early.stderr and "rerun the same command" in early.stderr
    fetch_early = run("batch-fetch", tmp_path / "job.json", env=emulator.env)
    assert fetch_early.returncode == 75 and "run batch-wait first" in fetch_early.stderr
    emulator.release()
    later = run("batch-wait", "--poll", "0.2", tmp_path / "job.json", env=emulator.env)
    assert later.returncode == 0


def test_wait_rides_out_429_and_503(emulator, tmp_path):
    (tmp_path / "job.json").write_text(submit(emulator, tmp_path, request_lines(3)).stdout)
    emulator.faults(http_storm=3, http_status=503, retry_after=0.1)
    result = run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("HTTP 503") == 3 and "retrying in 0.1s" in result.stderr
    emulator.faults(http_rate=0.3)
    fetched = run("batch-fetch", tmp_path / "job.json", env=emulator.env)
    assert fetched.returncode == 0 and len(jsonl(fetched.stdout)) == 3


def test_fetch_classifies_every_kind_of_result(emulator, tmp_path):
    emulator.faults(seed=2, error_in_output=0.2, error_in_error_file=0.2, missing=0.15, shuffle=True)
    (tmp_path / "job.json").write_text(submit(emulator, tmp_path, request_lines(40)).stdout)
    run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env)
    result = run("batch-fetch", tmp_path / "job.json", "--raw-dir", tmp_path / "raw", env=emulator.env)
    results = jsonl(result.stdout)
    assert sorted(r["custom_id"] for r in results) == sorted(f"r{i}" for i in range(40))
    failed = [r for r in results if not r["ok"]]
    assert {r["status_code"] for r in failed} == {429, 500, None}
    assert any("Rate limit exceeded" in r["error"] for r in failed)
    assert any(r["error"] == "no result returned (job ended SUCCESS)" for r in failed)
    assert all(r["error"].startswith("HTTP ") for r in failed if r["status_code"])
    assert len(list((tmp_path / "raw").glob("*.jsonl"))) == 2
    downloads_before = emulator.record()["calls"]
    again = run("batch-fetch", tmp_path / "job.json", "--raw-dir", tmp_path / "raw", env=emulator.env)
    assert jsonl(again.stdout) == results
    assert emulator.record()["calls"] - downloads_before == 1  # one status call; the files came from raw/


@pytest.mark.parametrize("status", ["FAILED", "TIMEOUT_EXCEEDED", "CANCELLED"])
def test_fetch_harvests_every_terminal_status(emulator, tmp_path, status):
    if status == "CANCELLED":
        emulator.pace(hold_at=0.5)  # the job stops half done until cancelled
    else:
        emulator.faults(job_status=status, partial=0.5)
    record = json.loads(submit(emulator, tmp_path, request_lines(10)).stdout)
    (tmp_path / "job.json").write_text(json.dumps(record))
    if status == "CANCELLED":  # cancel once it is held half done
        job_id, sdk = record["jobs"][0]["job_id"], emulator.sdk()
        wait_until(lambda: sdk.batch.jobs.get(job_id=job_id).completed_requests == 5, "half the job done")
        sdk.batch.jobs.cancel(job_id=job_id)
    waited = run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env)
    assert waited.returncode == 0 and f"ended {status}" in waited.stderr
    results = jsonl(run("batch-fetch", tmp_path / "job.json", env=emulator.env).stdout)
    assert len(results) == 10
    ok = [r for r in results if r["ok"]]
    missing = [r for r in results if not r["ok"]]
    assert 0 < len(ok) < 10
    assert all(r["error"] == f"no result returned (job ended {status})" for r in missing)
    assert all(r["attempted"] is False and r["missing"] is True for r in missing)  # none of them ran


def test_fetch_reports_duplicate_and_foreign_lines(emulator, tmp_path):
    (tmp_path / "job.json").write_text(submit(emulator, tmp_path, request_lines(3)).stdout)
    run("batch-wait", "--poll", "0.05", tmp_path / "job.json", env=emulator.env)
    job = emulator.sdk().batch.jobs.get(job_id=json.loads((tmp_path / "job.json").read_text())["jobs"][0]["job_id"])
    raw = tmp_path / "raw"
    assert run("batch-fetch", tmp_path / "job.json", "--raw-dir", raw, env=emulator.env).returncode == 0
    kept = raw / f"{job.output_file}.jsonl"
    lines = kept.read_text().splitlines()
    failure = {"custom_id": "r0", "response": {"status_code": 500, "body": None}, "error": "boom"}
    foreign = {"custom_id": "zz", "response": {"status_code": 200, "body": None}, "error": None}
    kept.write_text("\n".join([json.dumps(failure)] + lines + [lines[1], json.dumps(foreign), "{broken"]) + "\n")
    result = run("batch-fetch", tmp_path / "job.json", "--raw-dir", raw, env=emulator.env)
    assert result.returncode == 0
    assert "2 duplicate result lines (kept one per custom_id, a success first)" in result.stderr
    assert "1 result lines for custom_ids this job never sent" in result.stderr
    assert "1 result lines were not valid JSON" in result.stderr
    results = jsonl(result.stdout)
    assert sorted(r["custom_id"] for r in results) == ["r0", "r1", "r2"] and all(r["ok"] for r in results)


def test_the_key_comes_from_the_keyring_when_the_environment_has_none(emulator, tmp_path):
    from conftest import ROOT, TEST_KEY

    env = {k: v for k, v in emulator.env.items() if k != "MISTRAL_API_KEY"}
    env.update({"PYTHON_KEYRING_BACKEND": "keyring_backend.EnvKeyring", "PYTHONPATH": str(ROOT / "tests"),
                "OBJBATCH_TEST_KEYRING": TEST_KEY})
    result = submit(emulator, tmp_path, request_lines(2), env=env)
    assert result.returncode == 0, result.stderr
    assert len(emulator.record()["jobs_created"]) == 1


def test_a_service_down_longer_than_the_retry_budget_exits_75(emulator, tmp_path):
    (tmp_path / "job.json").write_text(submit(emulator, tmp_path, request_lines(2)).stdout)
    emulator.stop()
    result = run("batch-wait", tmp_path / "job.json", env={**emulator.env, "OBJBATCH_RETRY_SECONDS": "1"})
    assert result.returncode == 75
    assert "cannot connect to the service" in result.stderr and "Rerun the same command to resume" in result.stderr


def test_a_run_cannot_be_submitted_again_with_other_requests(emulator, tmp_path):
    assert submit(emulator, tmp_path, request_lines(3)).returncode == 0
    changed = submit(emulator, tmp_path, request_lines(4))
    assert changed.returncode == 1
    assert "run r1 was already submitted with other requests" in changed.stderr
    assert len(emulator.record()["jobs_created"]) == 1


def test_an_upload_retried_after_503_sends_the_whole_file(emulator, tmp_path):
    emulator.faults(http_storm=1, http_status=503, retry_after=0.05, http_storm_path="POST /v1/files")
    result = submit(emulator, tmp_path, request_lines(6), "--inline-max-requests", "1")
    assert "upload: HTTP 503" in result.stderr
    assert result.returncode == 0 and "HTTP 503" in result.stderr
    upload = emulator.record()["uploads"][0]
    assert upload["bytes"] == len(request_lines(6).encode())  # the lines as given, each sent once, whole
    assert emulator.record()["jobs_created"][0]["custom_ids"] == [f"r{i}" for i in range(6)]


def test_the_default_run_name_follows_the_requests_the_model_and_the_service(emulator, tmp_path):
    records = ("--record-dir", tmp_path / "records")
    first = run("batch-submit", *records, input=request_lines(3), env=emulator.env)
    assert first.returncode == 0, first.stderr
    shuffled = "".join(reversed(request_lines(3).splitlines(keepends=True)))
    again = run("batch-submit", *records, input=shuffled, env=emulator.env)
    assert again.returncode == 0 and "already submitted" in again.stderr
    assert json.loads(again.stdout)["jobs"] == json.loads(first.stdout)["jobs"]
    large = run("batch-submit", *records, "--model", "mistral-large-latest", input=request_lines(3), env=emulator.env)
    assert large.returncode == 0 and "created for 3 requests" in large.stderr
    assert json.loads(large.stdout)["run_name"] != json.loads(first.stdout)["run_name"]
    other = Emulator(tmp_path / "other", [])
    try:
        elsewhere = run("batch-submit", *records, input=request_lines(3), env={**emulator.env, **other.env})
        assert elsewhere.returncode == 0 and len(other.record()["jobs_created"]) == 1
    finally:
        other.stop()
    assert len(emulator.record()["jobs_created"]) == 2


def test_a_named_run_is_followed_only_with_its_model_and_service(emulator, tmp_path):
    assert submit(emulator, tmp_path, request_lines(2)).returncode == 0
    large = submit(emulator, tmp_path, request_lines(2), "--model", "mistral-large-latest")
    assert large.returncode == 1
    assert "run r1 was submitted with model mistral-small-latest, not mistral-large-latest" in large.stderr
    moved = submit(emulator, tmp_path, request_lines(2), env={**emulator.env, "MISTRAL_SERVER_URL": "http://127.0.0.1:9"})
    assert moved.returncode == 1
    assert f"run r1 was submitted to {emulator.url}, not http://127.0.0.1:9: set MISTRAL_SERVER_URL" in moved.stderr
    assert len(emulator.record()["jobs_created"]) == 1


def test_wait_timeout_also_bounds_retrying_a_service_that_is_gone(emulator, tmp_path):
    (tmp_path / "job.json").write_text(submit(emulator, tmp_path, request_lines(2)).stdout)
    emulator.stop()
    # the default retry budget is 15 minutes; --timeout 0 ("look once") gives up after a few seconds
    result = run("batch-wait", "--timeout", "0", tmp_path / "job.json", env=emulator.env, timeout=60)
    assert result.returncode == 75 and "Rerun the same command to resume" in result.stderr


def test_a_server_url_ending_in_v1_is_one_line(emulator, tmp_path):
    result = submit(emulator, tmp_path, request_lines(1), env={**emulator.env, "MISTRAL_SERVER_URL": emulator.url + "/v1/"})
    assert result.returncode == 1
    assert result.stderr.strip().endswith("ends in /v1 (" + emulator.url + "/v1); give the service's root, e.g. "
                                          "https://api.mistral.ai (the /v1 of each call is added)")
    assert emulator.record()["jobs_created"] == []
