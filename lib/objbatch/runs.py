"""The run ledger, in the library database: the one authority for a run, and the one module that writes it.

A run is: its name, the database it belongs to (library_id), its claims (the files it took), what it sent
for each file (custom_id, content hash, request digest and manifest line, frozen before anything is
uploaded), its parts and jobs (ids, input files) and how far it got (state). The run folder under RUNS is a
cache of artifacts that every stage can rebuild from here: a run whose folder was deleted is finished or
cancelled from the ledger, never paid again.

The tables objbatch_runs, objbatch_claims, objbatch_parts, objbatch_jobs and objbatch_leases are written
only here. States are enums (states.py); each change of a run's state is one function below, declared with
@transition(from, to), that refuses to start from any other state. docs/design.md carries the same table
(tests/test_run_states.py holds the two together).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, TypeVar

from . import client, config, ledger
from .common import Failure, log, now_iso
from .states import ClaimState, EndReason, RunState

FINISHED = (RunState.APPLIED, RunState.CANCELLED)
FROZEN = (RunState.SUBMITTING, RunState.SUBMITTED, RunState.CANCELLING)
IN_FLIGHT = ClaimState.CLAIMED  # claim state of a file whose run has not finished
RECORD_VERSION = 1
GONE = "(forgotten)"  # the target of forget: the run leaves the ledger

# function name -> (states it may start from, state it ends in): every state change the code can make.
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {}
F = TypeVar("F", bound=Callable[..., Any])


# A claim's life (the file of a run): taken when the run is created, released when it ends, deleted when a
# run that sent nothing is forgotten. Claims change state only in _release.
CLAIM_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "create": (("(none)",), ClaimState.CLAIMED.value),
    "_release": ((ClaimState.CLAIMED.value,), ClaimState.DONE.value),
    "forget": ((ClaimState.CLAIMED.value,), GONE),
}


class IllegalTransition(Failure):
    """A run asked to change state from a state that change does not start from."""


def transition(sources: Iterable[str | None], target: str) -> Callable[[F], F]:
    """Declare a state-changing function: it may start only from `sources` (None: the run does not exist)."""
    def declare(function: F) -> F:
        TRANSITIONS[function.__name__] = (tuple("(none)" if s is None else str(s) for s in sources), str(target))
        return function
    return declare


def _move(conn: sqlite3.Connection, name: str, how: str, extra: str = "", params: tuple[Any, ...] = ()) -> None:
    """Change run `name`'s state as transition `how` declares, or refuse if it is in a state `how` does not
    start from (checked in the same statement: no other process can slip in between)."""
    sources, target = TRANSITIONS[how]
    finished = now_iso() if target in FINISHED else None
    marks = ", ".join("?" * len(sources))
    changed = conn.execute(f"UPDATE objbatch_runs SET state = ?, finished_at = COALESCE(?, finished_at){extra} "
                           f"WHERE run_name = ? AND state IN ({marks})",
                           (target, finished, *params, name, *sources)).rowcount
    if not changed:
        row = conn.execute("SELECT state FROM objbatch_runs WHERE run_name = ?", (name,)).fetchone()
        now = row[0] if row else "not in the ledger"
        fix = "it is finished" if now in FINISHED else f"make cancel NAME={name} ends it"
        raise IllegalTransition(f"run {name} is {now}: {how.replace('_', ' ')} only starts from "
                                f"{' or '.join(sources)}; {fix} (make stats shows it)")


@dataclass
class Run:
    name: str
    state: str
    model: str | None
    library_id: str | None
    db_path: str | None
    run_id: str | None
    created_at: str
    finished_at: str | None
    server_url: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def frozen(self) -> bool:
        return self.state in FROZEN


def check_service(name: str, server_url: str | None) -> None:
    """A run's jobs live at the service they were submitted to: anywhere else they would not be found."""
    if server_url and server_url != config.server_url():
        raise Failure(f"run {name} was submitted to {server_url}, not {config.server_url()}: set "
                      f"MISTRAL_SERVER_URL={server_url} to follow it")


