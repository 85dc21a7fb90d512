"""Decisions: one per fetched result (extracted, needs_review or failed_validation, with reasons), plus a
skipped decision for every file the manifest says was not sent. The rules are data: schemas/metadata.schema.json
(hard) and schemas/soft-rules.json (soft, repairs, weights, threshold), applied by metadata.py. See README
"Decisions and confidence"."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Iterator

from . import kinds, ledger, metadata, runs
from .common import Failure, check_run_name, log, write_jsonl
from .requests import Skip, read_text
from .states import Decision


class Manifest:
    """build-jsonl's manifest, indexed: where each custom_id's line is, and where the skipped files' lines
    are. Entries are read back when needed, so memory holds one number per file, not the entries."""

    def __init__(self, path: str | None):
        self.handle = open(path, "rb") if path else None
        self.sent: dict[str, int] = {}
        self.skips: list[int] = []
        offset = 0
        for lineno, line in enumerate(self.handle or (), 1):
            if line.strip():
                entry = self._parse(line, lineno)
                if entry.get("custom_id"):
                    self.sent[entry["custom_id"]] = offset
                else:
                    self.skips.append(offset)
            offset += len(line)

    def __bool__(self) -> bool:
        return self.handle is not None

    def _parse(self, line: bytes, lineno: int | str) -> dict[str, Any]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Failure(f"manifest line {lineno} is not valid JSON ({exc.msg}); rebuild it with build-jsonl") from None
        entry = kinds.expect(entry, "manifest line", f"manifest line {lineno}")
        if not isinstance(entry.get("file_path"), str) or not entry["file_path"]:
            raise Failure(f"manifest line {lineno} has no file_path; rebuild it with build-jsonl")
        return entry

    def entry(self, offset: int) -> dict[str, Any]:
        assert self.handle is not None
        self.handle.seek(offset)
        return self._parse(self.handle.readline(), f"at byte {offset}")

    def get(self, custom_id: str) -> dict[str, Any] | None:
        offset = self.sent.get(custom_id)
        return None if offset is None else self.entry(offset)


def decide(result: dict[str, Any], entry: dict[str, Any] | None, threshold: float) -> dict[str, Any]:
    custom_id = result.get("custom_id")
    decision = {"custom_id": custom_id, "job_id": kinds.text(result.get("job_id"), 200)}
    if entry:
        decision.update({k: entry.get(k) for k in ("file_path", "filename", "db_hash", "sent_hash", "sent_stat",
                                                   "model", "prompt_version", "config_hash")})
    decision["usage"] = kinds.usage(result.get("usage"))
    decision["counts_attempt"] = result.get("attempted") is not False
    if kinds.text(result.get("model"), 200):  # the dated model that answered, beside the name asked for
        decision["resolved_model"] = result["model"]
        decision["model"] = decision.get("model") or result["model"]
    if result.get("ok") is not True:
        error = kinds.text(result.get("error"), 1000) or "no reason given"
        return {**decision, "decision": Decision.FAILED_VALIDATION, "metadata": None, "confidence": None,
                "reasons": [f"request failed: {error}"], "repairs": []}
    verdict = metadata.judge(result.get("content"), kinds.text(result.get("finish_reason"), 100),
                             entry.get("filename") if entry else None, threshold,
                             (lambda: evidence(entry)) if entry else None)
    return {**decision, "decision": verdict.decision, "metadata": verdict.metadata, "confidence": verdict.confidence,
            "reasons": verdict.reasons, "repairs": verdict.repairs}


def evidence(entry: dict[str, Any]) -> dict[str, int]:
    """How often the file's text names each vocabulary tag, to rank topics by when an answer has not
    exactly the stored count: read again only then (rarely), and only if it is still the text sent."""
    try:
        # confined to the file's own folder: only that file is read, and only the text that was sent counts
        text, digest, _, _ = read_text({"file_path": entry["file_path"],
                                        "library_root": os.path.dirname(str(entry["file_path"]))})
    except Skip:
        return {}
    return metadata.topic_evidence(text) if digest == entry.get("sent_hash") else {}


def skipped(entry: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": None, "job_id": None, "file_path": entry["file_path"], "filename": entry.get("filename"),
            "db_hash": entry.get("db_hash"), "decision": Decision.SKIPPED, "skip_kind": entry.get("skip_kind"),
            "metadata": None, "confidence": None, "reasons": [entry["skip"]], "repairs": [], "usage": {}}


def decisions(results: IO[str], manifest: Manifest, threshold: float, counts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for lineno, result in kinds.read(results, "result"):
        if not isinstance(result["custom_id"], str) or not result["custom_id"]:
            raise Failure(f"result line {lineno} has no custom_id; pipe batch-fetch's output")
        entry = manifest.get(result["custom_id"])
        if manifest and entry is None:
            log(f"validate: result line {lineno}: custom_id {result['custom_id']} is not in the manifest (ignored)")
            continue
        seen.add(result["custom_id"])
        decision = decide(result, entry, threshold)
        tally(counts, decision)
        yield decision
    for offset in manifest.skips:
        counts[Decision.SKIPPED] = counts.get(Decision.SKIPPED, 0) + 1
        yield skipped(manifest.entry(offset))
    for custom_id, offset in manifest.sent.items():
        if custom_id not in seen:
            decision = decide({"custom_id": custom_id, "ok": False, "error": "no result in the fetched results",
                               "missing": True, "attempted": False}, manifest.entry(offset), threshold)
            tally(counts, decision)
            yield decision


NOT_PROCESSED = "not processed (back to the queue, no attempt counted)"


def tally(counts: dict[str, Any], decision: dict[str, Any]) -> None:
    """Count a decision as apply-sql will act on it: a request the service never processed (a cancelled
    job) is a failure that goes back to the queue, not a failed validation."""
    key = decision["decision"]
    if key == Decision.FAILED_VALIDATION and not decision.get("counts_attempt", True):
        key = NOT_PROCESSED
    counts[key] = counts.get(key, 0) + 1


@contextmanager
def sent_manifest(db: str | None, run_name: str | None, manifest: str | None) -> Iterator[str | None]:
    """The manifest to judge by: what the run's ledger recorded before its upload (a rebuilt run folder may
    hold another), else --manifest."""
    if not db or not run_name:
        yield manifest
        return
    with ledger.opened(db) as conn:
        runs.require(conn, check_run_name(run_name))
        entries = list(runs.manifest(conn, run_name))
    if not entries:  # nothing was frozen: the run sent nothing (every file skipped), or it is finished
        yield manifest
        return
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".jsonl") as handle:
        write_jsonl(entries, handle)
        handle.flush()
        yield handle.name
