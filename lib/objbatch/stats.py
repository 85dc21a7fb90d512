"""stats: counts per status, files in flight and in which job, files out of attempts, recent runs with
their counts, their cost from the usage the results carried (schemas/prices.json) and the estimate made
before they were paid."""

from __future__ import annotations

import json
import sqlite3
import sys

import click

from . import costs, ledger, output, runs
from .common import cli
from .select_pending import DEFAULT_MAX_ATTEMPTS


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
            "runs": recent_runs(conn, recent), "by_model": by_model(conn), "prices": costs.price_note(),
            "warnings": runs.unfetched_warnings(conn)}


def job_cost(job: sqlite3.Row, model: str | None) -> float | None:
    """What a job cost from the usage its results reported: at the price of the dated model that answered
    when schemas/prices.json knows it, else of the name asked for; cached prompt tokens at their price."""
    answered = job["resolved_model"] if job["resolved_model"] and costs.entry(job["resolved_model"]) else None
    return costs.cost(answered or job["model"] or model, job["prompt_tokens"], job["completion_tokens"],
                      cached_tokens=job["cached_tokens"])


def by_model(conn: sqlite3.Connection) -> list[dict]:
    """Tokens and cost per model that answered (the dated model the results name, else the name asked for)."""
    out: dict[str, dict] = {}
    for job in conn.execute("SELECT j.*, r.model AS run_model FROM objbatch_jobs j LEFT JOIN objbatch_runs r "
                            "USING (run_name) WHERE j.prompt_tokens > 0 OR j.completion_tokens > 0"):
        name = job["resolved_model"] or job["model"] or job["run_model"] or "?"
        row = out.setdefault(name, {"model": name, "asked_as": set(), "prompt_tokens": 0, "cached_tokens": 0,
                                    "completion_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.0})
        row["asked_as"].add(job["model"] or job["run_model"] or "?")
        for key in ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"):
            row[key] += job[key]
        spent = job_cost(job, job["run_model"])
        row["cost_usd"] = None if spent is None or row["cost_usd"] is None else round(row["cost_usd"] + spent, 6)
    return [{**row, "asked_as": sorted(row["asked_as"])} for row in out.values()]


def recent_runs(conn: sqlite3.Connection, limit: int) -> list[dict]:
    out = []
    for run in conn.execute("SELECT * FROM objbatch_runs ORDER BY created_at DESC LIMIT ?", (limit,)):
        jobs = conn.execute("SELECT * FROM objbatch_jobs WHERE run_name = ?", (run["run_name"],)).fetchall()
        tokens_in = sum(j["prompt_tokens"] for j in jobs)
        tokens_out = sum(j["completion_tokens"] for j in jobs)
        spent = [job_cost(j, run["model"]) for j in jobs]
        estimate = ledger.load_json(run["estimate_json"], {})
        out.append({"run": run["run_name"], "state": run["state"], "created_at": run["created_at"],
                    "model": run["model"], "jobs": [{"id": j["job_id"], "status": j["status"]} for j in jobs],
                    "counts": ledger.load_json(run["counts_json"], {}), "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out, "cached_tokens": sum(j["cached_tokens"] for j in jobs),
                    "reasoning_tokens": sum(j["reasoning_tokens"] for j in jobs),
                    "resolved_models": sorted({m for j in jobs for m in (j["resolved_model"] or "").split(",") if m}),
                    "remote_cleanup": run["remote_cleanup"],
                    "cost_usd": None if None in spent else round(sum(spent), 6),
                    "estimate_usd": estimate.get("batch_usd"), "estimate_input_tokens": estimate.get("input_tokens")})
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
    lines += [f"Warning: {warning}" for warning in data["warnings"]]
    if data["runs"]:
        lines.append(f"Recent runs ({data['prices']}):")
        lines += [run_line(run) for run in data["runs"]]
    if data["by_model"]:
        lines.append("Cost by the model that answered:")
        lines += [f"  {m['model']:<24} asked as {', '.join(m['asked_as']):<22} "
                  f"{m['prompt_tokens']:>10,} in ({m['cached_tokens']:,} cached) {m['completion_tokens']:>9,} out "
                  f"({m['reasoning_tokens']:,} reasoning)  {costs.money(m['cost_usd'])}" for m in data["by_model"]]
    return "\n".join(lines)


def run_line(run: dict) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(run["counts"].items())) or "-"
    estimated = f" (estimate {costs.money(run['estimate_usd'])})" if run["estimate_usd"] is not None else ""
    spent = "$0.0000" if run["cost_usd"] is None and not run["jobs"] else \
        "cost unknown (no price)" if run["cost_usd"] is None else costs.money(run["cost_usd"])
    return (f"  {run['run']:<24} {run['state']:<10} {len(run['jobs'])} job(s) "
            f"{run['prompt_tokens'] + run['completion_tokens']:>10,} tokens  {spent}{estimated}  {counts}")


@cli("stats --db data/library.db", "stats --json | jq .statuses")
@click.option("--db", default="data/library.db", show_default=True, type=click.Path(dir_okay=False),
              help="The library database.")
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(min=0),
              help="How many recent runs to show.")
@click.option("--max-attempts", default=DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Attempt cap used to list files that ran out of attempts.")
@output.options(json_help="Print everything as one JSON object, for scripts (--nl and --csv: the runs).")
def main(db: str, limit: int, max_attempts: int, fmt: str) -> None:
    """Where the library stands: statuses, work in flight, exhausted files, recent runs and their cost."""
    with ledger.opened(db, identity=False, read_only=True) as conn:
        data = gather(conn, limit, max_attempts)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "table":
        click.echo(render(data))
    else:
        output.write(data["runs"], fmt, sys.stdout, render)


if __name__ == "__main__":
    main()
