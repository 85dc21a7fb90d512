"""validate: one decision per fetched result (extracted, needs_review or failed_validation, with reasons),
plus a skipped decision for every file the manifest says was not sent.

The rules are data: schemas/metadata.schema.json (hard) and schemas/soft-rules.json (soft, repairs,
weights, threshold). See README "Decisions and confidence".
"""

from __future__ import annotations

from typing import IO, Iterator

import click

from . import metadata
from .common import Failure, atomic_output, command, log, read_jsonl, write_jsonl


def load_manifest(path: str | None) -> dict[str, dict]:
    """custom_id -> manifest entry, and skip entries under their file_path."""
    if not path:
        return {}
    entries: dict[str, dict] = {}
    with open(path, encoding="utf-8") as handle:
        for _, entry in read_jsonl(handle, "manifest"):
            key = entry.get("custom_id") or ("skip:" + entry.get("file_path", ""))
            entries[key] = entry
    return entries


def decide(result: dict, entry: dict | None, threshold: float) -> dict:
    custom_id = result.get("custom_id")
    decision = {"custom_id": custom_id, "job_id": result.get("job_id")}
    if entry:
        decision.update({k: entry.get(k) for k in ("file_path", "filename", "db_hash", "sent_hash", "sent_stat",
                                                   "model", "prompt_version", "config_hash")})
    decision["usage"] = result.get("usage") or {}
    decision["counts_attempt"] = result.get("attempted", True)
    if not result.get("ok"):
        return {**decision, "decision": "failed_validation", "metadata": None, "confidence": None,
                "reasons": [f"request failed: {result.get('error') or 'no reason given'}"], "repairs": []}
    verdict = metadata.judge(result.get("content"), result.get("finish_reason"),
                             entry.get("filename") if entry else None, threshold,
                             entry.get("topic_evidence") if entry else None)
    if result.get("model"):
        decision["model"] = result["model"]
    return {**decision, "decision": verdict.decision, "metadata": verdict.metadata, "confidence": verdict.confidence,
            "reasons": verdict.reasons, "repairs": verdict.repairs}


def skipped(entry: dict) -> dict:
    return {"custom_id": None, "job_id": None, "file_path": entry["file_path"], "filename": entry.get("filename"),
            "db_hash": entry.get("db_hash"), "decision": "skipped", "skip_kind": entry.get("skip_kind"),
            "metadata": None, "confidence": None, "reasons": [entry["skip"]], "repairs": [], "usage": {}}


def decisions(results: IO[str], manifest: dict[str, dict], threshold: float, counts: dict) -> Iterator[dict]:
    seen: set[str] = set()
    for lineno, result in read_jsonl(results, "result"):
        if not isinstance(result, dict) or not result.get("custom_id"):
            raise Failure(f"result line {lineno} has no custom_id; pipe batch-fetch's output")
        entry = manifest.get(result["custom_id"])
        if manifest and entry is None:
            log(f"validate: result line {lineno}: custom_id {result['custom_id']} is not in the manifest (ignored)")
            continue
        seen.add(result["custom_id"])
        decision = decide(result, entry, threshold)
        counts[decision["decision"]] = counts.get(decision["decision"], 0) + 1
        yield decision
    for key, entry in manifest.items():
        if key.startswith("skip:"):
            counts["skipped"] = counts.get("skipped", 0) + 1
            yield skipped(entry)
        elif key not in seen:
            counts["failed_validation"] = counts.get("failed_validation", 0) + 1
            yield decide({"custom_id": key, "ok": False, "error": "no result in the fetched results"}, entry,
                         threshold)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="build-jsonl's manifest: links results to files and adds the skipped files.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Confidence below which a valid answer needs review (default from schemas/soft-rules.json).")
@click.option("-o", "--output", default="-", help="Write decisions here (atomically) instead of stdout.")
@command
def main(results: IO[str], manifest: str | None, threshold: float | None, output: str) -> None:
    """Decide each result in RESULTS (batch-fetch's JSONL; - for stdin)."""
    threshold = metadata.soft_rules()["threshold"] if threshold is None else threshold
    counts: dict[str, int] = {}
    with atomic_output(output) as out:
        write_jsonl(decisions(results, load_manifest(manifest), threshold, counts), out)
    log("validate: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) if counts else "validate: no results")


if __name__ == "__main__":
    main()
