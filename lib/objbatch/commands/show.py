"""show: one file as the library holds it: status, confidence, reasons, the repairs its result needed,
attempts, the current metadata (the current file_metadata_ai row) and its history of versions and results."""

from __future__ import annotations

import sqlite3

import click

from .. import ledger, library, output
from ..common import Failure, cli, dumps, printable, printable_values
from ..options import db_option


def details(conn: sqlite3.Connection, path: str) -> dict:
    item = next(library.stored(conn, "f.file_path = ?", (path,)))
    resolved = "resolved_model" if ledger.has_column(conn, "file_metadata_ai", "resolved_model") else "NULL"
    versions = [dict(r) for r in conn.execute(
        f"SELECT metadata_id, created_at, model, {resolved} AS resolved_model, prompt_version, is_current "
        "FROM file_metadata_ai WHERE file_path = ? ORDER BY metadata_id DESC", (path,))]
    results = [{**dict(r), "reasons": ledger.load_json(r["reasons_json"], []),
                "repairs": ledger.load_json(r["repairs_json"], [])} for r in conn.execute(
        "SELECT applied_at, run_name, result_key, decision, outcome, confidence, reasons_json, repairs_json "
        "FROM objbatch_applied WHERE file_path = ? ORDER BY applied_at DESC, rowid DESC", (path,))]
    for result in results:
        del result["reasons_json"], result["repairs_json"]
    latest = results[0] if results else {}
    return {"file_path": path, "status": item["status"], "confidence": item["confidence"],
            "reasons": [r for r in (item["error_message"] or "").split("; ") if r],
            "repairs": latest.get("repairs", []), "attempts": item["attempts"], "attempt_reasons": item["reasons"],
            "deleted": bool(item["is_deleted"]), "model": item["model"], "resolved_model": item["resolved_model"],
            "prompt_version": item["prompt_version"],
            "metadata": item["metadata"], "versions": versions, "results": results}


def render(info: dict) -> str:
    lines = [info["file_path"], f"  status      {info['status']}" + ("  (deleted)" if info["deleted"] else "")]
    if info["confidence"] is not None:
        lines.append(f"  confidence  {info['confidence']:.2f}")
    lines += _listed("reasons", info["reasons"]) + _listed("repairs", info["repairs"])
    if info["attempts"]:
        lines += _listed(f"attempts    {info['attempts']}, failed with", info["attempt_reasons"])
    meta = info["metadata"]
    if meta:
        description = meta.get("semantic_description") or {}
        lines += [f"  metadata    (current version: {_model(info)}, prompt {info['prompt_version'] or '?'})",
                  f"    category      {meta.get('category')}", f"    difficulty    {meta.get('difficulty')}",
                  f"    topics        {', '.join(meta.get('primary_topics') or [])}",
                  f"    confidence    {meta.get('confidence_score')}",
                  f"    summary       {description.get('summary')}"]
        lines += _listed("aspects", meta.get("topic_aspects") or [], "    ")
        lines += _listed("arguments", description.get("key_arguments") or [], "    ")
        lines += _listed("positions", description.get("philosophical_positions") or [], "    ")
    else:
        lines.append("  metadata    none yet")
    if info["versions"]:
        lines.append(f"  versions    {len(info['versions'])} (newest first)")
        lines += [f"    {v['created_at'] or '?'}  {'current ' if v['is_current'] else '        '} {_model(v)}  "
                  f"{v['prompt_version'] or ''}" for v in info["versions"]]
    if info["results"]:
        lines.append(f"  results     {len(info['results'])} (newest first)")
        lines += [f"    {r['applied_at']}  run {r['run_name'] or '-'}  decided {r['decision']}, stored {r['outcome']}"
                  for r in info["results"]]
    return "\n".join(lines)


def _model(row: dict) -> str:
    """The model asked for, and the dated model that answered when the results named another."""
    asked, answered = row.get("model") or "?", row.get("resolved_model")
    return f"{asked} (answered by {answered})" if answered and answered != asked else asked


def _listed(label: str, items: list, indent: str = "  ") -> list[str]:
    if not items:
        return []
    return [f"{indent}{label}:"] + [f"{indent}  - {item}" for item in items]


@cli("show --db demo/library.db MOTM_2010-01-04_The-Virtue-of-Honesty.txt    # a file of make demo's library",
     "show --db demo/library.db --json MOTM_2010-01-04_The-Virtue-of-Honesty.txt | jq .metadata.semantic_description.summary")
@click.argument("path")
@db_option()
@output.options(formats=("table", "json"), json_help="Print one JSON object, for scripts.")
def main(path: str, db: str, fmt: str) -> None:
    """Show one file: PATH as stored, or the end of it (a file name), or any part of it, if that names one file
    (several: they are listed)."""
    with ledger.opened(db, identity=False, read_only=True) as conn:
        found, unknown = library.resolve(conn, [path], loose=True)
        if unknown:
            raise Failure(f"{path}: {unknown[path]}; review --nl lists the stored paths")
        info = details(conn, found[path])
    shown = dumps(info, indent=2, separators=(",", ": ")) if fmt == "json" else render(printable_values(info))
    click.echo(printable(shown))


if __name__ == "__main__":
    main()
