"""The emulator, driven by the real mistralai SDK over real HTTP: every endpoint, status and fault."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import httpx2
import pytest
from mistralai.client import errors
from mistralai.extra.batch import is_terminal

from conftest import TEST_KEY, Emulator, request_lines

MODEL = "mistral-small-latest"
pytestmark = pytest.mark.emulator


def upload(m, n=5, prefix="r"):
    return m.files.upload(file={"file_name": "in.jsonl", "content": request_lines(n, prefix).encode()},
                          purpose="batch")


def wait(m, job_id, limit=20.0):
    deadline = time.monotonic() + limit
    job = m.batch.jobs.get(job_id=job_id)
    while not is_terminal(job.status):
        assert time.monotonic() < deadline, f"job stuck in {job.status}"
        time.sleep(0.05)
        job = m.batch.jobs.get(job_id=job_id)
    return job


def lines(m, file_id):
    if not file_id:
        return []
    response = m.files.download(file_id=file_id)
    try:
        return [json.loads(x) for x in response.read().decode().splitlines() if x.strip()]
    finally:
        response.close()


def test_files_endpoints(emulator):
    m = emulator.sdk()
    up = upload(m, 3)
    assert (up.purpose, up.sample_type, up.source, up.num_lines, up.filename) == \
        ("batch", "batch_request", "upload", 3, "in.jsonl")
    got = m.files.retrieve(file_id=up.id)
    assert got.deleted is False and got.size_bytes == up.size_bytes
    listed = m.files.list(purpose="batch", sample_type=["batch_request"], search="in")
    assert listed.total == 1 and listed.data[0].id == up.id
    assert m.files.list(sample_type=["batch_result"]).total == 0
    response = m.files.download(file_id=up.id)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.read() == request_lines(3).encode()
    response.close()
    assert m.files.get_signed_url(file_id=up.id, expiry=2).url.startswith(emulator.url + f"/v1/files/{up.id}/content")
    assert m.files.delete(file_id=up.id).deleted is True
    with pytest.raises(errors.SDKError) as err:
        m.files.retrieve(file_id=up.id)
    assert err.value.status_code == 404
    assert emulator.record()["uploads"][0]["id"] == up.id


def test_auth_is_bearer_and_checked(emulator):
    with pytest.raises(errors.SDKError) as err:
        emulator.sdk("wrong-key").batch.jobs.list()
    assert err.value.status_code == 401
    raw = httpx2.get(emulator.url + "/v1/batch/jobs")  # no Authorization header at all
    assert raw.status_code == 401 and raw.headers["content-type"] == "application/json"


def test_job_from_file_runs_to_success_with_counters(emulator):
    m = emulator.sdk()
    up = upload(m, 8)
    job = m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[up.id], model=MODEL,
                              metadata={"run": "r1"})
    assert job.status == "QUEUED" and job.total_requests == 8 and job.input_files == [up.id]
    seen = {job.status}
    while not is_terminal(job.status):
        time.sleep(0.03)
        job = m.batch.jobs.get(job_id=job.id)
        seen.add(job.status)
    assert {"QUEUED", "RUNNING", "SUCCESS"} <= seen
    assert (job.completed_requests, job.succeeded_requests, job.failed_requests) == (8, 8, 0)
    assert job.error_file is None and job.started_at and job.completed_at
    output = lines(m, job.output_file)
    assert sorted(x["custom_id"] for x in output) == [f"r{i}" for i in range(8)]
    answer = json.loads(output[0]["response"]["body"]["choices"][0]["message"]["content"])
    assert {"honesty", "ethics", "reason", "values"} <= set(answer["primary_topics"])  # the words in the text
    assert "Virtue of Honesty" in answer["semantic_description"]["summary"]
    assert 0 < answer["confidence_score"] <= 1
    inline = m.batch.jobs.get(job_id=job.id, inline=True)
    assert len(inline.outputs) == 8
    record = emulator.record()
    assert record["jobs_created"][0]["custom_ids"] == [f"r{i}" for i in range(8)]
    assert record["polls"][job.id] >= 2


def test_inline_job_list_filters_cancel_and_delete(emulator):
    m = emulator.sdk()
    emulator.pace(queue_seconds=600)  # queued until cancelled, however slow this machine is
    requests = [json.loads(x) for x in request_lines(3).splitlines()]
    job = m.batch.jobs.create(endpoint="/v1/chat/completions", requests=requests, model=MODEL,
                              metadata={"objbatch_run_id": "abc"})
    assert job.input_files == []
    other = m.batch.jobs.create(endpoint="/v1/chat/completions", requests=requests[:1], model=MODEL)
    assert m.batch.jobs.list().total == 2
    assert [j.id for j in m.batch.jobs.list(metadata={"objbatch_run_id": "abc"}).data] == [job.id]
    assert m.batch.jobs.list(status=["QUEUED"]).total == 2
    assert m.batch.jobs.list(status=["SUCCESS"]).total == 0
    assert m.batch.jobs.list(order_by="created").data[0].id == job.id
    now = datetime.now(timezone.utc)
    assert m.batch.jobs.list(created_after=now - timedelta(minutes=5)).total == 2
    assert m.batch.jobs.list(created_after=now + timedelta(minutes=5)).total == 0
    cancelled = m.batch.jobs.cancel(job_id=job.id)
    assert cancelled.status == "CANCELLATION_REQUESTED"
    assert wait(m, job.id).status == "CANCELLED"
    assert m.batch.jobs.delete(job_id=other.id).deleted is True
    with pytest.raises(errors.SDKError) as err:
        m.batch.jobs.get(job_id=other.id)
    assert err.value.status_code == 404


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of input_files or requests"),
    ({"input_files": ["nope"]}, "not found"),
    ({"requests": []}, "non-empty"),
])
def test_create_rejects_bad_jobs(emulator, kwargs, message):
    with pytest.raises(errors.SDKError) as err:
        emulator.sdk().batch.jobs.create(endpoint="/v1/chat/completions", model=MODEL, **kwargs)
    assert err.value.status_code in (404, 422) and message in err.value.body


def test_bad_jsonl_input_file_is_422_naming_the_line(emulator):
    m = emulator.sdk()
    up = m.files.upload(file={"file_name": "bad.jsonl", "content": b'{"custom_id":"a","body":{}}\nnot json\n'},
                        purpose="batch")
    with pytest.raises(errors.SDKError) as err:
        m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[up.id], model=MODEL)
    assert err.value.status_code == 422 and "line 2" in err.value.body


def test_state_survives_a_killed_emulator(emulator):
    m = emulator.sdk()
    up = upload(m, 4)
    job = m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[up.id], model=MODEL)
    emulator.restart()
    m = emulator.sdk()
    assert wait(m, job.id).status == "SUCCESS"
    assert m.files.retrieve(file_id=up.id).filename == "in.jsonl"
    assert len(lines(m, m.batch.jobs.get(job_id=job.id).output_file)) == 4


@pytest.mark.parametrize("status", ["FAILED", "TIMEOUT_EXCEEDED"])
def test_jobs_can_end_failed_or_timed_out_with_partial_results(emulator, status):
    emulator.faults(job_status=status, partial=0.5)
    m = emulator.sdk()
    job = m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload(m, 10).id], model=MODEL)
    job = wait(m, job.id)
    assert job.status == status and job.completed_requests == 5
    assert len(lines(m, job.output_file)) == 5
    assert any(status in e.message for e in job.errors)


def test_a_job_past_its_timeout_hours_ends_timeout_exceeded(emulator):
    emulator.pace(queue_seconds=0.1, seconds_per_request=0.2, max_run_seconds=10, seconds_per_hour=1.0)
    m = emulator.sdk()
    job = m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload(m, 10).id], model=MODEL,
                              timeout_hours=1)
    job = wait(m, job.id)
    assert job.status == "TIMEOUT_EXCEEDED" and job.completed_requests == 4
    assert len(lines(m, job.output_file)) == 4


def test_request_errors_in_both_files_missing_and_shuffled(emulator):
    emulator.faults(seed=4, error_in_output=0.2, error_in_error_file=0.2, missing=0.1, shuffle=True)
    m = emulator.sdk()
    job = wait(m, m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload(m, 60).id],
                                      model=MODEL).id)
    out, err = lines(m, job.output_file), lines(m, job.error_file)
    failures_in_output = [x for x in out if x["error"] is not None]
    assert failures_in_output and all(x["response"]["status_code"] >= 400 for x in failures_in_output)
    assert err and all(x["error"] is not None for x in err)
    kinds = {type(x["error"]).__name__ for x in failures_in_output + err}
    assert kinds == {"str", "dict"}
    returned = {x["custom_id"] for x in out + err}
    assert 0 < 60 - len(returned) < 20  # some requests are in neither file
    assert [x["custom_id"] for x in out] != sorted((x["custom_id"] for x in out), key=lambda c: int(c[1:]))
    assert job.failed_requests == len(failures_in_output) + len(err)
    assert job.errors and job.errors[0].count == job.failed_requests


def test_faults_are_reproducible_by_custom_id_and_change_on_resubmission(emulator, tmp_path):
    def contents(emu):
        m = emu.sdk()
        job = wait(m, m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload(m, 20).id],
                                          model=MODEL).id)
        return {x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"]
                for x in lines(m, job.output_file)}

    emulator.faults(seed=1, answers={"prose": 0.5})
    first, second = contents(emulator), contents(emulator)
    assert any(c.startswith("I'm sorry") for c in first.values())
    assert first != second  # a resubmitted request is a new draw, like a real retry
    twin = Emulator(tmp_path / "twin", ["--seed", "1", "--faults", '{"answers": {"prose": 0.5}}'])
    try:
        assert contents(twin) == first and contents(twin) == second
    finally:
        twin.stop()


@pytest.mark.parametrize("fault, check", [
    ("missing_confidence", lambda c, f: "confidence_score" not in json.loads(c)),
    ("array", lambda c, f: isinstance(json.loads(c), list) and not isinstance(json.loads(c)[0], dict)),
    ("one_element_array", lambda c, f: isinstance(json.loads(c)[0], dict)),
    ("prose", lambda c, f: "{" not in c),
    ("fenced", lambda c, f: c.startswith("```json")),
    ("prose_around", lambda c, f: c.startswith("Here is") and "{" in c),
    ("chunks", lambda c, f: [x["type"] for x in c] == ["thinking", "text"]),
    ("degenerate", lambda c, f: "difficulty" not in json.loads(c)),
    ("invalid_category", lambda c, f: json.loads(c)["category"] in ("q_a_session", "epistemology", "utc")),
    ("duplicate_topics", lambda c, f: len(set(json.loads(c)["primary_topics"])) < len(json.loads(c)["primary_topics"])),
    ("truncated", lambda c, f: f == "length"),
    ("too_many_topics", lambda c, f: len(json.loads(c)["primary_topics"]) > 8),
    ("invented_topics", lambda c, f: set(json.loads(c)["primary_topics"]) & {"universals", "egoism", "epistemolgy"}),
    ("enum_case", lambda c, f: json.loads(c)["difficulty"].isupper()),
])
def test_every_answer_fault(emulator, fault, check):
    emulator.faults(answers={fault: 1.0})
    m = emulator.sdk()
    job = wait(m, m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload(m, 2).id],
                                      model=MODEL).id)
    for line in lines(m, job.output_file):
        choice = line["response"]["body"]["choices"][0]
        assert check(choice["message"]["content"], choice["finish_reason"])


def test_without_response_format_the_answer_comes_fenced(emulator):
    from mistral_emulator import model

    body = {"messages": [{"role": "user", "content": "File name: a.txt\n--- Transcript ---\nethics"}]}
    assert model.complete(body, None, "x")["choices"][0]["message"]["content"].startswith("```json")
    body["response_format"] = {"type": "json_object"}
    assert model.complete(body, None, "x")["choices"][0]["message"]["content"].startswith("{")


@pytest.mark.parametrize("status", [429, 503])
def test_http_faults_carry_retry_after(emulator, status):
    emulator.faults(http_storm=2, http_status=status, retry_after=0.25)
    raw = httpx2.get(emulator.url + "/v1/batch/jobs", headers={"Authorization": f"Bearer {TEST_KEY}"})
    assert raw.status_code == status and raw.headers["retry-after"] == "0.25"
    with pytest.raises(errors.SDKError) as err:
        emulator.sdk().batch.jobs.list()
    assert err.value.status_code == status
    assert emulator.sdk().batch.jobs.list().total == 0  # the storm is over
    assert emulator.record()["http_faults"] == 2


def test_sync_chat_completion_endpoint(emulator):
    response = emulator.sdk().chat.complete(model=MODEL, messages=[
        {"role": "user", "content": "File name: Logic and Certainty.txt\n--- Transcript ---\nlogic and reason"}],
        response_format={"type": "json_object"})
    answer = json.loads(response.choices[0].message.content)
    assert "logic" in answer["primary_topics"]


def test_oddly_shaped_lines_and_lost_creates(emulator):
    """Two faults for the seeded simulation: result lines of shapes a service should not send, and a job
    creation that succeeds while its answer is lost (500), so a retry must find the job it made."""
    emulator.faults(seed=2, odd_lines=1.0, lost_creates=1)
    m = emulator.sdk()
    with pytest.raises(errors.SDKError) as err:
        m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload(m, 40).id], model=MODEL)
    assert err.value.status_code == 500
    created = emulator.record()["jobs_created"]
    assert len(created) == 1  # the job exists all the same
    job = wait(m, created[0]["id"])
    out = lines(m, job.output_file)
    assert len(out) == 40
    shapes = {"message_string": lambda x: x["response"]["body"]["choices"][0]["message"] == "oops",
              "usage_list": lambda x: x["response"]["body"]["usage"] == [1, 2],
              "response_string": lambda x: x["response"] == "oops",
              "custom_id_number": lambda x: x["custom_id"] == 12345}
    for name, seen in shapes.items():
        assert any(_safe(seen, x) for x in out), name
    m.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload(m, 1).id], model=MODEL)
    assert len(emulator.record()["jobs_created"]) == 2  # one lost answer only


def _safe(check, line) -> bool:
    try:
        return bool(check(line))
    except (KeyError, TypeError, IndexError):
        return False


def test_a_job_held_at_a_fraction_stays_running_there_until_released_or_cancelled(emulator):
    """The tests' way to see a job part-done without racing its clock: pace hold_at."""
    m = emulator.sdk()
    emulator.pace(hold_at=0.5, seconds_per_request=0.0, min_run_seconds=0.0, queue_seconds=0.0)
    held, cancelled = (m.batch.jobs.create(input_files=[upload(m, 10, p).id], model=MODEL,
                                           endpoint="/v1/chat/completions") for p in ("h", "c"))
    for job in (held, cancelled):
        view = m.batch.jobs.get(job_id=job.id)
        assert (view.status, view.completed_requests) == ("RUNNING", 5)
    m.batch.jobs.cancel(job_id=cancelled.id)
    ended = wait(m, cancelled.id)
    assert (ended.status, ended.completed_requests) == ("CANCELLED", 5) and len(lines(m, ended.output_file)) == 5
    assert m.batch.jobs.get(job_id=held.id).status == "RUNNING"
    emulator.release()
    done = wait(m, held.id)
    assert (done.status, done.completed_requests) == ("SUCCESS", 10)
    assert emulator.pace(hold_at=None)["hold_at"] is None
    with pytest.raises(Exception, match="422"):
        emulator.pace(hold_at=2)


