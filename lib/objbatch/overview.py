"""What the library and its runs add up to: the figures `stats` prints and `report` draws, from one place so
the two always agree. Every figure is an aggregate the database computes (GROUP BY), so a library of
100,000 files costs a handful of queries, never a row per file in memory."""

from __future__ import annotations

import sqlite3
from typing import Any

from . import costs, ledger, metadata, runs
from .states import FileStatus

TOP_TOPICS = 15
TOP_REASONS = 20
BINS = 20  # the confidence histogram: 0.00-0.05, 0.05-0.10, ..., 0.95-1.00
WITH_METADATA = "f.ai_metadata_status IN ('extracted', 'needs_review', 'approved') AND COALESCE(f.is_deleted, 0) = 0"


def gather(conn: sqlite3.Connection, recent: int | None, max_attempts: int) -> dict[str, Any]:
    """Everything stats shows: statuses, work in flight, exhausted files, recent runs (None: all), totals
    over every run, the spread of the metadata, the confidence histogram and the reasons files failed or
    were skipped."""
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
    every = all_runs(conn)
    return {"statuses": statuses, "deleted": deleted, "in_flight": flight, "exhausted": exhausted,
            "runs": every[:recent] if recent is not None else every, "totals": totals(every),
            "metadata": spread(conn), "confidence": histogram(conn), "reasons": reasons(conn),
            "by_model": by_model(conn), "prices": costs.price_note(), "warnings": runs.unfetched_warnings(conn)}


def job_cost(job: sqlite3.Row, model: str | None) -> float | None:
    """What a job cost from the usage its results reported: at the price of the dated model that answered
    when schemas/prices.json knows it, else of the name asked for; cached prompt tokens at their price."""
    answered = job["resolved_model"] if job["resolved_model"] and costs.entry(job["resolved_model"]) else None
    return costs.cost(answered or job["model"] or model, job["prompt_tokens"], job["completion_tokens"],
                      cached_tokens=job["cached_tokens"])


