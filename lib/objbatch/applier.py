"""The applier: validate's decisions written into the library database, inside the caller's one transaction.
Each is checked against what its run sent and what is on disk now; approved or deleted rows are never
touched; each result is applied once (keyed by job and custom_id)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import IO, Any, Iterator

from . import costs, kinds, ledger, runs, sources
from .common import Failure, now_iso
from .states import Decision, FileStatus

PROTECTED = (FileStatus.APPROVED,)
STORED = (Decision.EXTRACTED, Decision.NEEDS_REVIEW)


def result_key(decision: dict[str, Any], run_name: str | None) -> str:
    if decision.get("job_id") and decision.get("custom_id"):
        return f"{decision['job_id']}/{decision['custom_id']}"
    return f"skip/{run_name or '-'}/{decision['file_path']}"


def on_disk(decision: dict[str, Any]) -> str:
    """'same', 'changed' or 'unreadable': the file now against what was sent. Size and modification time
    equal to those of the read that was sent mean unchanged (as git and rsync assume); otherwise it is
    hashed again."""
    path, sent = decision["file_path"], decision.get("sent_stat") or {}
    now = sources.stat_of(path)
    if now is None:
        return "unreadable"
    if sent and (now.st_size, now.st_mtime_ns) == (sent.get("size"), sent.get("mtime_ns")):
        return "same"
    try:
        data, _ = sources.read_bytes(path, sources.MAX_BYTES)
    except sources.Skip as exc:  # now a pipe, a device or too big: not what was sent
        return "changed" if exc.kind in ("not_regular", "too_big") else "unreadable"
    digest = hashlib.sha256(data).hexdigest()
    return "same" if not decision.get("sent_hash") or digest == decision["sent_hash"] else "changed"


BATCH = 500  # writes of this many decisions go to the database together (executemany)


class Applier:
    def __init__(self, conn: sqlite3.Connection, run_name: str | None):
        self.conn, self.run_name = conn, run_name
        self.counts: dict[str, int] = {}
        self.usage: dict[str, list[Any]] = {}  # job_id -> [model, resolved models, prompt, cached, output, reasoning]
        self.now = now_iso()
        self.pending: dict[str, list[tuple[Any, ...]]] = {}  # statement -> rows, written in the order first met
        self.pending_paths: set[str] = set()
        self.pending_keys: set[str] = set()
        self.owners: dict[str, str | None] = {}  # job_id (or a skipped file's path) -> its run

    def later(self, statement: str, *rows: tuple[Any, ...]) -> None:
        self.pending.setdefault(statement, []).extend(rows)

    def flush(self) -> None:
        """Write the pending statements, each type at once; each file's own statements keep their order."""
        for statement, rows in self.pending.items():
            self.conn.executemany(statement, rows)
        self.pending.clear()
        self.pending_paths.clear()
        self.pending_keys.clear()

    def run_of(self, decision: dict[str, Any]) -> str | None:
        """The run a decision belongs to: --run, or (by hand) the run whose job returned it, so a run's
        decisions applied without --run still count for it."""
        if self.run_name:
            return self.run_name
        key = decision.get("job_id") or decision["file_path"]
        if key not in self.owners:
            self.owners[key] = runs.run_of_result(self.conn, decision.get("job_id"), decision["file_path"])
        return self.owners[key]

    def as_sent(self, decision: dict[str, Any], run_name: str | None) -> dict[str, Any]:
        """The decision judged against what its run's ledger recorded as sent (content hashes and the read
        that was sent), not against what the line says: the ledger is the authority."""
        if not run_name or not decision.get("custom_id"):
            return decision
        entry = runs.sent(self.conn, run_name, decision["file_path"], decision["custom_id"])
        if entry is None:
            return decision
        return {**decision, **{k: entry.get(k) for k in ("db_hash", "sent_hash", "sent_stat")}}

    def apply(self, decision: dict[str, Any]) -> None:
        run_name = self.run_of(decision)
        key, path = result_key(decision, run_name), decision["file_path"]
        if path in self.pending_paths:  # the same file twice: what is read next must see the first
            self.flush()
        if key in self.pending_keys or \
                self.conn.execute("SELECT 1 FROM objbatch_applied WHERE result_key = ?", (key,)).fetchone():
            self._count("already applied")
            return
        self.pending_paths.add(path)
        self.pending_keys.add(key)
        decision = self.as_sent(decision, run_name)
        row = self.conn.execute("SELECT content_hash, ai_metadata_status, is_deleted FROM files WHERE file_path = ?",
                                (path,)).fetchone()
        outcome = self._outcome(decision, row)
        self._count(outcome)
        if outcome not in STORED and row is not None and not row["is_deleted"] \
                and row["ai_metadata_status"] not in PROTECTED:
            self._refresh_mirror(decision["file_path"])
        self.later(
            "INSERT INTO objbatch_applied (result_key, file_path, decision, outcome, applied_at, run_name, confidence, "
            "reasons_json, repairs_json, model, resolved_model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, decision["file_path"], decision["decision"], outcome, self.now, run_name,
             decision.get("confidence"), json.dumps(decision.get("reasons") or [], ensure_ascii=False),
             json.dumps(decision.get("repairs") or [], ensure_ascii=False), decision.get("model"),
             decision.get("resolved_model")))
        self._add_usage(decision)
        if len(self.pending_keys) >= BATCH:
            self.flush()

    def _refresh_mirror(self, file_path: str) -> None:
        """files.ai_metadata_json mirrors the current file_metadata_ai row (the library's own review edits
        that row, not the mirror)."""
        self.conn.execute("UPDATE files SET ai_metadata_json = (SELECT metadata_json FROM file_metadata_ai WHERE "
                          "file_path = ?1 AND is_current = 1 ORDER BY metadata_id DESC LIMIT 1) WHERE file_path = ?1 "
                          "AND EXISTS (SELECT 1 FROM file_metadata_ai WHERE file_path = ?1 AND is_current = 1)",
                          (file_path,))

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def _outcome(self, decision: dict[str, Any], row: sqlite3.Row | None) -> str:
        if row is None:
            return "not in database"
        if row["is_deleted"] or row["ai_metadata_status"] in PROTECTED:
            return "left alone (approved or deleted)"
        kind: str = decision["decision"]
        if kind == Decision.SKIPPED:
            self._set_status(decision["file_path"], FileStatus.SKIPPED, "; ".join(decision["reasons"]))
            self._note_skip(decision["file_path"], decision.get("skip_kind"))
            return "skipped"
        if decision.get("db_hash") is not None and (row["content_hash"] or "") != decision["db_hash"]:
            return self._requeue(decision, "content changed in the database since it was sent")
        disk = on_disk(decision)
        if disk == "changed":
            return self._requeue(decision, "file on disk changed since it was sent")
        if kind == Decision.FAILED_VALIDATION:
            return self._fail(decision)
        self._store(decision)
        if disk == "unreadable":
            self._count("stored though the file cannot be read now (kept: the database still has that content)")
        return kind

    def _set_status(self, file_path: str, status: str, message: str | None) -> None:
        self.conn.execute("UPDATE files SET ai_metadata_status = ?, error_message = ?, updated_at = ? "
                          "WHERE file_path = ?", (status, message, self.now, file_path))

    def _note_skip(self, file_path: str, kind: str | None) -> None:
        """A missing or unreadable file is retried by select-pending once it can be read again."""
        self.conn.execute("INSERT INTO objbatch_files (file_path, skip_kind) VALUES (?, ?) ON CONFLICT(file_path) "
                          "DO UPDATE SET skip_kind = excluded.skip_kind", (file_path, kind))

    def _requeue(self, decision: dict[str, Any], why: str) -> str:
        self._set_status(decision["file_path"], FileStatus.PENDING, f"{why}; queued for extraction again")
        return "requeued (content changed)"

    def _fail(self, decision: dict[str, Any]) -> str:
        reasons = "; ".join(decision["reasons"])
        if not decision.get("counts_attempt", True):  # never processed (job cancelled): back to the queue
            self._set_status(decision["file_path"], FileStatus.PENDING, f"{reasons}; queued again")
            return "not processed (back to the queue, no attempt counted)"
        self._set_status(decision["file_path"], FileStatus.FAILED_VALIDATION, reasons)
        old = self.conn.execute("SELECT reasons_json FROM objbatch_files WHERE file_path = ?",
                                (decision["file_path"],)).fetchone()
        history = ledger.load_json(old["reasons_json"] if old else None, []) + [reasons]
        self.conn.execute(
            "INSERT INTO objbatch_files (file_path, attempts, reasons_json) VALUES (?, 1, ?) "
            "ON CONFLICT(file_path) DO UPDATE SET attempts = attempts + 1, reasons_json = excluded.reasons_json",
            (decision["file_path"], json.dumps(history, ensure_ascii=False)))
        return "failed_validation"

    def _store(self, decision: dict[str, Any]) -> None:
        path, meta = decision["file_path"], decision["metadata"]
        text = json.dumps(meta, ensure_ascii=False, sort_keys=True)
        review = "; ".join(decision["reasons"]) if decision["decision"] == Decision.NEEDS_REVIEW else None
        self.later("UPDATE files SET ai_metadata_json = ?, ai_metadata_status = ?, ai_confidence_score = ?, "
                   "error_message = ?, updated_at = ? WHERE file_path = ?",
                   (text, decision["decision"], decision["confidence"], review, self.now, path))
        self.later("UPDATE file_metadata_ai SET is_current = 0 WHERE file_path = ? AND is_current = 1", (path,))
        self.later("INSERT INTO file_metadata_ai (file_path, metadata_json, model, prompt_version, "
                   "extraction_config_hash, is_current, created_at, resolved_model) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                   (path, text, decision.get("model"), decision.get("prompt_version"), decision.get("config_hash"),
                    self.now, decision.get("resolved_model")))
        self.later("DELETE FROM file_primary_topics WHERE file_path = ?", (path,))
        self.later("INSERT INTO file_primary_topics (file_path, topic_tag) VALUES (?, ?)",
                   *[(path, tag) for tag in dict.fromkeys(meta["primary_topics"])])

    def _add_usage(self, decision: dict[str, Any]) -> None:
        """Tokens as the service reported them: prompt (of which cached) and output (of which reasoning)."""
        usage, job_id = kinds.usage(decision.get("usage")), decision.get("job_id")
        if job_id and decision.get("usage"):
            total = self.usage.setdefault(job_id, [decision.get("model"), set(), 0, 0, 0, 0])
            if kinds.text(decision.get("resolved_model"), 200):
                total[1].add(str(decision["resolved_model"]))
            for index, tokens in enumerate(costs.usage_tokens(usage), 2):
                total[index] += tokens

    def finish(self) -> None:
        """Write what is pending, and the tokens the applied results carried, added to their jobs."""
        self.flush()
        runs.add_usage(self.conn, self.run_name, self.usage)