def new_name(prefix: str) -> str:
    """A name for a new run (make batch's "run", make cron's "cron"): the UTC time it started, then four hex
    digits so two started in the same second differ; it sorts by time and passes check_run_name."""
    return time.strftime(f"{prefix}-%Y%m%d-%H%M%S-", time.gmtime()) + os.urandom(2).hex()

def get(conn: sqlite3.Connection, name: str) -> Run | None:
    row = conn.execute("SELECT run_name, state, model, library_id, db_path, run_id, created_at, finished_at, "
                       "server_url FROM objbatch_runs WHERE run_name = ?", (name,)).fetchone()
    if row is None:
        return None
    if row[1] not in tuple(RunState):
        raise Failure(f"run {name} is in state {row[1]!r}, which this version of objbatch does not know (a newer "
                      "version's?); use that version, or fix the row in objbatch_runs")
    return Run(row[0], RunState(row[1]), *row[2:])


def belonging(conn: ledger.Library, name: str) -> Run | None:
    """The run of this name in this database's ledger, refused if it belongs to another database. A run
    started on a database at this very path is this one's (the file was restored from a copy)."""
    run = get(conn, name)
    if run and run.library_id and run.library_id != conn.library_id:
        if run.db_path != conn.path:
            raise Failure(f"run {name} belongs to database {run.db_path}, not {conn.path} (a copy of it); "
                          f"finish or cancel it with DB={run.db_path}")
        if getattr(conn, "read_only", False):  # a reader (the estimate) sees it as this database's, and writes nothing
            return replace(run, library_id=conn.library_id)
        adopt(conn, name, conn.library_id)
        run = get(conn, name)
    return run


def require(conn: ledger.Library, name: str) -> Run:
    run = belonging(conn, name)
    if run is None:
        raise Failure(f"database {conn.path} has no run {name}; check the run name (make stats lists runs) and "
                      "that DB is the database the run was started on")
    return run


def unfinished(conn: ledger.Library) -> list[Run]:
    """This database's runs that are not finished, oldest first."""
    rows = conn.execute("SELECT run_name FROM objbatch_runs WHERE state NOT IN (?, ?) AND "
                        "(library_id = ? OR library_id IS NULL OR db_path = ?) ORDER BY created_at, run_name",
                        (*FINISHED, conn.library_id, conn.path)).fetchall()
    return [r for r in (get(conn, row[0]) for row in rows) if r]


