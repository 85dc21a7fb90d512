"""What the library holds for a file, as objbatch's readers (review, show, export, approve, requeue) see
it: its status and its current metadata. The current file_metadata_ai row is the authority (the library's
own review edits it); files.ai_metadata_json is a mirror. And the paths a person names or pipes in."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sqlite3
from typing import IO, Any, Iterable, Iterator

from .common import Failure, log
from .ledger import has_column, load_json
from .output import unquote
from .states import FileStatus

STORED = """
SELECT f.file_path, f.filename, f.ai_metadata_status AS status, f.ai_confidence_score AS confidence,
       f.error_message, COALESCE(f.is_deleted, 0) AS is_deleted,
       COALESCE(m.metadata_json, f.ai_metadata_json) AS metadata_json, m.model, {resolved} AS resolved_model,
       m.prompt_version,
       m.created_at AS extracted_at, COALESCE(o.attempts, 0) AS attempts, o.reasons_json
FROM files f
LEFT JOIN file_metadata_ai m ON m.metadata_id = (SELECT MAX(metadata_id) FROM file_metadata_ai
                                                  WHERE file_path = f.file_path AND is_current = 1)
LEFT JOIN objbatch_files o ON o.file_path = f.file_path
"""
WITH_METADATA = (FileStatus.EXTRACTED, FileStatus.NEEDS_REVIEW, FileStatus.APPROVED)


def stored(conn: sqlite3.Connection, where: str = "", params: dict[str, Any] | tuple[Any, ...] = (), order: str = "f.file_path",
           limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Files (filtered by `where`, a condition on f, m and o) with their current metadata parsed."""
    resolved = "m.resolved_model" if has_column(conn, "file_metadata_ai", "resolved_model") else "NULL"
    tail = f" ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit is not None else "")
    for row in conn.execute(STORED.format(resolved=resolved) + (f" WHERE {where}" if where else "") + tail, params):
        item = dict(row)
        item["metadata"] = load_json(item.pop("metadata_json"), None)
        item["status"] = item["status"] or FileStatus.PENDING
        item["reasons"] = load_json(item.pop("reasons_json"), [])
        yield item


# What deserves a person's look (review, report): the groups, each most doubtful first.
REVIEW_GROUPS = {
    "needs_review": ("f.ai_metadata_status = 'needs_review' OR (f.ai_metadata_status = 'extracted' "
                     "AND f.ai_confidence_score < :threshold)"),
    "failed_validation": "f.ai_metadata_status IN ('failed_validation', 'failed_json')",
    "skipped": "f.ai_metadata_status = 'skipped'",
}
REVIEW_ORDER = {"needs_review": "COALESCE(f.ai_confidence_score, 0), f.file_path",
                "failed_validation": "COALESCE(o.attempts, 0) DESC, f.file_path", "skipped": "f.file_path"}


def review_group(conn: sqlite3.Connection, group: str, threshold: float,
                 limit: int | None) -> tuple[int, list[dict[str, Any]]]:
    """(how many files are in the group, the first `limit` of them as stored, each with its review row)."""
    where = f"COALESCE(f.is_deleted, 0) = 0 AND ({REVIEW_GROUPS[group]})"
    params = {"threshold": threshold}
    total = conn.execute(f"SELECT COUNT(*) FROM files f WHERE {where}", params).fetchone()[0]
    items = [{**item, "review": review_row(item, group)}
             for item in stored(conn, where, params, REVIEW_ORDER[group], limit)]
    return total, items


def review_row(item: dict[str, Any], group: str) -> dict[str, Any]:
    """One file as review lists it: its group, status, confidence, attempts, reasons and metadata outline."""
    meta = item["metadata"] if isinstance(item["metadata"], dict) else {}
    reasons = item["reasons"] if group == "failed_validation" and item["reasons"] else \
        [r for r in (item["error_message"] or "").split("; ") if r]
    return {"file_path": item["file_path"], "group": group, "status": item["status"],
            "confidence": item["confidence"], "attempts": item["attempts"], "reasons": reasons,
            "category": meta.get("category"), "difficulty": meta.get("difficulty"),
            "topics": meta.get("primary_topics", []), "metadata_digest": digest(item["metadata"])}