@pytest.mark.parametrize("change", [{"job_status": "BOGUS"}, {"http_status": 418}, {"missing": 1.5},
                                    {"partial": -0.1}, {"http_storm": -3}, {"answers": {"no_such_fault": 0.1}},
                                    {"answers": {"prose": 2.0}}])
def test_a_fault_value_the_emulator_cannot_play_is_refused_naming_what_it_takes(emulator, change):
    from mistral_emulator import faults

    reason = faults.problem(change)
    assert reason and next(iter(change)) in reason, reason
    with pytest.raises(Exception, match="422"):
        emulator.faults(**change)
    key = next(iter(change))
    assert emulator.faults()[key] == faults.DEFAULTS[key]  # never saved
    assert faults.problem({"job_status": "FAILED", "http_status": 502, "seed": -1}) is None



@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_storm_answers_the_status_asked_with_the_service_s_error_body(emulator, status):
    import urllib.error
    import urllib.request

    emulator.faults(http_storm=1, http_status=status, retry_after=0.01)
    request = urllib.request.Request(emulator.url + "/v1/files", headers={"Authorization": f"Bearer {TEST_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request, timeout=10)
    assert answered.value.code == status and answered.value.headers["Retry-After"] == "0.01"
    body = json.loads(answered.value.read())
    assert body["object"] == "error" and body["type"] != "rate_limited" and body["message"]
    assert urllib.request.urlopen(request, timeout=10).status == 200  # the storm was one call


@pytest.mark.parametrize("text", ["{bad", "[1, 2]"])
def test_a_damaged_state_file_is_refused_naming_it_and_the_fix(tmp_path, text):
    import subprocess

    from conftest import BIN

    state = tmp_path / "emulator" / "state.json"
    state.parent.mkdir()
    state.write_text(text)
    started = subprocess.run([str(BIN / "mistral-emulator"), "--port", "0", "--state-dir", str(state.parent)],
                             capture_output=True, text=True, timeout=30)
    assert started.returncode == 1 and "Traceback" not in started.stderr, started.stderr
    assert f"{state} " in started.stderr and "move it away" in started.stderr, started.stderr
    assert state.read_text() == text  # left as it was, for whoever wants to look
