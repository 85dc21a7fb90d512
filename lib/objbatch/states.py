"""The vocabulary of states: what a run, a claim, a file and a decision can be. Enums of strings, so the
database holds the same text as before they existed (its format does not change). A run's and a claim's
states change only through runs.py's transitions (docs/design.md, "Run states")."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    CLAIMED = "claimed"        # files taken, nothing sent
    SUBMITTING = "submitting"  # what it sends is recorded (frozen); jobs being created
    SUBMITTED = "submitted"    # every part has its job
    CANCELLING = "cancelling"  # a cancel was asked after something was sent: harvested, then cancelled
    APPLIED = "applied"        # every claimed file has its result
    CANCELLED = "cancelled"


class ClaimState(StrEnum):
    CLAIMED = "claimed"        # in flight: no other run takes the file
    DONE = "done"              # released when the run ended


class EndReason(StrEnum):
    """Why a run ended as it did (objbatch_runs.end_reason): read by code instead of a message."""
    APPLIED = "applied"
    CANCELLED = "cancelled"          # cancelled after sending: what its jobs finished was applied
    NOTHING_SENT = "nothing_sent"    # cancelled before anything reached the service
    JOBS_UNKNOWN = "jobs_unknown"    # cancelled by hand (FORGET=1) after the service answered 404 for its jobs


class Decision(StrEnum):
    """What validate decides for one file (a decision line's `decision`)."""
    EXTRACTED = "extracted"
    NEEDS_REVIEW = "needs_review"
    FAILED_VALIDATION = "failed_validation"
    SKIPPED = "skipped"


class FileStatus(StrEnum):
    """files.ai_metadata_status: the decisions, and the library's own states around them."""
    PENDING = "pending"
    EXTRACTED = "extracted"
    NEEDS_REVIEW = "needs_review"
    FAILED_VALIDATION = "failed_validation"
    SKIPPED = "skipped"
    APPROVED = "approved"              # set by a person: objbatch never overwrites it
    RETRY_SCHEDULED = "retry_scheduled"  # the library's own, taken as pending
    FAILED_JSON = "failed_json"          # the library's own, taken as failed


class SkipKind(StrEnum):
    """objbatch_files.skip_kind: why a file was not sent, when it is worth trying again."""
    MISSING = "missing"
    UNREADABLE = "unreadable"