@transition([None], RunState.CLAIMED)
def create(conn: ledger.Library, name: str, model: str | None, paths: Iterable[str]) -> None:
    """The run enters the ledger holding these files (in the caller's transaction: all or nothing)."""
    if get(conn, name) is not None:
        raise IllegalTransition(f"run {name} exists already; it cannot be created again")
    now = now_iso()
    conn.execute("INSERT INTO objbatch_runs (run_name, model, state, created_at, library_id, db_path) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (name, model, RunState.CLAIMED, now, conn.library_id, conn.path))
    conn.executemany("INSERT INTO objbatch_claims (run_name, file_path, state, claimed_at) VALUES (?, ?, ?, ?)",
                     ((name, path, ClaimState.CLAIMED, now) for path in paths))


def _release(conn: sqlite3.Connection, name: str) -> int:
    """The run's files go back: no longer in flight, and the manifest kept while it ran is dropped."""
    conn.execute("UPDATE objbatch_claims SET manifest_json = NULL WHERE run_name = ?", (name,))
    return conn.execute("UPDATE objbatch_claims SET state = ? WHERE run_name = ? AND state = ?",
                        (ClaimState.DONE, name, ClaimState.CLAIMED)).rowcount


def _ended(counts: dict[str, Any], reason: EndReason) -> tuple[str, tuple[str, EndReason]]:
    return ", counts_json = ?, end_reason = ?", (json.dumps(counts), reason)


@transition([RunState.CLAIMED, RunState.SUBMITTED], RunState.APPLIED)
def finish_applied(conn: sqlite3.Connection, name: str, counts: dict[str, Any]) -> int:
    """Every claimed file has its result (or nothing was to be sent): the run is done; its files released."""
    _move(conn, name, "finish_applied", *_ended(counts, EndReason.APPLIED))
    return _release(conn, name)


@transition([RunState.CANCELLING], RunState.CANCELLED)
def finish_cancelled(conn: sqlite3.Connection, name: str, counts: dict[str, Any]) -> int:
    """A cancelled run's jobs were harvested: what they finished is applied, the rest went back."""
    _move(conn, name, "finish_cancelled", *_ended(counts, EndReason.CANCELLED))
    return _release(conn, name)


def finish(conn: sqlite3.Connection, name: str, counts: dict[str, Any]) -> int:
    """End a run whose every file has its result, as its recorded state says: cancelled if a cancel was
    asked, else applied. How many files it released."""
    run = get(conn, name)
    if run is not None and run.state == RunState.CANCELLING:
        return finish_cancelled(conn, name, counts)
    return finish_applied(conn, name, counts)


@transition([RunState.CLAIMED, RunState.SUBMITTING, RunState.CANCELLING], RunState.CANCELLED)
def cancel_unsent(conn: sqlite3.Connection, name: str, counts: dict[str, Any]) -> int:
    """A cancel of a run that no job of the service knows (nothing sent, or every creation failed): its
    files go back to the queue as they were, no attempt spent. The caller checked the service."""
    if has_jobs(conn, name):
        raise IllegalTransition(f"run {name} has jobs at the service: cancel it with make cancel NAME={name}")
    _move(conn, name, "cancel_unsent", *_ended(counts, EndReason.NOTHING_SENT))
    return _release(conn, name)


@transition([RunState.SUBMITTING, RunState.SUBMITTED, RunState.CANCELLING], RunState.CANCELLED)
def cancel_jobs_unknown(conn: sqlite3.Connection, name: str, counts: dict[str, Any]) -> int:
    """A person asked (make cancel FORGET=1) to end a run whose every job the service answers 404 for (lost,
    or created with another workspace's key): nothing can be harvested, its files go back to the queue as
    they were, no attempt spent. The caller asked the service about every job."""
    _move(conn, name, "cancel_jobs_unknown", *_ended(counts, EndReason.JOBS_UNKNOWN))
    return _release(conn, name)


@transition([RunState.CLAIMED, RunState.SUBMITTING], GONE)
def forget(conn: sqlite3.Connection, name: str) -> int:
    """A run refused before anything was sent (over budget) leaves the ledger, so its name can be used
    again as the refusal advises; its files go back to the queue. The caller checked the service."""
    run = get(conn, name)
    sources = TRANSITIONS["forget"][0]
    if run is None or run.state not in sources or has_jobs(conn, name):
        raise IllegalTransition(f"run {name} is {run.state if run else 'not in the ledger'}: only a run that "
                                f"sent nothing ({' or '.join(sources)}) is forgotten")
    released = conn.execute("DELETE FROM objbatch_claims WHERE run_name = ?", (name,)).rowcount
    conn.execute("DELETE FROM objbatch_parts WHERE run_name = ?", (name,))
    conn.execute("DELETE FROM objbatch_runs WHERE run_name = ?", (name,))
    return released


@transition([RunState.SUBMITTING, RunState.SUBMITTED, RunState.CANCELLING], RunState.CANCELLING)
def begin_cancel(conn: sqlite3.Connection, name: str) -> None:
    """A cancel was asked after something was sent: the run creates nothing more, and ends cancelled once
    its jobs are harvested."""
    _move(conn, name, "begin_cancel")


@transition([RunState.SUBMITTING], RunState.SUBMITTED)
def mark_submitted(conn: sqlite3.Connection, name: str) -> None:
    _move(conn, name, "mark_submitted")


def undecided(conn: sqlite3.Connection, name: str) -> int:
    """Files the run claimed that have no result applied for it yet."""
    count: int = conn.execute(
        "SELECT COUNT(*) FROM objbatch_claims c WHERE c.run_name = ? AND NOT EXISTS (SELECT 1 FROM "
        "objbatch_applied a WHERE a.run_name = c.run_name AND a.file_path = c.file_path)", (name,)).fetchone()[0]
    return count


def has_jobs(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM objbatch_parts WHERE run_name = ? AND job_id IS NOT NULL LIMIT 1",
                        (name,)).fetchone() is not None


@transition([RunState.SUBMITTING], RunState.CLAIMED)
def unfreeze(conn: sqlite3.Connection, name: str) -> None:
    """Undo a freeze that never reached the service (no job exists): the run is built and frozen again."""
    if has_jobs(conn, name):
        raise IllegalTransition(f"run {name} has jobs at the service: what it sent cannot change")
    _move(conn, name, "unfreeze", ", run_id = NULL, estimate_json = NULL, server_url = NULL")
    conn.execute("UPDATE objbatch_claims SET custom_id = NULL, part = NULL, manifest_json = NULL, content_hash = NULL, "
                 "request_digest = NULL WHERE run_name = ?", (name,))
    conn.execute("DELETE FROM objbatch_parts WHERE run_name = ?", (name,))


def adopt(conn: sqlite3.Connection, name: str, library_id: str) -> None:
    """A run started on a database at this very path is this one's (the file was restored from a copy)."""
    conn.execute("UPDATE objbatch_runs SET library_id = ? WHERE run_name = ?", (library_id, name))


def adopt_unowned(conn: sqlite3.Connection, library_id: str, path: str) -> None:
    """Runs from before databases had identities belong to the database they are in."""
    conn.execute("UPDATE objbatch_runs SET library_id = ?, db_path = ? WHERE library_id IS NULL", (library_id, path))


UNFETCHED_WARN_HOURS = 12  # the service keeps results 24 hours after a job finished


def unfetched_results(conn: sqlite3.Connection, hours: float = UNFETCHED_WARN_HOURS) -> list[sqlite3.Row]:
    """Finished jobs of unfinished runs whose results were not downloaded and are older than `hours`."""
    return conn.execute(
        "SELECT j.job_id, j.run_name, j.completed_at, (strftime('%s', 'now') - j.completed_at) / 3600.0 AS hours "
        "FROM objbatch_jobs j JOIN objbatch_runs r USING (run_name) WHERE j.completed_at IS NOT NULL AND "
        "j.fetched_at IS NULL AND r.state NOT IN (?, ?) AND strftime('%s', 'now') - j.completed_at > ? "
        "ORDER BY j.completed_at", (*FINISHED, hours * 3600)).fetchall()


def unfetched_warnings(conn: sqlite3.Connection) -> list[str]:
    """One line per finished job whose results are older than 12 hours and not downloaded yet."""
    return [f"job {j['job_id']} of run {j['run_name']} finished {j['hours']:.0f} hours ago and its results are not "
            f"fetched yet; the service keeps them 24 hours: run make batch NAME={j['run_name']} (or make cron) now"
            for j in unfetched_results(conn)]


def in_flight(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Runs with files still claimed, their state and their jobs."""
    return conn.execute(
        "SELECT c.run_name, COUNT(*) AS files, r.state, r.db_path, "
        "(SELECT group_concat(job_id || ':' || COALESCE(status, '?'), ' ') FROM objbatch_jobs j "
        " WHERE j.run_name = c.run_name) AS jobs "
        "FROM objbatch_claims c LEFT JOIN objbatch_runs r USING (run_name) WHERE c.state = ? "
        "GROUP BY c.run_name ORDER BY c.run_name", (IN_FLIGHT,)).fetchall()


# ------------------------------------------------------------------ the run's lease

OWNER = f"{socket.gethostname()}:{os.getpid()}"
LEASE_SECONDS = 120.0  # a holder renews it every LEASE_SECONDS / 4; one that died frees it within this
# The lease a process holds, handed to what it runs (its stages, in its own process or as processes of their
# own): {"owner", "db", "run"}. A process whose environment names the run's current holder works under
# that lease; one that does not (another make batch, cron, a by-hand command) waits or is refused.
LEASE_ENV = "OBJBATCH_LEASE"


def _alive(owner: str) -> bool:
    """Whether a lease holder can still be running (one on another machine is trusted until it expires)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _take(conn: sqlite3.Connection, name: str) -> str | None:
    """Take the run's lease if it is free (or its holder is gone); else who holds it."""
    now = time.time()
    with ledger.transaction(conn):
        row = conn.execute("SELECT owner, until FROM objbatch_leases WHERE run_name = ?", (name,)).fetchone()
        if row and row["owner"] != OWNER and row["until"] > now and _alive(row["owner"]):
            holder: str = row["owner"]
            return holder
        conn.execute("INSERT INTO objbatch_leases (run_name, owner, until) VALUES (?, ?, ?) ON CONFLICT(run_name) "
                     "DO UPDATE SET owner = excluded.owner, until = excluded.until", (name, OWNER, now + LEASE_SECONDS))
    return None


def _handed_down(conn: ledger.Library, name: str) -> bool:
    """Whether this process runs under the run's lease that a holder handed down (LEASE_ENV names the
    holder, and the ledger says it holds the lease now)."""
    try:
        given = json.loads(os.environ.get(LEASE_ENV) or "{}")
    except ValueError:
        return False
    if not isinstance(given, dict) or given.get("db") != conn.path or given.get("run") != name:
        return False
    row = conn.execute("SELECT owner, until FROM objbatch_leases WHERE run_name = ?", (name,)).fetchone()
    return row is not None and row["owner"] == given.get("owner") and row["until"] > time.time()


@contextmanager
def lease(conn: ledger.Library, name: str, wait: bool = True, who: str = "objbatch") -> Iterator[bool]:
    """The run's lease, in the database itself: one process works on a run at a time (make batch, cron,
    cancel, a submission), whatever its user, home or machine. Yields whether it was obtained; with wait,
    says who has it, then waits. Held leases are renewed in the background and given back at the end.
    What the holder runs meanwhile (batch-run's stages) works under it: see LEASE_ENV."""
    if _handed_down(conn, name):
        yield True
        return
    holder = _take(conn, name)
    if holder and not wait:
        yield False
        return
    if holder:
        log(f"{who}: run {name} is being worked on by another process ({holder}); waiting for it")
        while _take(conn, name):
            time.sleep(config.wait_seconds("OBJBATCH_LEASE_POLL"))
    outer = os.environ.get(LEASE_ENV)
    os.environ[LEASE_ENV] = json.dumps({"owner": OWNER, "db": conn.path, "run": name})
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(conn.path, name, stop), daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        if outer is None:
            os.environ.pop(LEASE_ENV, None)
        else:
            os.environ[LEASE_ENV] = outer
        with ledger.transaction(conn):
            conn.execute("DELETE FROM objbatch_leases WHERE run_name = ? AND owner = ?", (name, OWNER))


def _renew(path: str, name: str, stop: threading.Event) -> None:
    renewal = sqlite3.connect(path, timeout=ledger.BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        while not stop.wait(LEASE_SECONDS / 4):
            renewal.execute("UPDATE objbatch_leases SET until = ? WHERE run_name = ? AND owner = ?",
                            (time.time() + LEASE_SECONDS, name, OWNER))
    finally:
        renewal.close()


# ------------------------------------------------------------------ what a run sends

@transition([RunState.CLAIMED], RunState.SUBMITTING)
def freeze(conn: sqlite3.Connection, name: str, run_id: str, manifest: Iterable[tuple[dict[str, Any], str]],
           parts: list[list[str]], digests: dict[str, str], estimate: dict[str, Any], server_url: str) -> None:
    """Record, before anything is uploaded or created at the service, exactly what the run sends: for every
    file its manifest line, custom_id, content hash and the digest of its request line; the split into
    parts, the run id that tags its jobs, its cost estimate and the service it goes to. This record, not
    the run folder, is what results are judged against."""
    part_of = {cid: index for index, ids in enumerate(parts, 1) for cid in ids}
    _move(conn, name, "freeze", ", run_id = ?, estimate_json = ?, server_url = ?",
          (run_id, json.dumps(estimate), server_url))

    def claim_row(entry: dict[str, Any], text: str) -> tuple[object, ...]:
        cid = entry.get("custom_id")
        key = cid if isinstance(cid, str) else ""  # in neither map: no part, no digest
        return (cid, part_of.get(key), text, entry.get("sent_hash"), digests.get(key), name, entry["file_path"])

    conn.executemany("UPDATE objbatch_claims SET custom_id = ?, part = ?, manifest_json = ?, content_hash = ?, "
                     "request_digest = ? WHERE run_name = ? AND file_path = ?",
                     (claim_row(entry, text) for entry, text in manifest))
    conn.executemany("INSERT INTO objbatch_parts (run_name, part, parts, request_count) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(run_name, part) DO NOTHING",
                     [(name, index, len(parts), len(ids)) for index, ids in enumerate(parts, 1)])


def manifest(conn: sqlite3.Connection, name: str) -> Iterator[dict[str, Any]]:
    for (text,) in conn.execute("SELECT manifest_json FROM objbatch_claims WHERE run_name = ? AND "
                                "manifest_json IS NOT NULL ORDER BY file_path", (name,)):
        yield json.loads(text)


def estimate(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """What the run was estimated to cost when it froze (costs.Estimate.as_dict), or None."""
    row = conn.execute("SELECT estimate_json FROM objbatch_runs WHERE run_name = ?", (name,)).fetchone()
    return ledger.load_json(row[0], None) if row else None


def digests(conn: sqlite3.Connection, name: str) -> dict[str, str]:
    """custom_id -> digest of the request line the run recorded as sent (frozen runs)."""
    return {r[0]: r[1] for r in conn.execute("SELECT custom_id, request_digest FROM objbatch_claims WHERE "
                                             "run_name = ? AND custom_id IS NOT NULL AND request_digest IS NOT NULL",
                                             (name,))}


def claimed_paths(conn: sqlite3.Connection, name: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT file_path FROM objbatch_claims WHERE run_name = ?", (name,))}


def record(conn: ledger.Library, run: Run, all_parts: bool = False) -> dict[str, Any]:
    """The job record (as batch-submit prints it) rebuilt from the ledger. For a cancelled run, parts that
    were never created are left out of the jobs (nothing to fetch) unless `all_parts`."""
    parts = conn.execute("SELECT part, parts, request_count, input_file, job_id FROM objbatch_parts "
                         "WHERE run_name = ? ORDER BY part", (run.name,)).fetchall()
    jobs = []
    for part in parts:
        ids = [r[0] for r in conn.execute("SELECT custom_id FROM objbatch_claims WHERE run_name = ? AND part = ? "
                                          "ORDER BY file_path", (run.name, part["part"]))]
        created = conn.execute("SELECT status, created_at FROM objbatch_jobs WHERE job_id = ?",
                               (part["job_id"],)).fetchone() if part["job_id"] else None
        jobs.append({"part": f"{part['part']}/{part['parts']}", "job_id": part["job_id"],
                     "input_file": part["input_file"], "request_count": part["request_count"],
                     "status": created["status"] if created else None,
                     "created_at": created["created_at"] if created else None, "custom_ids": ids})
    out = {"version": RECORD_VERSION, "run_name": run.name, "run_id": run.run_id, "model": run.model,
           "server": run.server_url, "endpoint": "/v1/chat/completions", "created_at": int(time.time()),
           "request_count": sum(j["request_count"] for j in jobs), "library_id": conn.library_id,
           "db_path": conn.path, "jobs": jobs}
    if run.state in (RunState.CANCELLING, RunState.CANCELLED) and not all_parts:
        out["jobs"] = [j for j in jobs if j["job_id"]]
        out["not_submitted"] = [cid for j in jobs if not j["job_id"] for cid in j["custom_ids"]]
    return out


def save_record(conn: sqlite3.Connection, record: dict[str, Any]) -> None:
    """Write what the job record says about parts and jobs into the ledger (after every paid step)."""
    with ledger.transaction(conn):
        for entry in record["jobs"]:
            index = int(entry["part"].split("/")[0])
            conn.execute("UPDATE objbatch_parts SET input_file = ?, job_id = ? WHERE run_name = ? AND part = ?",
                         (entry.get("input_file"), entry.get("job_id"), record["run_name"], index))
            if entry.get("job_id"):
                conn.execute(
                    "INSERT INTO objbatch_jobs (job_id, run_name, run_id, model, status, total_requests, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO NOTHING",
                    (entry["job_id"], record["run_name"], record["run_id"], record.get("model"), entry.get("status"),
                     entry["request_count"], entry.get("created_at"), now_iso()))
        run = get(conn, record["run_name"])
        if run and run.state == RunState.SUBMITTING and all(entry.get("job_id") for entry in record["jobs"]):
            mark_submitted(conn, run.name)


def check_record(conn: ledger.Library, record: dict[str, Any], where: str) -> None:
    """A job record carries the database it was made for: fetching or recording it into another is refused."""
    owner = record.get("library_id")
    if owner and owner != conn.library_id:
        raise Failure(f"{where} belongs to run {record.get('run_name')} of database {record.get('db_path')}, "
                      f"not {conn.path}; pass that database (DB={record.get('db_path')})")


def remote_cleanup(conn: sqlite3.Connection, name: str) -> str | None:
    """What became of a finished run's files at the service (None: not decided yet)."""
    row = conn.execute("SELECT remote_cleanup FROM objbatch_runs WHERE run_name = ?", (name,)).fetchone()
    return row[0] if row else None


def record_remote_cleanup(conn: sqlite3.Connection, name: str, outcome: str) -> None:
    with ledger.transaction(conn):
        conn.execute("UPDATE objbatch_runs SET remote_cleanup = ? WHERE run_name = ?", (outcome, name))


def record_jobs(conn: sqlite3.Connection, jobs: list[dict[str, Any]], fetched: bool = False) -> None:
    """Record the service's view of jobs (status, counters, when they finished and their result files);
    with `fetched`, that their result files are downloaded."""
    with ledger.transaction(conn):
        for job in jobs:
            conn.execute(
                "INSERT INTO objbatch_jobs (job_id, run_name, model, status, total_requests, completed_requests, "
                "succeeded_requests, failed_requests, created_at, updated_at, completed_at, output_file, error_file, "
                "fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET status = excluded.status, "
                "completed_requests = excluded.completed_requests, succeeded_requests = excluded.succeeded_requests, "
                "failed_requests = excluded.failed_requests, updated_at = excluded.updated_at, "
                "completed_at = COALESCE(excluded.completed_at, completed_at), "
                "output_file = COALESCE(excluded.output_file, output_file), "
                "error_file = COALESCE(excluded.error_file, error_file), "
                "fetched_at = COALESCE(fetched_at, excluded.fetched_at)",
                ((job["id"], (job.get("metadata") or {}).get("objbatch_run_name"), job.get("model"), job["status"],
                  job["total_requests"], job["completed_requests"], job["succeeded_requests"],
                  job["failed_requests"], job["created_at"], now_iso(), _unix(job.get("completed_at")),
                  job.get("output_file"), job.get("error_file"), now_iso() if fetched else None)))


def ended_jobs(conn: sqlite3.Connection, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The jobs the ledger records as ended (a terminal status: it never changes again), as the service
    described them in a status answer (record_jobs; a row written only from a job record has no counters
    and no result files, and is not taken)."""
    marks = ", ".join("?" * len(job_ids))
    rows = conn.execute(
        f"SELECT job_id, status, total_requests, completed_requests, succeeded_requests, failed_requests, "
        f"created_at, completed_at, output_file, error_file FROM objbatch_jobs WHERE job_id IN ({marks}) "
        "AND total_requests IS NOT NULL AND completed_requests IS NOT NULL AND succeeded_requests IS NOT NULL "
        "AND failed_requests IS NOT NULL",
        job_ids).fetchall()
    return {row["job_id"]: {"id": row["job_id"], "status": row["status"], "total_requests": row["total_requests"],
                            "completed_requests": row["completed_requests"],
                            "succeeded_requests": row["succeeded_requests"], "failed_requests": row["failed_requests"],
                            "created_at": row["created_at"], "completed_at": row["completed_at"],
                            "output_file": row["output_file"], "error_file": row["error_file"], "errors": []}
            for row in rows if row["status"] and client.terminal(row["status"])}


def _unix(value: object) -> int | None:
    """A job's timestamp as unix seconds (the SDK gives ints; a date string is read too)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None
    return None


def add_usage(conn: sqlite3.Connection, run_name: str | None, usage: dict[str, list[Any]]) -> None:
    """Add the tokens applied results carried to their jobs (job_id -> [model, resolved models, prompt,
    cached, output, reasoning]), with the dated model(s) that answered."""
    conn.executemany(
        "INSERT INTO objbatch_jobs (job_id, run_name, model, prompt_tokens, cached_tokens, completion_tokens, "
        "reasoning_tokens, resolved_model, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(job_id) DO UPDATE SET "
        "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
        "cached_tokens = cached_tokens + excluded.cached_tokens, "
        "completion_tokens = completion_tokens + excluded.completion_tokens, "
        "reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, "
        "resolved_model = COALESCE(excluded.resolved_model, resolved_model), "
        "run_name = COALESCE(run_name, excluded.run_name)",
        [(job_id, run_name, model, prompt, cached, output, reasoning, ",".join(sorted(resolved)) or None, now_iso())
         for job_id, (model, resolved, prompt, cached, output, reasoning) in usage.items()])


def run_of_result(conn: sqlite3.Connection, job_id: str | None, file_path: str) -> str | None:
    """The run a result belongs to: the run whose part became that job, or (a skipped file, no job) the
    unfinished run holding the file."""
    if job_id:
        row = conn.execute("SELECT run_name FROM objbatch_parts WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None
    row = conn.execute("SELECT run_name FROM objbatch_claims WHERE file_path = ? AND state = ?",
                       (file_path, ClaimState.CLAIMED)).fetchone()
    return row[0] if row else None


def sent(conn: sqlite3.Connection, name: str, file_path: str, custom_id: str) -> dict[str, Any] | None:
    """What the run's ledger says was sent for this file under this custom_id (its manifest line), or
    None when the ledger has no such record (the run sent nothing, or it is finished)."""
    row = conn.execute("SELECT manifest_json FROM objbatch_claims WHERE run_name = ? AND file_path = ? AND "
                       "custom_id = ?", (name, file_path, custom_id)).fetchone()
    return ledger.load_json(row[0], None) if row else None
