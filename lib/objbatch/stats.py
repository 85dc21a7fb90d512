"""stats: counts per status, files in flight and in which job, files out of attempts, recent runs with
their counts and cost (from the usage the results carried and schemas/prices.json)."""

from __future__ import annotations

import json
import sqlite3

import click

from . import ledger, runs
from .common import SCHEMAS, command
from .select_pending import DEFAULT_MAX_ATTEMPTS


def prices() -> dict:
    with open(SCHEMAS / "prices.json", encoding="utf-8") as handle:
        return json.load(handle)


def cost(model: str | None, prompt_tokens: int, completion_tokens: int, table: dict) -> float:
    price = table["models"].get(model or "", table["default"])
    return (prompt_tokens * price["input"] + completion_tokens * price["output"]) / 1_000_000


def gather(conn: sqlite3.Connection, recent: int, max_attempts: int) -> dict:
    statuses = {row[0] or "pending": row[1] for row in conn.execute(
        "SELECT COALESCE(ai_metadata_status, 'pending'), COUNT(*) FROM files WHERE COALESCE(is_deleted, 0) = 0 "
        "GROUP BY 1 ORDER BY 1")}
    deleted = conn.execute("SELECT COUNT(*) FROM files WHERE COALESCE(is_deleted, 0) != 0").fetchone()[0]
    flight = [{"run": r["run_name"], "state": r["state"], "files": r["files"], "jobs": (r["jobs"] or "").split()}
              for r in runs.in_flight(conn)]
    exhausted = [{"file_path": r["file_path"], "attempts": r["attempts"],
                  "reasons": ledger.load_json(r["reasons_json"], [])} for r in conn.execute(
        "SELECT o.file_path, o.attempts, o.reasons_json FROM objbatch_files o JOIN files f USING (file_path) "
        "WHERE f.ai_metadata_status = 'failed_validation' AND o.attempts >= ? ORDER BY o.file_path", (max_attempts,))]
    return {"statuses": statuses, "deleted": deleted, "in_flight": flight, "exhausted": exhausted,
            "runs": recent_runs(conn, recent)}


def recent_runs(conn: sqlite3.Connection, limit: int) -> list[dict]:
    table = prices()
    out = []
    for run in conn.execute("SELECT * FROM objbatch_runs ORDER BY created_at DESC LIMIT ?", (limit,)):
        jobs = conn.execute("SELECT * FROM objbatch_jobs WHERE run_name = ?", (run["run_name"],)).fetchall()
        tokens_in = sum(j["prompt_tokens"] for j in jobs)
        tokens_out = sum(j["completion_tokens"] for j in jobs)
        out.append({"run": run["run_name"], "state": run["state"], "created_at": run["created_at"],
                    "model": run["model"], "jobs": [{"id": j["job_id"], "status": j["status"]} for j in jobs],
                    "counts": ledger.load_json(run["counts_json"], {}), "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "cost_usd": round(sum(cost(j["model"] or run["model"], j["prompt_tokens"],
                                               j["completion_tokens"], table) for j in jobs), 6)})
    return out


def render(data: dict) -> str:
    lines = ["Files by status:"]
    lines += [f"  {status:<18} {count:>6}" for status, count in data["statuses"].items()]
    lines.append(f"  {'(deleted)':<18} {data['deleted']:>6}")
    if data["in_flight"]:
        lines.append("In flight:")
        lines += [f"  run {f['run']} ({f['state']}): {f['files']} files, jobs "
                  f"{' '.join(f['jobs']) or '(not submitted yet)'}" for f in data["in_flight"]]
    else:
        lines.append("In flight: none")
    if data["exhausted"]:
        lines.append(f"Out of attempts ({len(data['exhausted'])}; retry with make batch RETRY_EXHAUSTED=1):")
        lines += [f"  {e['file_path']} ({e['attempts']} attempts): {' | '.join(e['reasons'][-3:])}"
                  for e in data["exhausted"]]
    if data["runs"]:
        lines.append("Recent runs:")
        for run in data["runs"]:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(run["counts"].items())) or "-"
            lines.append(f"  {run['run']:<24} {run['state']:<9} {len(run['jobs'])} job(s)  "
                         f"{run['prompt_tokens'] + run['completion_tokens']:>10,} tokens  ${run['cost_usd']:.4f}  "
                         f"{counts}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", default="data/library.db", show_default=True, type=click.Path(dir_okay=False),
              help="The library database.")
@click.option("--runs", "recent", default=10, show_default=True, help="How many recent runs to show.")
@click.option("--max-attempts", default=DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Attempt cap used to list files that ran out of attempts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@command
def main(db: str, recent: int, max_attempts: int, as_json: bool) -> None:
    """Where the library stands: statuses, work in flight, exhausted files, recent runs and their cost."""
    with ledger.opened(db) as conn:
        data = gather(conn, recent, max_attempts)
    click.echo(json.dumps(data, indent=2) if as_json else render(data))


if __name__ == "__main__":
    main()
