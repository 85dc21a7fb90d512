"""Curation: what a person decides once a run is done. Approving a file's metadata (a batch never overwrites
it) and sending files back to the queue: which of the files named qualify, why the others do not (each
refused by name, with the reason), and the writes, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from . import ledger, library, runs
from .common import now_iso
from .states import FileStatus

CHANGED = "its metadata changed since it was reviewed; review it again"


def to_approve(conn: ledger.Library, names: list[str], min_confidence: float | None,
               reviewed: dict[str, str] | None = None) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({path: current status} to approve, refusals (path, why)). A file piped from review with the digest
    of the metadata it showed is approved only if its metadata is still that."""
    found, unknown = library.resolve(conn, names)
    shown = {found[name]: value for name, value in (reviewed or {}).items() if name in found}
    refused = list(unknown.items())
    items = {path: next(library.stored(conn, "f.file_path = ?", (path,))) for path in found.values()}
    if min_confidence is not None:
        for item in library.stored(conn, "f.ai_metadata_status IN ('extracted', 'needs_review') AND "
                                         "f.ai_confidence_score >= ? AND COALESCE(f.is_deleted, 0) = 0",
                                   (min_confidence,)):
            items.setdefault(item["file_path"], item)
    approve = {}
    for path, item in items.items():
        why = _unfit(item)
        if not why and path in shown and shown[path] != library.digest(item["metadata"]):
            why = CHANGED
        if why:
            refused.append((path, why))
        else:
            approve[path] = item["status"]
    return approve, refused


def _unfit(item: dict[str, Any]) -> str | None:
    if isinstance(item["file_path"], ledger.NotUtf8):
        return ledger.NOT_UTF8_PATH
    if item["is_deleted"]:
        return "deleted"
    if item["status"] not in library.WITH_METADATA:
        return f"{item['status']}: no valid metadata"
    if not item["metadata"]:
        return "no stored metadata"
    return None


def approve(conn: ledger.Library, chosen: dict[str, str]) -> list[str]:
    """Approve the files of `to_approve`; the ones that already were, which stay as they are."""
    already = [path for path, status in chosen.items() if status == FileStatus.APPROVED]
    conn.executemany("UPDATE files SET ai_metadata_status = 'approved', updated_at = ? WHERE file_path = ?",
                     [(now_iso(), path) for path, status in chosen.items() if status != FileStatus.APPROVED])
    return already


def to_requeue(conn: ledger.Library, names: list[str], statuses: tuple[str, ...],
               include_approved: bool) -> tuple[list[str], list[tuple[str, str]]]:
    found, unknown = library.resolve(conn, names)
    refused = list(unknown.items())
    paths = dict.fromkeys(found.values())  # an ordered set
    for status in statuses:
        paths.update(dict.fromkeys(r[0] for r in conn.execute(
            "SELECT file_path FROM files WHERE ai_metadata_status = ? AND COALESCE(is_deleted, 0) = 0 "
            "ORDER BY file_path", (status,))))
    flying = {r[0]: r[1] for r in conn.execute("SELECT file_path, run_name FROM objbatch_claims WHERE state = ?",
                                               (runs.IN_FLIGHT,))}
    keep = []
    for path in paths:
        if isinstance(path, ledger.NotUtf8):  # no statement can name it: it would match nothing
            refused.append((path, ledger.NOT_UTF8_PATH))
            continue
        row = conn.execute("SELECT ai_metadata_status, COALESCE(is_deleted, 0) FROM files WHERE file_path = ?",
                           (path,)).fetchone()
        why = ("deleted" if row[1] else f"in flight in run {flying[path]}" if path in flying else
               "approved: add --include-approved to requeue it" if row[0] == FileStatus.APPROVED and not include_approved
               else None)
        if why:
            refused.append((path, why))
        else:
            keep.append(path)
    return keep, refused


def requeue(conn: ledger.Library, paths: list[str]) -> None:
    """Back to the queue: status pending, attempt count and reasons reset (the metadata stays until a run
    replaces it)."""
    now = now_iso()
    conn.executemany("UPDATE files SET ai_metadata_status = 'pending', error_message = NULL, updated_at = ? "
                     "WHERE file_path = ?", [(now, path) for path in paths])
    conn.executemany("UPDATE objbatch_files SET attempts = 0, reasons_json = '[]', skip_kind = NULL "
                     "WHERE file_path = ?", [(path,) for path in paths])
