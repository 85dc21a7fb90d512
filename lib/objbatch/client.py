"""The one module that talks to the Mistral service through its SDK: files, batch jobs, retries and error
wording. Importing it is cheap: the SDK (most of a second to import) is loaded when a Service first makes
an SDK call; the check before paying uses the SDK's own transport (httpx2) without it."""

from __future__ import annotations

import email.utils
import math
import random
import ssl
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache, partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Final, Iterator, TypeVar
from urllib.parse import urlsplit

import httpx2

if TYPE_CHECKING:  # the SDK itself is loaded on first use
    from mistralai.client import Mistral
    from pydantic import BaseModel

from . import config
from .common import Failure, NotFinished, atomic_writer, log, scrub

T = TypeVar("T")
ENDPOINT: Final = "/v1/chat/completions"
RUNNING = ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED")  # every other status is terminal, as the SDK says
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
RUN_ID_KEY = "objbatch_run_id"
PART_KEY = "objbatch_part"  # with the run id, how a job whose record was lost is found again
LOOKBACK_DAYS = 30  # how far back the job list is searched for a run whose record was lost
# The service's limits (docs/mistral-batch-api.md, "Limits": where the sources disagree, the stricter).
MAX_JOB_REQUESTS = 100_000       # requests per batch job (known limitations)
MAX_FILE_BYTES = 512 * 1000 * 1000  # an uploaded file
MAX_INLINE_REQUESTS = 9_999      # inline requests: fewer than 10,000 (OpenAPI maxItems 10000)
MIN_TIMEOUT_HOURS, MAX_TIMEOUT_HOURS = 1, 168
METADATA_KEY_CHARS, METADATA_VALUE_CHARS = (1, 32), (1, 512)
GONE = (404, 410)  # a result file the service no longer has (kept 24 hours after the job finished)


@dataclass
class RetryPolicy:
    """Backoff for transient failures. OBJBATCH_RETRY_SECONDS bounds the total wait (default 15 min)."""

    max_elapsed: float = field(default_factory=config.retry_seconds)
    initial: float = 0.5
    maximum: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.maximum)
        return min(self.initial * 2.0**attempt, self.maximum) * (0.5 + random.random() / 2)


