"""export-metadata: the stored metadata, one row per file, as CSV, a JSON array or JSON lines.

The metadata is the current file_metadata_ai row (the library's own review edits it), else the files
mirror. Lists (topics, aspects, arguments, positions) are JSON in their CSV cell, so CSV round-trips.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator

import click

from .. import ledger, library, output
from ..common import atomic_output, cli, count, log
from ..options import db_option, max_option, output_option
from ..states import FileStatus

STATUSES = (FileStatus.EXTRACTED, FileStatus.NEEDS_REVIEW, FileStatus.APPROVED, FileStatus.FAILED_VALIDATION,
            FileStatus.SKIPPED, FileStatus.PENDING)


def rows(conn: sqlite3.Connection, statuses: tuple[str, ...], limit: int | None) -> Iterator[dict]:
    where = "COALESCE(f.is_deleted, 0) = 0 AND COALESCE(m.metadata_json, f.ai_metadata_json) IS NOT NULL"
    if statuses:
        where += f" AND f.ai_metadata_status IN ({','.join('?' * len(statuses))})"
    for seen, item in enumerate(library.stored(conn, where, statuses)):
        if limit is not None and seen >= limit:
            return
        yield flat(item)


def flat(item: dict) -> dict:
    meta = item["metadata"] if isinstance(item["metadata"], dict) else {}
    description = meta.get("semantic_description") or {}
    return {"file_path": item["file_path"], "status": item["status"], "confidence": item["confidence"],
            "category": meta.get("category"), "difficulty": meta.get("difficulty"),
            "primary_topics": meta.get("primary_topics"), "topic_aspects": meta.get("topic_aspects"),
            "summary": description.get("summary"), "key_arguments": description.get("key_arguments"),
            "philosophical_positions": description.get("philosophical_positions"),
            "confidence_score": meta.get("confidence_score"), "model": item["model"],
            "resolved_model": item["resolved_model"],
            "prompt_version": item["prompt_version"], "extracted_at": item["extracted_at"]}


def table(found: list[dict]) -> str:
    return "\n".join(f"{r['status']:<13} {r['category'] or '-':<22} {r['difficulty'] or '-':<13} {r['file_path']}"
                     for r in found)


@cli("export-metadata --db data/library.db -o metadata.json", "export-metadata --csv --status approved > approved.csv")
@db_option()
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in STATUSES]),
              help="Only files with this status (repeatable; default: every file with metadata).")
@max_option()
@output_option(name="path")
@output.options(default="json")
def main(db: str, statuses: tuple[str, ...], limit: int | None, path: str, fmt: str) -> None:
    """Write the stored metadata of the library's files."""
    with ledger.opened(db, identity=False, read_only=True) as conn, atomic_output(path) as out:
        written = output.write(rows(conn, statuses, limit), fmt, out, table)
    log(f"export-metadata: {count(written, 'file')}")


if __name__ == "__main__":
    main()
