"""The report as one self-contained HTML page: the figures of overview.gather drawn as small inline SVG
charts beside the numbers, and the first files of the review queue. No script, no font, no style sheet
from anywhere else (a Content-Security-Policy forbids them), so it opens offline, from a mail or a USB stick.

Every figure the page states carries data-figure (its path in `stats --json`) and data-value (the value as
JSON), so a test can check the page a browser rendered against stats. Its size grows with the number of
runs shown (at most RUNS_SHOWN) and the review queue's first N files, never with the library's size."""

from __future__ import annotations

import html
import json
from typing import Any

from .costs import money

RUNS_SHOWN = 40
STATUS_COLORS = {"extracted": "#2e7d32", "approved": "#1565c0", "needs_review": "#f0a500",
                 "failed_validation": "#c62828", "failed_json": "#8e0000", "skipped": "#9e9e9e",
                 "pending": "#cfd8dc", "retry_scheduled": "#6a1b9a"}
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d1f23}
header{background:#1d2733;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c4d0}main{padding:18px 28px;display:grid;gap:16px;
grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}section{background:#fff;border-radius:8px;padding:14px 18px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}section.wide{grid-column:1/-1}h2{font-size:15px;margin:0 0 10px;color:#33404d}
table{border-collapse:collapse;width:100%}td,th{padding:3px 8px;text-align:left;border-bottom:1px solid #eceff1;
vertical-align:top}th{font-weight:600;color:#55606b}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.big{display:flex;gap:28px;flex-wrap:wrap}.big div{min-width:110px}.big b{display:block;font-size:24px}
.big div>span{color:#66717c}.note{color:#66717c;font-size:13px}.empty{background:#fff8e1;border-left:4px solid #f0a500}
svg{display:block;max-width:100%}svg text{font:11px system-ui,sans-serif;fill:#33404d}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.item{border-top:1px solid #eceff1;padding:10px 0}.item:first-of-type{border-top:0}
.path{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.tag{display:inline-block;background:#eef1f4;border-radius:10px;padding:0 8px;margin:1px 2px;font-size:12px}
.st{display:inline-block;border-radius:3px;padding:0 6px;color:#fff;font-size:12px}
pre{background:#f7f8fa;border:1px solid #eceff1;border-radius:4px;padding:6px 8px;white-space:pre-wrap;
font-size:12px;max-height:9em;overflow:hidden;margin:6px 0 0}ul{margin:4px 0;padding-left:20px}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fig(path: str, value: Any, text: str | None = None, tag: str = "span", cls: str = "") -> str:
    """A stated figure: its stats --json path and value ride along for the browser test."""
    shown = text if text is not None else (f"{value:,}" if isinstance(value, int) else str(value))
    klass = f' class="{cls}"' if cls else ""
    return (f'<{tag}{klass} data-figure="{esc(path)}" data-value="{esc(json.dumps(value))}">'
            f"{esc(shown)}</{tag}>")


def page(data: dict[str, Any], queue: list[dict[str, Any]], queue_total: int, title: str, generated: str) -> str:
    touched = bool(data["totals"]["runs"] or data["metadata"]["files"])
    files = sum(data["statuses"].values())
    parts = [headline(data, files)]
    if not touched:
        parts.append('<section class="wide empty"><h2>objbatch has not run on this library yet</h2><p>'
                     f"{files:,} file(s), none sent and no runs recorded, so there is no cost, metadata or review "
                     "queue to show yet. <code>make estimate</code> says what a first run would send and cost; "
                     "<code>make batch</code> starts it.</p></section>")
    parts += [statuses(data), costs_section(data["runs"], data["totals"]), histogram(data["confidence"]),
              spread(data["metadata"]), reasons(data["reasons"]), review(queue, queue_total)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>objbatch report</h1><p>{esc(title)} &middot; generated {esc(generated)}</p></header>"
            f"<main>{''.join(parts)}</main></body></html>\n")


def headline(data: dict[str, Any], files: int) -> str:
    total = data["totals"]
    review_n = data["statuses"].get("needs_review", 0)
    cells = [(fig("files", files), "files"), (fig("totals/runs", total["runs"]), "runs"),
             (fig("totals/cost_usd", total["cost_usd"], money(total["cost_usd"])), "spent"),
             (fig("totals/estimate_usd", total["estimate_usd"], money(total["estimate_usd"])), "estimated"),
             (fig("totals/tokens", total["tokens"]), "tokens"),
             (fig("statuses/needs_review", review_n) if review_n else "0", "need review")]
    unpriced = (f'<p class="note">{fig("totals/unpriced_runs", total["unpriced_runs"])} run(s) used a model '
                "with no price in schemas/prices.json and are not in the cost.</p>") if total["unpriced_runs"] else ""
    return ('<section class="wide"><div class="big">'
            + "".join(f"<div><b>{value}</b><span>{label}</span></div>" for value, label in cells)
            + f'</div><p class="note">Tokens: {fig("totals/prompt_tokens", total["prompt_tokens"])} in, '
              f'{fig("totals/completion_tokens", total["completion_tokens"])} out, over '
              f'{fig("totals/jobs", total["jobs"])} job(s).</p>{unpriced}</section>')


def statuses(data: dict[str, Any]) -> str:
    counts = data["statuses"]
    total = sum(counts.values()) or 1
    x, rects = 0.0, []
    for status, n in counts.items():
        width = 600 * n / total
        rects.append(f'<rect x="{x:.1f}" y="0" width="{width:.1f}" height="26" fill="{color(status)}">'
                     f"<title>{esc(status)}: {n:,}</title></rect>")
        x += width
    bar = f'<svg viewBox="0 0 600 26" width="600" height="26" role="img" aria-label="files by status">{"".join(rects)}</svg>'
    rows = "".join(f'<tr><td><span class="swatch" style="background:{color(s)}"></span>{esc(s)}</td>'
                   f'{fig("statuses/" + s, n, tag="td", cls="n")}<td class="n">{100 * n / total:.1f} %</td></tr>'
                   for s, n in counts.items())
    rows += f'<tr><td>(deleted)</td>{fig("deleted", data["deleted"], tag="td", cls="n")}<td></td></tr>'
    return f"<section><h2>Files by status</h2>{bar}<table>{rows}</table></section>"


def color(status: str) -> str:
    return STATUS_COLORS.get(status, "#78909c")


def costs_section(runs: list[dict[str, Any]], total: dict[str, Any]) -> str:
    if not runs:
        return "<section><h2>Cost per run</h2><p class=\"note\">No runs yet.</p></section>"
    shown = list(reversed(runs[:RUNS_SHOWN]))  # oldest first, left to right
    older = runs[RUNS_SHOWN:]
    cumulative = sum(r["cost_usd"] or 0 for r in older)
    rows, points = [], []
    for run in shown:
        index = runs.index(run)
        cumulative += run["cost_usd"] or 0
        points.append((run, cumulative))
        rows.append(f'<tr><td class="path">{esc(run["run"])}</td><td>{esc(run["state"])}</td>'
                    f'{fig(f"runs/{index}/prompt_tokens", run["prompt_tokens"], tag="td", cls="n")}'
                    f'{fig(f"runs/{index}/completion_tokens", run["completion_tokens"], tag="td", cls="n")}'
                    f'{fig(f"runs/{index}/estimate_usd", run["estimate_usd"], money(run["estimate_usd"]), "td", "n")}'
                    f'{fig(f"runs/{index}/cost_usd", run["cost_usd"], cost_text(run), "td", "n")}'
                    f'<td class="n">{money(round(cumulative, 6))}</td></tr>')
    note = (f'<p class="note">The {len(shown)} newest of {len(runs):,} runs; the cumulative cost includes the '
            f"{len(older):,} older ones.</p>") if older else ""
    table = ('<table><tr><th>run</th><th>state</th><th class="n">tokens in</th><th class="n">tokens out</th>'
             '<th class="n">estimate</th><th class="n">actual</th><th class="n">cumulative</th></tr>'
             + "".join(reversed(rows)) + "</table>")
    return (f'<section class="wide"><h2>Cost per run: estimated and actual, and cumulative</h2>'
            f"{cost_chart(points)}{note}{table}</section>")


def cost_text(run: dict[str, Any]) -> str:
    if run["cost_usd"] is None:
        return "$0.0000" if not run["jobs"] else "unknown (no price)"
    return money(run["cost_usd"])


def cost_chart(points: list[tuple[dict[str, Any], float]]) -> str:
    """Bars: each run's actual cost, beside an outline of its estimate; a line: the cumulative cost (right axis)."""
    width, height, left, bottom, head = 900, 200, 56, 24, 26
    top_cost = max([max(r["cost_usd"] or 0, r["estimate_usd"] or 0) for r, _ in points] + [1e-9])
    top_sum = max([c for _, c in points] + [1e-9])
    slot = min((width - left - 60) / len(points), 70)
    plot = height - bottom - head
    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           'aria-label="cost per run and cumulative cost">',
           f'<line x1="{left}" y1="{head + plot}" x2="{width - 60}" y2="{head + plot}" stroke="#90a4ae"/>',
           f'<text x="{left - 6}" y="{head + 4}" text-anchor="end">{money(top_cost)}</text>',
           f'<text x="{left - 6}" y="{head + plot}" text-anchor="end">$0</text>',
           f'<text x="{width - 56}" y="{head + 4}" fill="#6a1b9a">{money(top_sum)}</text>',
           '<text x="60" y="12"><tspan fill="#1565c0">&#9632; actual</tspan>  <tspan fill="#546e7a">'
           '&#9633; estimate</tspan>  <tspan fill="#6a1b9a">&#8212; cumulative (right scale)</tspan></text>']
    line = []
    for i, (run, cumulative) in enumerate(points):
        x = left + i * slot + slot * 0.15
        w = slot * 0.7
        est = (run["estimate_usd"] or 0) / top_cost * plot
        act = (run["cost_usd"] or 0) / top_cost * plot
        out.append(f'<rect x="{x:.1f}" y="{head + plot - est:.1f}" width="{w:.1f}" height="{est:.1f}" fill="none" '
                   f'stroke="#546e7a" stroke-dasharray="3 2"><title>{esc(run["run"])}: estimate '
                   f'{money(run["estimate_usd"])}</title></rect>')
        out.append(f'<rect x="{x + w * 0.2:.1f}" y="{head + plot - act:.1f}" width="{w * 0.6:.1f}" height="{act:.1f}" '
                   f'fill="#1565c0"><title>{esc(run["run"])}: actual {cost_text(run)}</title></rect>')
        line.append((x + w / 2, head + plot - cumulative / top_sum * plot))
        if len(points) <= 12:
            out.append(f'<text x="{x + w / 2:.1f}" y="{height - 8}" text-anchor="middle">{esc(run["run"][:14])}</text>')
    out.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in line)}" fill="none" stroke="#6a1b9a" '
               'stroke-width="2"/>')
    out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#6a1b9a"/>' for x, y in line]
    out.append("</svg>")
    return "".join(out)


def histogram(confidence: dict[str, Any]) -> str:
    bins, threshold = confidence["bins"], confidence["threshold"]
    width, height, left, bottom = 420, 170, 34, 22
    plot_w, plot_h = width - left - 8, height - bottom - 18
    top = max(bins + [1])
    step = plot_w / len(bins)
    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           'aria-label="confidence histogram">',
           f'<line x1="{left}" y1="{18 + plot_h}" x2="{width - 8}" y2="{18 + plot_h}" stroke="#90a4ae"/>',
           f'<text x="{left - 4}" y="24" text-anchor="end">{top:,}</text>']
    for i, n in enumerate(bins):
        low = i * confidence["width"]
        h = n / top * plot_h
        fill = "#f0a500" if low + confidence["width"] <= threshold + 1e-9 else "#2e7d32"
        out.append(f'<rect x="{left + i * step + 1:.1f}" y="{18 + plot_h - h:.1f}" width="{step - 2:.1f}" '
                   f'height="{h:.1f}" fill="{fill}" data-figure="confidence/bins/{i}" data-value="{n}">'
                   f"<title>{low:.2f}-{low + confidence['width']:.2f}: {n:,} files</title></rect>")
    for tick in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<text x="{left + tick * plot_w:.1f}" y="{height - 6}" text-anchor="middle">{tick:g}</text>')
    x = left + threshold * plot_w
    out.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{18 + plot_h}" stroke="#c62828" stroke-width="2" '
               'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{x - 4:.1f}" y="12" text-anchor="end" fill="#c62828">threshold {threshold:g}</text></svg>')
    below = sum(n for i, n in enumerate(bins) if (i + 1) * confidence["width"] <= threshold + 1e-9)
    return (f"<section><h2>Confidence of the stored metadata</h2>{''.join(out)}<p class=\"note\">"
            f'{below:,} of {sum(bins):,} below the threshold '
            f'{fig("confidence/threshold", threshold)} (to review).</p></section>')


def hbars(rows: list[tuple[str, int, str, Any]], fill: str) -> str:
    """Horizontal bars: (label, count, figure path, figure value) each."""
    if not rows:
        return '<p class="note">None yet.</p>'
    top = max(n for _, n, _, _ in rows) or 1
    return "<table>" + "".join(
        f'<tr><td>{esc(label)}</td><td style="width:35%"><svg viewBox="0 0 200 12" width="100%" height="12" '
        f'preserveAspectRatio="none"><rect width="{200 * n / top:.1f}" height="12" fill="{fill}"/></svg></td>'
        f'{fig(figure, value, f"{n:,}", "td", "n")}</tr>' for label, n, figure, value in rows) + "</table>"


def spread(meta: dict[str, Any]) -> str:
    def counted(field: str) -> list[tuple[str, int, str, Any]]:
        return [(name, n, f"metadata/{field}/{name}", n) for name, n in meta[field].items()]
    topics = [(t, n, f"metadata/top_topics/{i}", [t, n]) for i, (t, n) in enumerate(meta["top_topics"])]
    return (f'<section><h2>What the metadata says ({fig("metadata/files", meta["files"])} files)</h2>'
            f"<h2>Categories</h2>{hbars(counted('categories'), '#1565c0')}"
            f"<h2>Difficulty</h2>{hbars(counted('difficulty'), '#00897b')}"
            f"<h2>Top topics</h2>{hbars(topics, '#6a1b9a')}</section>")


def reasons(grouped: dict[str, Any]) -> str:
    parts = []
    for status, label in (("failed_validation", "Why files failed validation"), ("skipped", "Why files were skipped")):
        rows = [(reason, n, f"reasons/{status}/{i}", [reason, n]) for i, (reason, n) in enumerate(grouped[status])]
        other = grouped[f"{status}_other"]
        more = f'<p class="note">{fig(f"reasons/{status}_other", other)} more under other reasons.</p>' if other else ""
        parts.append(f"<h2>{label}</h2>{hbars(rows, color(status))}{more}")
    return f"<section>{''.join(parts)}</section>"


def review(queue: list[dict[str, Any]], total: int) -> str:
    if not queue:
        return '<section class="wide"><h2>Review queue</h2><p class="note">Nothing to review.</p></section>'
    items = "".join(review_item(item) for item in queue)
    return (f'<section class="wide"><h2>Review queue: the first {len(queue):,} of {total:,} files</h2>'
            '<p class="note">Then: <code>bin/show PATH</code>, <code>review --nl | approve -</code>, '
            f"<code>requeue</code>.</p>{items}</section>")


def review_item(item: dict[str, Any]) -> str:
    row = item["review"]
    meta = item["metadata"] if isinstance(item["metadata"], dict) else {}
    summary = (meta.get("semantic_description") or {}).get("summary") if isinstance(
        meta.get("semantic_description"), dict) else None
    confidence = "-" if row["confidence"] is None else f"{row['confidence']:.2f}"
    topics = "".join(f'<span class="tag">{esc(t)}</span>' for t in row["topics"] or [])
    outline = (f"<div>{esc(row['category'])} / {esc(row['difficulty'])} {topics}</div>" if meta else
               '<div class="note">no valid metadata</div>')
    return (f'<div class="item"><span class="st" style="background:{color(row["status"])}">{esc(row["status"])}'
            f'</span> confidence {confidence}, {row["attempts"]} attempt(s) <div class="path">{esc(row["file_path"])}'
            f"</div><ul>{''.join(f'<li>{esc(r)}</li>' for r in row['reasons'])}</ul>{outline}"
            + (f"<div>{esc(summary)}</div>" if summary else "")
            + f"<pre>{esc(item['opening'])}</pre></div>")
