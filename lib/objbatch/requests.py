"""Requests: the batch request line for one selected file, and its manifest line (what was sent: custom_id,
hashes; or why the file was skipped). A file that cannot be sent (not text, too big, missing, unreadable,
not decodable) is a skip with the reason; one bad file never stops the run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import prompt, sources

TEXT_SUFFIXES = {".txt", ".md"}
MAX_BYTES = sources.MAX_BYTES
Skip = sources.Skip  # validate and the estimate catch it from here


def custom_id_for(file_path: str, content_hash: str) -> str:
    """Stable: the same file with the same content always gets the same id, whatever its position."""
    return f"f{hashlib.sha256(file_path.encode('utf-8')).hexdigest()[:16]}-{content_hash[:16]}"


def read_text(record: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(text, sha256 of the bytes read, encoding, size and mtime of what was read), or Skip with the reason."""
    path = Path(record["file_path"])
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise Skip(f"not a text file ({suffix or 'no extension'}); only {', '.join(sorted(TEXT_SUFFIXES))} are sent",
                   "not_text")
    root = record.get("library_root")  # build-jsonl always has one; validate rereads only what was sent
    data, stat = sources.read_bytes(sources.confined(record["file_path"], root) if root else record["file_path"],
                                    MAX_BYTES)
    if b"\x00" in data[:8192]:
        raise Skip("file looks binary (NUL bytes), not text", "binary")
    digest = hashlib.sha256(data).hexdigest()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise Skip("text is not decodable as UTF-8 or Windows-1252", "undecodable")
    if not text.strip():
        raise Skip("file is empty", "empty")
    return text, digest, encoding, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def build(record: dict[str, Any], model: str, text_tokens: int, config: str,
          effort: str | None = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(request line or None, manifest line) for one selected file."""
    base = {"file_path": record["file_path"], "filename": record["filename"],
            "db_hash": record.get("content_hash") or "", "attempts": record.get("attempts", 0)}
    try:
        text, sent_hash, encoding, stat = read_text(record)
    except Skip as exc:
        return None, {**base, "skip": str(exc), "skip_kind": exc.kind}
    custom_id = custom_id_for(record["file_path"], sent_hash)
    body, excerpted = prompt.request_body(model, record, text, text_tokens, effort)
    manifest = {**base, "custom_id": custom_id, "sent_hash": sent_hash, "sent_stat": stat,
                "encoding": encoding.replace("-sig", ""), "chars": len(text), "excerpted": excerpted, "model": model,
                "prompt_version": prompt.PROMPT_VERSION, "config_hash": config}
    return {"custom_id": custom_id, "body": body}, manifest


def would_send(records: Iterable[dict[str, Any]], model: str, root: str, effort: str | None = None,
               text_tokens: int = prompt.DEFAULT_TEXT_TOKENS) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """(request or None, manifest line) of each selected record, built in memory from files under `root`."""
    config = prompt.config_hash(model, text_tokens, effort)
    for record in records:
        yield build({**record, "library_root": root}, model, text_tokens, config, effort)
