"""review: the files worth a person's look (needs_review, or low confidence), most doubtful first."""

from __future__ import annotations

import json

import click

from . import ledger, metadata
from .common import command

QUERY = """
SELECT file_path, ai_metadata_status, ai_confidence_score, error_message, ai_metadata_json
FROM files
WHERE COALESCE(is_deleted, 0) = 0
  AND (ai_metadata_status = 'needs_review'
       OR (ai_metadata_status = 'extracted' AND ai_confidence_score < :threshold))
ORDER BY COALESCE(ai_confidence_score, 0), file_path
LIMIT :limit
"""


def rows(db: str, limit: int, threshold: float) -> list[dict]:
    with ledger.opened(db) as conn:
        found = conn.execute(QUERY, {"limit": limit, "threshold": threshold}).fetchall()
    out = []
    for row in found:
        meta = ledger.load_json(row["ai_metadata_json"], {})
        out.append({"file_path": row["file_path"], "status": row["ai_metadata_status"],
                    "confidence": row["ai_confidence_score"], "category": meta.get("category"),
                    "difficulty": meta.get("difficulty"), "topics": meta.get("primary_topics", []),
                    "reason": row["error_message"]})
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", default="data/library.db", show_default=True, type=click.Path(dir_okay=False),
              help="The library database.")
@click.option("--limit", default=50, show_default=True, help="At most this many files.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Also list extracted files below this confidence (default from schemas/soft-rules.json).")
@click.option("--json", "as_json", is_flag=True, help="Print JSONL for scripts.")
@command
def main(db: str, limit: int, threshold: float | None, as_json: bool) -> None:
    """List files whose metadata deserves a look, most doubtful first."""
    threshold = metadata.soft_rules()["threshold"] if threshold is None else threshold
    found = rows(db, limit, threshold)
    if as_json:
        for item in found:
            click.echo(json.dumps(item, ensure_ascii=False))
        return
    if not found:
        click.echo("Nothing to review.")
    for item in found:
        confidence = "-" if item["confidence"] is None else f"{item['confidence']:.2f}"
        click.echo(f"{confidence}  {item['category']}/{item['difficulty']}  {item['file_path']}\n"
                   f"      topics: {', '.join(item['topics'])}\n      reason: {item['reason'] or '-'}")


if __name__ == "__main__":
    main()
