"""select-pending: the files to extract, as JSONL, in a stable order.

Eligible: status pending or NULL, retry_scheduled and failed_json (set by the library's own tools),
failed_validation (under the attempt cap), or skipped because the file was missing or unreadable and it
can be read again; not deleted; not claimed by a run still in flight. With
--run RUN the selection is claimed for that run in the same transaction (the run enters the ledger), so
two runs at once never take the same file; rerunning with the same RUN returns the same claim. A finished
run claims nothing again. A row whose path is not valid UTF-8 is set aside with a reason; the rest goes on.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator

import click

from .. import defaults, ledger, runs, sources
from ..common import Failure, atomic_output, check_run_name, cli, count, kill_point, log, now_iso, write_jsonl
from ..options import ATTEMPTS, IN_FLIGHT, db_option, max_option, model_option, output_option, run_option
from ..states import FileStatus

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


def as_record(row: sqlite3.Row) -> dict:
    scanner = ledger.load_json(row["metadata_json"], row["metadata_json"])
    return {"file_path": row["file_path"], "filename": row["filename"], "file_size": row["file_size"],
            "content_hash": row["content_hash"] or "", "scanner_metadata": scanner or {},
            "status": row["ai_metadata_status"] or FileStatus.PENDING, "attempts": row["attempts"]}


def candidates(conn: sqlite3.Connection, params: dict, bad: list[int]) -> Iterator[sqlite3.Row]:
    """Eligible rows, lazily. A path that is not valid UTF-8 cannot be selected (nor sent, nor matched
    back): its rowid goes to `bad`. Other text that is not UTF-8 (a file name) is read with U+FFFD."""
    for row in conn.execute(ELIGIBLE, params):
        if isinstance(row["file_path"], ledger.NotUtf8):
            bad.append(row["row_id"])
        else:
            yield row


def eligible(conn: sqlite3.Connection, params: dict, limit: int | None, bad: list[int]) -> Iterator:
    """Up to `limit` eligible rows, lazily; a file skipped as missing or unreadable only once it can be read."""
    taken = 0
    for row in candidates(conn, params, bad):
        if limit is not None and taken >= limit:
            return
        if row["ai_metadata_status"] == FileStatus.SKIPPED and not sources.readable(row["file_path"]):
            continue
        taken += 1
        yield row


def criteria(max_attempts: int, retry_exhausted: bool) -> dict:
    return {"max_attempts": max_attempts, "retry_exhausted": int(retry_exhausted)}


def preview(conn: ledger.Library, limit: int | None, max_attempts: int, retry_exhausted: bool) -> Iterator[dict]:
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


def claimed(conn: sqlite3.Connection, claim: str) -> Iterator[dict]:
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


@cli("select-pending --db data/library.db --max 20 -o select.jsonl",
     "select-pending --db data/library.db --max 100 --run run-1 --model mistral-small-latest -o select.jsonl")
@db_option()
@max_option()
@click.option("--max-attempts", default=defaults.MAX_ATTEMPTS, show_default=True, type=ATTEMPTS,
              help="Failed files are retried until they have failed this many times.")
@click.option("--retry-exhausted", is_flag=True, help="Also take failed files that reached --max-attempts.")
@run_option(help="Claim the selection for run RUN so no other run takes these files.")
@model_option(default=None, help="Model of the claiming run (recorded in the ledger).")
@click.option("--max-in-flight", type=IN_FLIGHT, default=None,
              help="With --run: start no new run while this many runs of the database are unfinished (the "
                   "cap make cron keeps, counted in the claim's own transaction).")
@click.option("--library-root", type=click.Path(file_okay=False), default=None,
              help="The folder the library's files are in (make's LIBRARY_ROOT); build-jsonl reads nothing "
                   "outside it. Default: where objlib records it, else the common folder of the rows.")
@output_option()
def main(db: str, limit: int | None, max_attempts: int, retry_exhausted: bool, run_name: str | None,
         model: str | None, max_in_flight: int | None, library_root: str | None, output: str) -> None:
    """Print the files to extract as JSONL: path, name, size, content hash, scanner metadata, attempts."""
    if run_name is not None:
        check_run_name(run_name)
    with ledger.opened(db) as conn:
        if run_name:
            claim_files(conn, limit, max_attempts, retry_exhausted, run_name, model, max_in_flight)
        report_others(conn, run_name)
        kill_point("after-claim")
        records = claimed(conn, run_name) if run_name else preview(conn, limit, max_attempts, retry_exhausted)
        root = sources.library_root(conn, db, library_root)[0]
        with atomic_output(output) as out:
            written = write_jsonl(({**record, "library_root": root} for record in records), out)
    log(f"select-pending: {count(written, 'file')} selected" + (f" for run {run_name}" if run_name else ""))


if __name__ == "__main__":
    main()
