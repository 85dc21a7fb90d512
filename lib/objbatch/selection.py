"""Selection: which files a run takes. Eligible: status pending or NULL, retry_scheduled and failed_json (set
by the library's own tools), failed_validation (under the attempt cap), or skipped because the file was
missing or unreadable and it can be read again; not deleted; not claimed by a run still in flight. A claim
takes the selection for a run in the same transaction (the run enters the ledger), so two runs at once never
take the same file. A row whose path is not valid UTF-8 is set aside with a reason; the rest goes on."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterator

from . import ledger, runs, sources
from .common import Failure, count, log, now_iso
from .states import FileStatus

COLUMNS = """f.rowid AS row_id, f.file_path, f.filename, f.file_size, f.content_hash, f.metadata_json,
       f.ai_metadata_status, COALESCE(o.attempts, 0) AS attempts, o.skip_kind"""
ELIGIBLE = f"""
SELECT {COLUMNS}
FROM files f LEFT JOIN objbatch_files o ON o.file_path = f.file_path
WHERE COALESCE(f.is_deleted, 0) = 0
  AND (f.ai_metadata_status IS NULL OR f.ai_metadata_status IN ('pending', 'retry_scheduled', 'failed_json')
       OR (f.ai_metadata_status = 'failed_validation' AND (COALESCE(o.attempts, 0) < :max_attempts
                                                           OR :retry_exhausted))
       OR (f.ai_metadata_status = 'skipped' AND o.skip_kind IN ('missing', 'unreadable')))
  AND NOT EXISTS (SELECT 1 FROM objbatch_claims c WHERE c.file_path = f.file_path AND c.state = 'claimed')
ORDER BY f.file_path
"""
CLAIMED = f"""
SELECT {COLUMNS}
FROM objbatch_claims c JOIN files f ON f.file_path = c.file_path
LEFT JOIN objbatch_files o ON o.file_path = f.file_path
WHERE c.run_name = ? ORDER BY f.file_path
"""
NOT_UTF8 = ledger.NOT_UTF8_PATH


def as_record(row: sqlite3.Row) -> dict[str, Any]:
    scanner = ledger.load_json(row["metadata_json"], row["metadata_json"])
    return {"file_path": row["file_path"], "filename": row["filename"], "file_size": row["file_size"],
            "content_hash": row["content_hash"] or "", "scanner_metadata": scanner or {},
            "status": row["ai_metadata_status"] or FileStatus.PENDING, "attempts": row["attempts"]}


def candidates(conn: sqlite3.Connection, params: dict[str, Any], bad: list[int]) -> Iterator[sqlite3.Row]:
    """Eligible rows, lazily. A path that is not valid UTF-8 cannot be selected (nor sent, nor matched
    back): its rowid goes to `bad`. Other text that is not UTF-8 (a file name) is read with U+FFFD."""
    for row in conn.execute(ELIGIBLE, params):
        if isinstance(row["file_path"], ledger.NotUtf8):
            bad.append(row["row_id"])
        else:
            yield row


def eligible(conn: sqlite3.Connection, params: dict[str, Any], limit: int | None, bad: list[int]) -> Iterator[sqlite3.Row]:
    """Up to `limit` eligible rows, lazily; a file skipped as missing or unreadable only once it can be read."""
    taken = 0
    for row in candidates(conn, params, bad):
        if limit is not None and taken >= limit:
            return
        if row["ai_metadata_status"] == FileStatus.SKIPPED and not sources.readable(row["file_path"]):
            continue
        taken += 1
        yield row


def criteria(max_attempts: int, retry_exhausted: bool) -> dict[str, Any]:
    return {"max_attempts": max_attempts, "retry_exhausted": int(retry_exhausted)}


def preview(conn: ledger.Library, limit: int | None, max_attempts: int, retry_exhausted: bool) -> Iterator[dict[str, Any]]:
    """What a run would take now, claiming nothing."""
    bad: list[int] = []
    for row in eligible(conn, criteria(max_attempts, retry_exhausted), limit, bad):
        yield as_record(row)
    if bad:
        log(f"select-pending: {count(len(bad), 'file')} left out: {NOT_UTF8}")


def claim_files(conn: ledger.Library, limit: int | None, max_attempts: int, retry_exhausted: bool, claim: str,
                model: str | None, max_in_flight: int | None = None) -> None:
    """Claim the selection for run `claim` in one transaction (the run enters the ledger); a run that
    holds files already keeps them; a finished run claims nothing again; a new run is not started while
    `max_in_flight` runs of the database are unfinished (counted in the same transaction, so crons on
    other runs folders share the cap)."""
    bad: list[int] = []
    with ledger.transaction(conn):
        run = runs.belonging(conn, claim)
        if run and run.finished:
            raise Failure(f"run {claim} is finished ({run.state} {run.finished_at}); it claims nothing again: "
                          "start a new run (make batch without NAME)")
        if run:
            log(f"select-pending: run {claim} already holds its files; returning the same selection")
            return
        if max_in_flight is not None and len(flying := runs.unfinished(conn)) >= max_in_flight:
            log(f"select-pending: {count(len(flying), 'run')} in flight ({', '.join(r.name for r in flying[:3])}"
                f"{', ...' if len(flying) > 3 else ''}) and the cap is {max_in_flight}: run {claim} is not started")
            return
        paths = [row["file_path"] for row in eligible(conn, criteria(max_attempts, retry_exhausted), limit, bad)]
        _set_aside(conn, bad)
        if paths:
            runs.create(conn, claim, model, paths)


def claimed(conn: sqlite3.Connection, claim: str) -> Iterator[dict[str, Any]]:
    for row in conn.execute(CLAIMED, (claim,)):
        yield as_record(row)


def _set_aside(conn: sqlite3.Connection, bad: list[int]) -> None:
    if bad:
        conn.executemany("UPDATE files SET ai_metadata_status = 'skipped', error_message = ?, updated_at = ? "
                         "WHERE rowid = ?", [(NOT_UTF8, now_iso(), rowid) for rowid in bad])
        log(f"select-pending: {count(len(bad), 'file')} set aside as skipped: {NOT_UTF8}")


def report_others(conn: sqlite3.Connection, claim: str | None) -> None:
    for row in runs.in_flight(conn):
        if row["run_name"] != claim:
            log(f"select-pending: skipping {count(row['files'], 'file')} in flight in run {row['run_name']}"
                + (f" (jobs {row['jobs']})" if row["jobs"] else ""))
