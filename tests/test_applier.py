"""apply-sql's Applier in process, on a real sample library in SQLite: each kind of decision and what it writes.
The end-to-end suites apply validate's real output through make; this is the same code with hand-made
decisions, one rule at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import query, rows
from objbatch import ledger
from objbatch.commands.apply_sql import Applier

META = {"primary_topics": ["honesty", "ethics", "honesty"], "summary": "s", "category": "lecture"}


@pytest.fixture
def applied(library):
    """apply(*decisions) in one transaction, as apply-sql does; returns the outcome counts."""
    _, db = library

    def apply(*decisions: dict) -> dict[str, int]:
        with ledger.opened(db) as conn:
            applier = Applier(conn, None)
            with ledger.transaction(conn):
                for decision in decisions:
                    applier.apply(decision)
                applier.finish()
            return applier.counts

    return db, apply


def decision(db: Path, kind: str, n: int = 0, **extra) -> dict:
    path, row = sorted(rows(db).items())[n]
    base = {"file_path": path, "decision": kind, "db_hash": row["content_hash"], "reasons": [],
            "job_id": "job-1", "custom_id": f"c{n}"}
    if kind in ("extracted", "needs_review"):
        base.update(metadata=META, confidence=0.9 if kind == "extracted" else 0.5)
    return {**base, **extra}


def test_an_answer_is_stored_with_its_topics_and_mirror_and_applying_it_again_changes_nothing(applied):
    db, apply = applied
    answer = decision(db, "extracted")
    assert apply(answer) == {"extracted": 1}
    row = rows(db)[answer["file_path"]]
    assert (row["ai_metadata_status"], row["ai_confidence_score"]) == ("extracted", 0.9)
    assert json.loads(row["ai_metadata_json"]) == META
    assert sorted(query(db, "SELECT topic_tag FROM file_primary_topics WHERE file_path = ?", answer["file_path"])) \
        == [("ethics",), ("honesty",)]  # each topic once
    before = rows(db)[answer["file_path"]]["updated_at"]
    assert apply(answer) == {"already applied": 1}
    assert rows(db)[answer["file_path"]]["updated_at"] == before
    assert query(db, "SELECT COUNT(*) FROM file_metadata_ai WHERE file_path = ?", answer["file_path"]) == [(1,)]


def test_a_review_answer_keeps_its_reasons_as_the_message(applied):
    db, apply = applied
    assert apply(decision(db, "needs_review", reasons=["confidence 0.5 below 0.85"])) == {"needs_review": 1}
    row = next(r for r in rows(db).values() if r["ai_metadata_status"] == "needs_review")
    assert row["error_message"] == "confidence 0.5 below 0.85"


def test_content_changed_in_the_database_since_it_was_sent_goes_back_to_pending(applied):
    db, apply = applied
    assert apply(decision(db, "extracted", db_hash="not-what-the-row-holds")) == {"requeued (content changed)": 1}
    assert "content changed in the database since it was sent" in \
        next(r for r in rows(db).values() if r["error_message"])["error_message"]


def test_a_failure_spends_an_attempt_and_keeps_its_reasons_unless_the_request_never_ran(applied):
    db, apply = applied
    first = decision(db, "failed_validation", 0, reasons=["answer contained no JSON"])
    never_ran = decision(db, "failed_validation", 1, reasons=["no result returned (job ended CANCELLED)"],
                         counts_attempt=False)
    assert apply(first, never_ran) == {"failed_validation": 1,
                                       "not processed (back to the queue, no attempt counted)": 1}
    assert rows(db)[first["file_path"]]["ai_metadata_status"] == "failed_validation"
    assert rows(db)[never_ran["file_path"]]["ai_metadata_status"] == "pending"
    assert query(db, "SELECT file_path, attempts, reasons_json FROM objbatch_files WHERE attempts > 0") == \
        [(first["file_path"], 1, '["answer contained no JSON"]')]
    again = {**first, "custom_id": "c0-second-try", "reasons": ["answer was cut off"]}
    apply(again)
    assert query(db, "SELECT attempts, reasons_json FROM objbatch_files WHERE file_path = ?", first["file_path"]) == \
        [(2, '["answer contained no JSON", "answer was cut off"]')]


def test_an_approved_or_deleted_row_is_left_alone(applied):
    db, apply = applied
    answer = decision(db, "extracted")
    with ledger.opened(db) as conn, ledger.transaction(conn):
        conn.execute("UPDATE files SET ai_metadata_status = 'approved' WHERE file_path = ?", (answer["file_path"],))
    assert apply(answer) == {"left alone (approved or deleted)": 1}
    assert rows(db)[answer["file_path"]]["ai_metadata_json"] is None


def test_a_skip_records_its_kind_so_a_missing_file_is_retried_once_it_is_back(applied):
    db, apply = applied
    skip = decision(db, "skipped", reasons=["file not found"], skip_kind="missing", job_id=None, custom_id=None)
    assert apply(skip) == {"skipped": 1}
    assert rows(db)[skip["file_path"]]["ai_metadata_status"] == "skipped"
    assert query(db, "SELECT skip_kind FROM objbatch_files WHERE file_path = ?", skip["file_path"]) == [("missing",)]


def test_a_paid_answer_is_stored_when_the_file_cannot_be_read_now_but_not_when_it_changed_on_disk(applied):
    db, apply = applied
    gone = decision(db, "extracted", 0, sent_hash="0" * 64)
    Path(gone["file_path"]).unlink()  # an unmounted disk: the database still holds what was sent
    changed = decision(db, "extracted", 1, sent_hash="0" * 64)  # the file's bytes now hash otherwise
    counts = apply(gone, changed)
    assert counts["extracted"] == 1 and counts["requeued (content changed)"] == 1
    assert any(k.startswith("stored though the file cannot be read now") for k in counts)
    assert rows(db)[gone["file_path"]]["ai_metadata_status"] == "extracted"
    assert rows(db)[changed["file_path"]]["ai_metadata_status"] == "pending"


def test_a_decision_for_a_file_the_database_does_not_have_writes_nothing_to_files(applied):
    db, apply = applied
    apply()  # the ledger set up (it adds objbatch's columns)
    before = rows(db)
    assert apply({**decision(db, "extracted"), "file_path": "/nowhere/x.txt"}) == {"not in database": 1}
    assert {p: dict(r) for p, r in rows(db).items()} == {p: dict(r) for p, r in before.items()}