def by_model(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Tokens and cost per model that answered (the dated model the results name, else the name asked for)."""
    out: dict[str, dict[str, Any]] = {}
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


def all_runs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every run, newest first, with its tokens, its cost from the usage its results carried and its estimate."""
    jobs: dict[str, list[sqlite3.Row]] = {}
    for job in conn.execute("SELECT * FROM objbatch_jobs ORDER BY rowid"):
        jobs.setdefault(job["run_name"], []).append(job)
    out = []
    for run in conn.execute("SELECT * FROM objbatch_runs ORDER BY created_at DESC, run_name DESC"):
        own = jobs.get(run["run_name"], [])
        spent = [job_cost(j, run["model"]) for j in own]
        estimate = ledger.load_json(run["estimate_json"], {})
        out.append({"run": run["run_name"], "state": run["state"], "created_at": run["created_at"],
                    "model": run["model"], "jobs": [{"id": j["job_id"], "status": j["status"]} for j in own],
                    "counts": ledger.load_json(run["counts_json"], {}),
                    "prompt_tokens": sum(j["prompt_tokens"] for j in own),
                    "completion_tokens": sum(j["completion_tokens"] for j in own),
                    "cached_tokens": sum(j["cached_tokens"] for j in own),
                    "reasoning_tokens": sum(j["reasoning_tokens"] for j in own),
                    "resolved_models": sorted({m for j in own for m in (j["resolved_model"] or "").split(",") if m}),
                    "remote_cleanup": run["remote_cleanup"],
                    "cost_usd": None if None in spent else round(sum(s for s in spent if s is not None), 6),
                    "estimate_usd": estimate.get("batch_usd"), "estimate_input_tokens": estimate.get("input_tokens")})
    return out


def totals(every: list[dict[str, Any]]) -> dict[str, Any]:
    """Over all runs: how many, their tokens, what they cost (runs with an unpriced model are counted apart)."""
    priced = [run["cost_usd"] for run in every if run["cost_usd"] is not None]
    estimates = [run["estimate_usd"] for run in every if run["estimate_usd"] is not None]
    prompt_tokens = sum(run["prompt_tokens"] for run in every)
    completion_tokens = sum(run["completion_tokens"] for run in every)
    return {"runs": len(every), "jobs": sum(len(run["jobs"]) for run in every), "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "tokens": prompt_tokens + completion_tokens,
            "cost_usd": round(sum(priced), 6), "estimate_usd": round(sum(estimates), 6),
            "unpriced_runs": len(every) - len(priced)}


def spread(conn: sqlite3.Connection) -> dict[str, Any]:
    """Categories, difficulty and the most common topics of the current metadata of files that have some."""
    current = ("FROM files f JOIN file_metadata_ai m ON m.metadata_id = (SELECT MAX(metadata_id) FROM "
               f"file_metadata_ai WHERE file_path = f.file_path AND is_current = 1) WHERE {WITH_METADATA} "
               "AND json_valid(m.metadata_json)")
    counted = {}
    for field in ("category", "difficulty"):
        counted[field] = {row[0]: row[1] for row in conn.execute(
            f"SELECT COALESCE(json_extract(m.metadata_json, '$.{field}'), '(none)') AS v, COUNT(*) AS n {current} "
            "GROUP BY v ORDER BY n DESC, v")}
    files = conn.execute(f"SELECT COUNT(*) {current}").fetchone()[0]
    topics = [[row[0], row[1]] for row in conn.execute(
        f"SELECT t.topic_tag, COUNT(*) AS n FROM file_primary_topics t JOIN files f USING (file_path) "
        f"WHERE {WITH_METADATA} GROUP BY t.topic_tag ORDER BY n DESC, t.topic_tag LIMIT ?", (TOP_TOPICS,))]
    return {"files": files, "categories": counted["category"], "difficulty": counted["difficulty"],
            "top_topics": topics}


def histogram(conn: sqlite3.Connection) -> dict[str, Any]:
    """How many files with metadata fall in each twentieth of confidence, and the review threshold."""
    bins = [0] * BINS
    for index, n in conn.execute(
            f"SELECT MIN(CAST(f.ai_confidence_score * {BINS} + 1e-9 AS INTEGER), {BINS - 1}), COUNT(*) FROM files f "
            f"WHERE {WITH_METADATA} AND f.ai_confidence_score BETWEEN 0 AND 1 GROUP BY 1"):
        bins[index] += n
    return {"bins": bins, "width": 1 / BINS, "threshold": metadata.soft_rules()["threshold"]}


def reasons(conn: sqlite3.Connection) -> dict[str, Any]:
    """Why files failed validation or were skipped: each reason once with how many files give it, most
    common first (a failure's reasons are stored joined by '; '; a skip's message is one reason)."""
    grouped: dict[str, list[list[object]] | int] = {}
    for status in (FileStatus.FAILED_VALIDATION, FileStatus.SKIPPED):
        counted: dict[str, int] = {}
        for message, n in conn.execute(
                "SELECT error_message, COUNT(*) FROM files WHERE ai_metadata_status = ? AND "
                "COALESCE(is_deleted, 0) = 0 GROUP BY error_message", (status,)):
            message = message or "(no reason recorded)"
            for reason in dict.fromkeys(message.split("; ") if status == FileStatus.FAILED_VALIDATION else [message]):
                counted[reason] = counted.get(reason, 0) + n
        ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
        grouped[status] = [[reason, n] for reason, n in ranked[:TOP_REASONS]]
        grouped[status + "_other"] = sum(n for _, n in ranked[TOP_REASONS:])
    return grouped


def render(data: dict[str, Any]) -> str:
    """The figures for people (stats' table, and the summary after make batch)."""
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
        lines.append("Recent runs:")
        lines.append(runs_table(data["runs"]))
    lines += _totals_lines(data["totals"]) + _model_lines(data["by_model"])
    if data["runs"]:
        lines.append(f"Costs at {data['prices']}")
    lines += _spread_lines(data["metadata"])
    return "\n".join(lines)


def _totals_lines(total: dict[str, Any]) -> list[str]:
    if not total["runs"]:
        return []
    unpriced = f" ({total['unpriced_runs']} run(s) with no price not counted)" if total["unpriced_runs"] else ""
    return [f"All runs: {total['runs']:,} run(s), {total['jobs']:,} job(s), {total['tokens']:,} tokens "
            f"({total['prompt_tokens']:,} in, {total['completion_tokens']:,} out), "
            f"{costs.money(total['cost_usd'])}{unpriced} (estimate {costs.money(total['estimate_usd'])})"]


def _model_lines(models: list[dict[str, Any]]) -> list[str]:
    if not models:
        return []
    return ["Cost by the model that answered:"] + [
        f"  {m['model']:<24} asked as {', '.join(m['asked_as']):<22} {m['prompt_tokens']:>10,} in "
        f"({m['cached_tokens']:,} cached) {m['completion_tokens']:>9,} out ({m['reasoning_tokens']:,} reasoning)  "
        f"{costs.money(m['cost_usd'])}" for m in models]


def _spread_lines(spread_: dict[str, Any]) -> list[str]:
    if not spread_["files"]:
        return []
    def listed(pairs: list[Any]) -> str:
        return ", ".join(f"{name} {n}" for name, n in pairs)
    return [f"Metadata of {spread_['files']:,} file(s):",
            f"  categories   {listed(list(spread_['categories'].items()))}",
            f"  difficulty   {listed(list(spread_['difficulty'].items()))}",
            f"  top topics   {listed(spread_['top_topics'][:10])}"]


def runs_table(runs: list[dict[str, Any]]) -> str:
    """The recent runs, one line each, names in one column."""
    width = max(24, *(len(run["run"]) for run in runs))
    return "\n".join(run_line(run, width) for run in runs)


def run_line(run: dict[str, Any], width: int = 24) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(run["counts"].items())) or "-"
    estimated = f" (estimate {costs.money(run['estimate_usd'])})" if run["estimate_usd"] is not None else ""
    spent = "$0.0000" if run["cost_usd"] is None and not run["jobs"] else \
        "cost unknown (no price)" if run["cost_usd"] is None else costs.money(run["cost_usd"])
    return (f"  {run['run']:<{width}} {run['state']:<10} {len(run['jobs'])} job(s) "
            f"{run['prompt_tokens'] + run['completion_tokens']:>10,} tokens  {spent}{estimated}  {counts}")