class Service:
    """The Files and Batch API, every call wrapped in retries for 429, 5xx and connection errors."""

    def __init__(self, key: str | None = None, url: str | None = None, policy: RetryPolicy | None = None,
                 before_paying: bool = False):
        """`before_paying`: a service that cannot be reached at all on the first call is a mistake to report
        within seconds (wrong MISTRAL_SERVER_URL, no network), not a blip to ride out for 15 minutes."""
        self.url = url or config.server_url()
        self.key = key or config.api_key()
        self.policy = policy or RetryPolicy()
        self._reached = not before_paying
        self._client: Mistral | None = None
        self._open = ExitStack()  # what closes the SDK client's connections with the Service

    @property
    def _sdk(self) -> Mistral:
        """The SDK client, made on first use (a Service that only checks its settings opens no connection)."""
        if self._client is None:
            self._client = _sdk_client(self.url, self.key, self._open)
        return self._client

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: Any) -> None:
        """The SDK client's connections are closed with the Service: each stage opens its own (the SDK's
        code is imported once a process all the same)."""
        self._client = None
        self._open.close()

    # ----------------------------------------------------------- retries

    def call(self, what: str, fn: Callable[[], T], reconcile: Callable[[], T | None] | None = None,
             job_id: str | None = None) -> T:
        """Run fn, retrying transient failures with backoff; anything else becomes a one-line Failure.
        For calls that create something, `reconcile` looks for what a lost answer may have created
        before a retry could create it twice. A call about `job_id` answered 404 raises JobUnknown."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                if attempt and reconcile is not None:
                    found = reconcile()
                    if found is not None:
                        return found
                result = fn()
                self._reached = True
                return result
            except Exception as exc:
                if not _from_service(exc):
                    raise
                transient, retry_after = _classify(exc)
                waited = time.monotonic() - started
                if job_id is not None and getattr(exc, "status_code", None) == 404 and not _hint(exc):
                    raise JobUnknown(job_id, self.url) from None
                if not transient:
                    raise Failure(f"{what} failed: {describe(exc)}{_hint(exc)}") from None
                first_contact = isinstance(exc, httpx2.ConnectError) and not self._reached
                # before paying, a service that cannot be reached at all fails this fast
                first_contact_limit = config.wait_seconds("OBJBATCH_FIRST_CONTACT_SECONDS")
                if first_contact and waited >= min(first_contact_limit, self.policy.max_elapsed):
                    reason = scrub(str(exc)) or "no connection"
                    raise Failure(f"cannot reach the Mistral service at {self.url} ({reason}); check "
                                  "MISTRAL_SERVER_URL and the network, then rerun") from None
                if waited >= self.policy.max_elapsed:  # still transient: exit 75 so cron comes back later
                    raise NotFinished(f"{what} failed: {describe(exc)}{_hint(exc)}") from None
                pause = self.policy.delay(attempt, retry_after)
                if first_contact:  # a service never reached is reported once, when given up on
                    pause = max(0.1, min(pause, first_contact_limit - waited))
                else:
                    log(f"{_command()}{what}: {describe(exc)}; retrying in {pause:.1f}s (attempt {attempt + 1}; "
                        f"{_horizon(self.policy.max_elapsed - waited)})")
                time.sleep(pause)
                attempt += 1

    # ----------------------------------------------------------- files

    def upload(self, name: str, content: bytes | IO[bytes]) -> str:
        """Upload a purpose=batch file; a file object is streamed, and rewound for each retry."""
        def send() -> str:
            if hasattr(content, "seek"):
                content.seek(0)
            return self._sdk.files.upload(file={"file_name": name, "content": content}, purpose="batch").id

        return self.call("upload", send)

    def download_to(self, file_id: str, path: Path) -> None:
        """Stream a file's content to `path`, which appears complete or not at all. ResultsGone if the service
        no longer has it (404 or 410: results are kept 24 hours after their job finished)."""
        def fetch() -> None:
            try:
                response = self._sdk.files.download(file_id=file_id)
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                if status in GONE and _from_service(exc):
                    raise ResultsGone(file_id, status) from None
                raise
            try:
                with atomic_writer(path) as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
            finally:
                response.close()

        self.call(f"download of file {file_id}", fetch)

    def delete_file(self, file_id: str) -> None:
        """Delete a file at the service (a file it no longer has counts as deleted)."""
        def delete() -> None:
            try:
                self._sdk.files.delete(file_id=file_id)
            except Exception as exc:
                if getattr(exc, "status_code", None) not in GONE or not _from_service(exc):
                    raise

        self.call(f"deleting file {file_id}", delete)

    # ----------------------------------------------------------- jobs

    def create_job(self, model: str, metadata: dict[str, str], *, input_file: str | None = None,
                   requests: list[dict[str, Any]] | None = None, timeout_hours: int = 24) -> dict[str, Any]:
        """Create a job tagged with metadata; a retry first looks for a job a lost answer created."""
        kwargs: dict[str, Any] = {"input_files": [input_file]} if input_file else {"requests": requests}
        metadata = {k: str(v) for k, v in metadata.items()}

        def already_created() -> dict[str, Any] | None:
            same = [j for j in self.jobs_with_run_id(metadata[RUN_ID_KEY]) if j.get("metadata") == metadata]
            return same[0] if same else None

        return self.call("job creation", lambda: job_dict(self._sdk.batch.jobs.create(
            endpoint=ENDPOINT, model=model, metadata=metadata, timeout_hours=timeout_hours, **kwargs)),
            reconcile=already_created)

    def check_access(self) -> None:
        """One cheap authenticated call (the job list, one item): the key is accepted and the service
        answers. Made over the SDK's transport without loading the SDK, which this process may not need."""
        def probe() -> None:
            with httpx2.Client(timeout=30, verify=self.url.startswith("https:")) as http:
                answer = http.get(f"{self.url}/v1/batch/jobs", params={"page": 0, "page_size": 1},
                                  headers={"Authorization": f"Bearer {self.key}", "Accept": "application/json"})
            if answer.status_code != 200:
                raise ServiceAnswer(answer.status_code, answer.text, answer.headers)

        self.call("checking the service", probe)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return job_dict(self.call(f"status of job {job_id}", lambda: self._sdk.batch.jobs.get(job_id=job_id),
                                  job_id=job_id))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return job_dict(self.call(f"cancel of job {job_id}", lambda: self._sdk.batch.jobs.cancel(job_id=job_id),
                                  job_id=job_id))

    def jobs_with_run_id(self, run_id: str) -> list[dict[str, Any]]:
        """Every job whose metadata carries this run id, found by paging the job list (filtered here,
        because the service's metadata filter is not reliable)."""
        return [job for job in self._all_jobs() if (job.get("metadata") or {}).get(RUN_ID_KEY) == run_id]

    def jobs_by_part(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The jobs the service has for this run, by part ("1/2")."""
        found: dict[str, dict[str, Any]] = {}
        for job in self.jobs_with_run_id(run_id):
            part = (job.get("metadata") or {}).get(PART_KEY)
            if isinstance(part, str):  # a record's parts are strings: any other tag matches none of them
                found[part] = job
        return found

    def _all_jobs(self) -> Iterator[dict[str, Any]]:
        """Jobs created in the last LOOKBACK_DAYS (a lost record is found within that window), page by page."""
        since = datetime.now(timezone.utc) - timedelta(days=LOOKBACK_DAYS)
        page = 0
        while True:
            listing = self.call("job list", partial(self._sdk.batch.jobs.list, page=page, page_size=100,
                                                    created_after=since))
            data = listing.data or []
            yield from (job_dict(job) for job in data)
            if len(data) < 100:
                return
            page += 1


def unrecorded(record: dict[str, Any], by_part: dict[str, dict[str, Any]]
               ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(entry, job) for each part of a job record that has no job id yet but a job at the service (created,
    then the answer or the record was lost): what batch-submit and batch-cancel record before going on."""
    for entry in record["jobs"]:
        job = by_part.get(entry["part"])
        if not entry.get("job_id") and job:
            yield entry, job


def check_job(model: str, metadata: dict[str, str], timeout_hours: int) -> None:
    """What the service would refuse in a job creation, refused here before anything is uploaded."""
    if not MIN_TIMEOUT_HOURS <= timeout_hours <= MAX_TIMEOUT_HOURS:
        raise Failure(f"timeout_hours must be {MIN_TIMEOUT_HOURS} to {MAX_TIMEOUT_HOURS} (got {timeout_hours}); "
                      "set TIMEOUT_HOURS (--timeout-hours) within them")
    for key, value in metadata.items():
        if not METADATA_KEY_CHARS[0] <= len(key) <= METADATA_KEY_CHARS[1]:
            raise Failure(f"job metadata key {key!r} must have {METADATA_KEY_CHARS[0]}-{METADATA_KEY_CHARS[1]} "
                          "characters (the service's bound)")
        if not isinstance(value, str) or not METADATA_VALUE_CHARS[0] <= len(value) <= METADATA_VALUE_CHARS[1]:
            raise Failure(f"job metadata {key} must be a string of {METADATA_VALUE_CHARS[0]}-"
                          f"{METADATA_VALUE_CHARS[1]} characters (got {len(str(value))}); use a shorter run name")


def _sdk_client(url: str, key: str, opened: ExitStack) -> Mistral:
    """An SDK client whose connections `opened` closes. Its HTTP clients share the process's TLS settings:
    the SDK would otherwise read the CA bundle twice for every Service (measured: 16 ms each, six Services a
    make batch, 3 % of one at 1,200 files)."""
    from mistralai.client import Mistral  # loaded on first use: most of a second

    tls = _tls()
    calls = opened.enter_context(httpx2.Client(follow_redirects=True, verify=tls))
    unused = httpx2.AsyncClient(follow_redirects=True, verify=tls)  # objbatch never calls the SDK asynchronously
    sdk = Mistral(api_key=key, server_url=url, timeout_ms=120_000, client=calls, async_client=unused)
    opened.enter_context(sdk)
    return sdk


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """The TLS settings httpx2 would make for each client (the trusted CA bundle), made once a process."""
    return httpx2.create_ssl_context()


class ResultsGone(Exception):
    """A result file the service no longer has: past its retention, or deleted."""

    def __init__(self, file_id: str, status: int):
        super().__init__(f"file {file_id}: HTTP {status}")
        self.file_id, self.status = file_id, status


class JobUnknown(Failure):
    """A job we created that the service answers 404 for: created with another key (another workspace), or
    the service lost it. Its run cannot end on its own: `make cancel FORGET=1` ends it (batch-cancel --forget)."""

    def __init__(self, job_id: str, url: str):
        super().__init__(f"the service at {url} does not know job {job_id} (HTTP 404): check that MISTRAL_API_KEY "
                         "is a key of the workspace that created it; if the service has lost the job, "
                         "make cancel FORGET=1 ends its run (its files go back to the queue)")
        self.job_id = job_id


class ServiceAnswer(Exception):
    """A non-200 answer to a call made without the SDK (the same fields as the SDK's SDKError)."""

    def __init__(self, status_code: int, body: str, headers: Any):
        super().__init__(f"HTTP {status_code}")
        self.status_code, self.body, self.headers = status_code, body, headers


def _from_service(exc: BaseException) -> bool:
    """An answer or a transport failure of the service (retried or worded), not a bug of ours."""
    if isinstance(exc, (httpx2.TransportError, ServiceAnswer)):
        return True
    from mistralai.client import errors  # loaded already: the SDK made the call that raised

    return isinstance(exc, errors.SDKError)


def job_dict(job: BaseModel) -> dict[str, Any]:
    return job.model_dump(mode="json")


def terminal(status: str) -> bool:
    return status not in RUNNING


def describe(exc: BaseException) -> str:
    """Words for an SDK or transport error, without bodies that could be long, and never the key (a
    transport error's text can quote the request's headers)."""
    status = getattr(exc, "status_code", None)
    if status is not None and hasattr(exc, "body"):
        body = (getattr(exc, "body", None) or "").strip().replace("\n", " ")
        return f"HTTP {status}" + (f" ({scrub(body[:200])})" if body else "")
    if isinstance(exc, httpx2.ConnectError):
        return "cannot connect to the service"
    if isinstance(exc, httpx2.TimeoutException):
        return "the service did not answer in time"
    return f"{type(exc).__name__} talking to the service"


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    if isinstance(exc, (httpx2.LocalProtocolError, httpx2.UnsupportedProtocol)):
        return False, None  # our request cannot be sent as it is: retrying changes nothing
    if isinstance(exc, httpx2.TransportError):
        return True, None
    status = getattr(exc, "status_code", None)
    return status in RETRYABLE_STATUS, _retry_after(getattr(exc, "headers", None))


def _retry_after(headers: Any) -> float | None:
    """The wait the service asks for (Retry-After-Ms, else Retry-After in seconds or as an HTTP date); None
    when it asks for none or for one that cannot be read (a proxy's odd header: the usual backoff applies)."""
    if not headers:
        return None
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError):
        return None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _seconds(text: str | None) -> float | None:
    """A finite number, else None (float() also reads "nan" and "inf", which time.sleep refuses)."""
    try:
        number = float(text) if text else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _hint(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    if status == 401:
        return "; the service refused the API key: check MISTRAL_API_KEY or the keyring entry"
    if status == 404 and urlsplit(config.server_url()).path:
        return f"; is MISTRAL_SERVER_URL ({config.server_url()}) the service's root? It should have no path"
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return "; MISTRAL_SERVER_URL must start with http:// or https://"
    if isinstance(exc, httpx2.LocalProtocolError):
        return "; the request could not be sent (is there a stray character in the API key?)"
    if isinstance(exc, httpx2.ConnectError):
        return "; is MISTRAL_SERVER_URL right and the service up? Rerun the same command to resume"
    if status in RETRYABLE_STATUS or isinstance(exc, httpx2.TransportError):
        return "; the service is still failing: rerun the same command later to resume"
    return ""


def _command() -> str:
    """'batch-wait: ', the command whose call is retried (batch-run runs several in one process)."""
    import click

    context = click.get_current_context(silent=True)
    return f"{context.info_name}: " if context is not None and context.info_name else ""


def _horizon(left: float) -> str:
    """When retrying stops (then exit 75: a rerun picks it up)."""
    if left < 120:
        return f"giving up in {max(left, 0):.0f}s"
    return "giving up at " + time.strftime("%H:%M", time.localtime(time.time() + left))
