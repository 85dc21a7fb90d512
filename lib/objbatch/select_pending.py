"""select-pending: the files to extract, as JSONL, in a stable order.

Eligible: status pending, NULL or failed_validation (under the attempt cap), not deleted, not claimed by a
run still in flight. With --claim RUN the selection is claimed for that run in the same transaction, so
two runs at once never take the same file; rerunning with the same RUN returns the same claim.
"""

from __future__ import annotations

import sqlite3

import click

from . import ledger
from .common import atomic_output, command, log, write_jsonl

DEFAULT_MAX_ATTEMPTS = 3

ELIGIBLE = """
SELECT f.file_path, f.filename, f.file_size, f.content_hash, f.metadata_json, f.ai_metadata_status,
       COALESCE(o.attempts, 0) AS attempts
FROM files f LEFT JOIN objbatch_files o ON o.file_path = f.file_path
WHERE COALESCE(f.is_deleted, 0) = 0
  AND (f.ai_metadata_status IS NULL OR f.ai_metadata_status IN ('pending', 'failed_validation'))
  AND (f.ai_metadata_status IS NOT 'failed_validation' OR COALESCE(o.attempts, 0) < :max_attempts
       OR :retry_exhausted)
  AND NOT EXISTS (SELECT 1 FROM objbatch_claims c WHERE c.file_path = f.file_path AND c.state = 'claimed')
ORDER BY f.file_path
LIMIT :limit
"""

CLAIMED = """
SELECT f.file_path, f.filename, f.file_size, f.content_hash, f.metadata_json, f.ai_metadata_status,
       COALESCE(o.attempts, 0) AS attempts
FROM objbatch_claims c JOIN files f ON f.file_path = c.file_path
LEFT JOIN objbatch_files o ON o.file_path = f.file_path
WHERE c.run_name = ? ORDER BY f.file_path
"""


def as_record(row: sqlite3.Row) -> dict:
    scanner = ledger.load_json(row["metadata_json"], row["metadata_json"])
    return {"file_path": row["file_path"], "filename": row["filename"], "file_size": row["file_size"],
            "content_hash": row["content_hash"], "scanner_metadata": scanner or {},
            "status": row["ai_metadata_status"] or "pending", "attempts": row["attempts"]}


def select(conn: sqlite3.Connection, limit: int | None, max_attempts: int, retry_exhausted: bool,
           claim: str | None, model: str | None) -> list[dict]:
    params = {"limit": -1 if limit is None else limit, "max_attempts": max_attempts,
              "retry_exhausted": int(retry_exhausted)}
    if not claim:
        return [as_record(r) for r in conn.execute(ELIGIBLE, params)]
    with ledger.transaction(conn):
        if conn.execute("SELECT 1 FROM objbatch_claims WHERE run_name = ? LIMIT 1", (claim,)).fetchone():
            log(f"select-pending: run {claim} already holds its files; returning the same selection")
            return [as_record(r) for r in conn.execute(CLAIMED, (claim,))]
        rows = conn.execute(ELIGIBLE, params).fetchall()
        if rows:
            ledger.ensure_run(conn, claim, model)
            conn.executemany("INSERT INTO objbatch_claims (run_name, file_path, state, claimed_at) "
                             "VALUES (?, ?, 'claimed', ?)", [(claim, r["file_path"], ledger.now_iso()) for r in rows])
    return [as_record(r) for r in rows]


def report_others(conn: sqlite3.Connection, claim: str | None) -> None:
    for row in ledger.in_flight(conn):
        if row["run_name"] != claim:
            log(f"select-pending: skipping {row['files']} files in flight in run {row['run_name']}"
                + (f" (jobs {row['jobs']})" if row["jobs"] else ""))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", default="data/library.db", show_default=True, type=click.Path(dir_okay=False),
              help="The library database.")
@click.option("--max", "limit", type=click.IntRange(min=0), default=None, help="At most this many files.")
@click.option("--max-attempts", default=DEFAULT_MAX_ATTEMPTS, show_default=True, type=click.IntRange(min=1),
              help="Failed files are retried until they have failed this many times.")
@click.option("--retry-exhausted", is_flag=True, help="Also take failed files that reached --max-attempts.")
@click.option("--claim", "claim", default=None, metavar="RUN",
              help="Claim the selection for run RUN so no other run takes these files.")
@click.option("--model", default=None, help="Model of the claiming run (recorded in the ledger).")
@click.option("-o", "--output", default="-", help="Write here (atomically) instead of stdout.")
@command
def main(db: str, limit: int | None, max_attempts: int, retry_exhausted: bool, claim: str | None,
         model: str | None, output: str) -> None:
    """Print the files to extract as JSONL: path, name, size, content hash, scanner metadata, attempts."""
    with ledger.opened(db) as conn:
        records = select(conn, limit, max_attempts, retry_exhausted, claim, model)
        report_others(conn, claim)
    with atomic_output(output) as out:
        write_jsonl(records, out)
    log(f"select-pending: {len(records)} files selected" + (f" for run {claim}" if claim else ""))


if __name__ == "__main__":
    main()