def read_decisions(stream: IO[str]) -> Iterator[dict[str, Any]]:
    """Decisions one at a time (a bad line stops the apply, whose transaction then rolls back)."""
    for lineno, decision in kinds.read(stream, "decision"):
        if decision.get("decision") not in tuple(Decision):
            raise Failure(f"decision line {lineno} has no valid 'decision'; pipe validate's output")
        if not isinstance(decision.get("file_path"), str) or not decision["file_path"]:
            raise Failure(f"decision line {lineno} has no file_path; run validate with --manifest from build-jsonl")
        kinds.fields(decision, DECISION_FIELDS, f"decision line {lineno}", "pipe validate's output")
        if decision["decision"] in STORED and not isinstance(decision.get("metadata"), dict):
            raise Failure(f"decision line {lineno} is {decision['decision']} without its metadata object; pipe "
                          "validate's output")
        yield decision


# The type of each field apply-sql reads from a decision (None is always allowed).
DECISION_FIELDS = {"custom_id": (str,), "job_id": (str,), "filename": (str,), "db_hash": (str,), "sent_hash": (str,),
                   "sent_stat": (dict,), "model": (str,), "prompt_version": (str,), "config_hash": (str,),
                   "metadata": (dict,), "confidence": (int, float), "reasons": (list,), "repairs": (list,),
                   "skip_kind": (str,), "usage": (dict,), "counts_attempt": (bool,)}
