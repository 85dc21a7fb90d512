"""client.py in process: which failures are retried, how long a Retry-After asks for, and what Service.call does
with each (retry, one line, exit 75). No HTTP here: the errors are the ones the transport and the SDK raise,
built directly, and the call is a plain function (the emulator tests drive the same paths over real HTTP)."""

from __future__ import annotations

import email.utils
import time

import httpx2
import pytest

from objbatch import client
from objbatch.client import RetryPolicy, Service, ServiceAnswer, _classify, _retry_after
from objbatch.common import Failure, NotFinished

REQUEST = httpx2.Request("GET", "http://127.0.0.1:9/v1/batch/jobs")


def answer(status: int, **headers: str) -> ServiceAnswer:
    return ServiceAnswer(status, "", httpx2.Headers(headers))


# ---------------------------------------------------------------- _classify: (retry it?, the wait it asks for)

@pytest.mark.parametrize("status", sorted(client.RETRYABLE_STATUS))
def test_rate_limits_and_server_errors_are_retried(status):
    assert _classify(answer(status)) == (True, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_client_errors_are_not_retried(status):
    assert _classify(answer(status)) == (False, None)


def test_transport_failures_are_retried_but_a_request_that_cannot_be_sent_is_not():
    assert _classify(httpx2.ConnectError("refused", request=REQUEST)) == (True, None)
    assert _classify(httpx2.ReadTimeout("slow", request=REQUEST)) == (True, None)
    assert _classify(httpx2.RemoteProtocolError("cut", request=REQUEST)) == (True, None)
    assert _classify(httpx2.LocalProtocolError("bad header")) == (False, None)
    assert _classify(httpx2.UnsupportedProtocol("ftp://")) == (False, None)


def test_the_wait_a_429_asks_for_comes_with_its_classification():
    assert _classify(answer(429, **{"Retry-After": "3"})) == (True, 3.0)


# ---------------------------------------------------------------- _retry_after

@pytest.mark.parametrize("headers, seconds", [
    (None, None), ({}, None),
    ({"Retry-After": "2"}, 2.0), ({"retry-after": "0.5"}, 0.5),
    ({"Retry-After-Ms": "250"}, 0.25),
    ({"Retry-After-Ms": "250", "Retry-After": "9"}, 0.25),  # the precise one wins
    ({"Retry-After-Ms": "soon", "Retry-After": "9"}, 9.0),  # an unreadable one is passed over
    ({"Retry-After": ""}, None),
])
def test_retry_after_reads_seconds_and_milliseconds(headers, seconds):
    assert _retry_after(httpx2.Headers(headers) if headers is not None else None) == seconds


def test_retry_after_reads_an_http_date():
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= _retry_after(httpx2.Headers({"Retry-After": later})) <= 31
    earlier = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after(httpx2.Headers({"Retry-After": earlier})) == 0.0


@pytest.mark.parametrize("value", ["soon", "nan", "-nan", "Mon, 99 Foo 2026"])
def test_an_unreadable_retry_after_is_ignored_not_a_crash(value):
    """A proxy's odd header must not end the command with a traceback (ValueError from the date parser),
    nor make the wait NaN (time.sleep refuses it): the usual backoff applies."""
    assert _retry_after(httpx2.Headers({"Retry-After": value})) is None
    assert _retry_after(httpx2.Headers({"Retry-After-Ms": value})) is None


# ---------------------------------------------------------------- RetryPolicy

def test_the_backoff_doubles_with_jitter_up_to_its_maximum_and_obeys_retry_after_within_it():
    policy = RetryPolicy(max_elapsed=60, initial=0.5, maximum=8)
    for attempt in range(8):
        assert 0.5 * min(0.5 * 2**attempt, 8) <= policy.delay(attempt, None) <= min(0.5 * 2**attempt, 8)
    assert policy.delay(0, 3.0) == 3.0
    assert policy.delay(0, 600.0) == 8  # a Retry-After longer than the maximum waits the maximum
    assert policy.delay(0, -5.0) == 0.0


# ---------------------------------------------------------------- Service.call

class Flaky:
    """A call that raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def service(max_elapsed: float = 5.0, before_paying: bool = False) -> Service:
    return Service(key="k", url="http://127.0.0.1:9", before_paying=before_paying,
                   policy=RetryPolicy(max_elapsed=max_elapsed, initial=0.001, maximum=0.01))


def test_a_transient_failure_is_retried_with_a_line_naming_the_attempt(capsys):
    call = Flaky(answer(503), answer(429, **{"Retry-After": "0.01"}))
    assert service().call("job creation", call) == "done" and call.calls == 3
    err = capsys.readouterr().err
    assert "job creation: HTTP 503; retrying in" in err and "(attempt 1; giving up in" in err
    assert "HTTP 429; retrying in 0.0s (attempt 2;" in err


def test_a_permanent_failure_is_one_line_with_its_hint_and_no_retry():
    call = Flaky(answer(401))
    with pytest.raises(Failure) as failed:
        service().call("upload", call)
    assert call.calls == 1
    assert str(failed.value) == "upload failed: HTTP 401; the service refused the API key: check MISTRAL_API_KEY " \
                                "or the keyring entry"


def test_a_failure_that_outlasts_the_retry_budget_is_not_finished():
    call = Flaky(*[answer(503)] * 10_000)
    with pytest.raises(NotFinished) as later:
        service(max_elapsed=0.05).call("status of job j", call)
    assert "status of job j failed: HTTP 503" in str(later.value) and "rerun the same command later" in str(later.value)


def test_a_service_never_reached_before_paying_fails_after_the_first_contact_wait(monkeypatch):
    monkeypatch.setenv("OBJBATCH_FIRST_CONTACT_SECONDS", "0.05")
    refused = [httpx2.ConnectError("refused", request=REQUEST) for _ in range(10_000)]
    with pytest.raises(Failure) as failed:
        service(max_elapsed=900, before_paying=True).call("checking the service", Flaky(*refused))
    assert str(failed.value).startswith("cannot reach the Mistral service at http://127.0.0.1:9 (refused); check "
                                        "MISTRAL_SERVER_URL")
    # once reached, the same refusal is a blip to ride out within the retry budget
    reached = service(max_elapsed=900, before_paying=True)
    reached.call("first", Flaky())
    assert reached.call("second", Flaky(httpx2.ConnectError("refused", request=REQUEST))) == "done"


def test_a_retry_of_a_creation_first_looks_for_what_a_lost_answer_created():
    looked: list[int] = []

    def reconcile() -> str | None:
        looked.append(1)
        return "found"

    call = Flaky(httpx2.ReadTimeout("answer lost", request=REQUEST))
    assert service().call("job creation", call, reconcile=reconcile) == "found"
    assert call.calls == 1 and looked == [1]


def test_a_bug_of_ours_is_not_worded_as_the_services():
    with pytest.raises(KeyError):
        service().call("upload", Flaky(KeyError("x")))


@pytest.mark.parametrize("name", sorted(client.config.WAITS))
def test_a_fixed_wait_is_settable_and_a_bad_value_is_one_line(monkeypatch, name):
    monkeypatch.setenv(name, "0.25")
    assert client.config.wait_seconds(name) == 0.25
    monkeypatch.delenv(name)
    assert client.config.wait_seconds(name) == client.config.WAITS[name][0]
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv(name, bad)
        with pytest.raises(Failure, match=f"^{name} must be a number of seconds"):
            client.config.wait_seconds(name)


def test_a_part_without_a_job_id_is_matched_to_the_job_the_service_has_for_it():
    record = {"jobs": [{"part": "1/3", "job_id": "a"}, {"part": "2/3", "job_id": None}, {"part": "3/3"}]}
    by_part = {"1/3": {"id": "a"}, "2/3": {"id": "b"}}
    assert list(client.unrecorded(record, by_part)) == [(record["jobs"][1], {"id": "b"})]  # 3/3: never created