def digest(metadata: object) -> str | None:
    """What a person reviewed of a file's metadata (all of it, not only what the table shows), as 16 hex
    digits: review prints it, and approve refuses a file whose metadata no longer has it."""
    if metadata is None:
        return None
    text = json.dumps(metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def refused_line(refused: list[tuple[str, str]], shown: int = 3) -> str:
    """'5 refused (failed_validation: no valid metadata: a.txt, b.txt, c.txt and 2 more)': each reason once with
    its first few file names, so a long refusal stays one readable line (--json lists every one)."""
    by_reason: dict[str, list[str]] = {}
    for path, why in refused:
        by_reason.setdefault(why, []).append(path.rsplit("/", 1)[-1])
    parts = [f"{why}: {', '.join(names[:shown])}" + (f" and {len(names) - shown} more" if len(names) > shown else "")
             for why, names in by_reason.items()]
    return f"{len(refused)} refused ({'; '.join(parts)})"


def names_from(arguments: Iterable[str], stdin: IO[str], reviewed: dict[str, str] | None = None) -> list[str]:
    """Paths given as arguments; '-' reads more from stdin: plain paths, JSON lines with a file_path (as
    review --nl writes), a JSON array of such objects (review --json), or CSV with a file_path column.
    `reviewed` gets each piped path's metadata_digest (what review showed), when its line has one."""
    names: list[str] = []
    reviewed = {} if reviewed is None else reviewed
    for argument in arguments:
        names.extend(_read(stdin, reviewed) if argument == "-" else [argument])
    return names


TABLE_LINE = re.compile(r"^(needs_review|failed_validation|skipped|extracted|approved|pending)\s{2,}\S")


def _read(stream: IO[str], reviewed: dict[str, str]) -> list[str]:
    if stream.isatty():  # a bare '-' at a prompt would otherwise wait without a word
        log("reading paths (or review --nl/--json/--csv output) from the terminal; end with Ctrl-D")
    raw = getattr(stream, "buffer", None)  # as sent: a CR inside a quoted CSV cell is part of the path
    text = raw.read().decode("utf-8", "surrogateescape") if raw is not None else stream.read()
    if text.lstrip().startswith("file_path,"):  # review --csv, export-metadata --csv
        return [_path({**row, "file_path": unquote(row["file_path"])}, "", reviewed)
                for row in csv.DictReader(io.StringIO(text.lstrip())) if row.get("file_path")]
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Failure(f"stdin looks like a JSON array but is not valid JSON ({exc.msg}); pipe review --json") from None
        return [_path(item, f"item {i + 1}", reviewed) for i, item in enumerate(items)]
    names = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if TABLE_LINE.match(line):
            raise Failure(f"stdin line {lineno} is a line of review's table, not a path; pipe review --nl (or "
                          "--json, --csv)")
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                names.append(_path(json.loads(line), f"line {lineno}", reviewed))
            except json.JSONDecodeError:
                raise Failure(f"stdin line {lineno} starts like JSON but is not valid JSON; give one path or "
                              "one JSON object a line") from None
        else:
            names.append(line)
    return names


def _path(item: object, where: str, reviewed: dict[str, str]) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("file_path"), str):
        raise Failure(f"stdin {where} has no file_path; pipe review --json or --nl, or give plain paths")
    if isinstance(item.get("metadata_digest"), str) and item["metadata_digest"]:
        reviewed[item["file_path"]] = item["metadata_digest"]
    path: str = item["file_path"]
    return path


def resolve(conn: sqlite3.Connection, names: list[str],
            loose: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """Each name to the file_path it means: the path itself, else the one path ending with it (after a '/'),
    else with `loose` (show) the one path containing it. Returns (name -> file_path, name -> why it matches
    none; several matches are listed)."""
    found, unknown = {}, {}
    for name in dict.fromkeys(names):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 (a shell passes them): no statement can name it
            unknown[name] = "not valid UTF-8: no file of the database can be named so; rescan it with objlib"
            continue
        if conn.execute("SELECT 1 FROM files WHERE file_path = ?", (name,)).fetchone():
            found[name] = name
            continue
        like = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        matches = _like(conn, f"%/{like}")
        if not matches and loose and name:
            matches = _like(conn, f"%{like}%")
        if len(matches) == 1:
            found[name] = matches[0]
        elif not matches:
            unknown[name] = "not in the database"
        else:
            listed = "; ".join(matches[:5]) + (" and more" if len(matches) > 5 else "")
            unknown[name] = f"matches several files ({listed}); give more of its path"
    return found, unknown


def _like(conn: sqlite3.Connection, pattern: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT file_path FROM files WHERE file_path LIKE ? ESCAPE '\\' "
                                       "ORDER BY file_path LIMIT 6", (pattern,))]
