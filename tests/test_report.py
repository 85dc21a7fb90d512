"""report (issue 18): one self-contained HTML page whose figures are stats --json's, empty but clear on a
library objbatch never touched, small at 100,000 files, and rendered by a real browser (headless Chromium)
without a console message."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import ROOT, make, query, run
from objbatch.ledger import upgrade

CHROMIUM = shutil.which("chromium")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-logging=stderr", "--v=0"]


class Figures(HTMLParser):
    """Every element's data-figure/data-value pair, the tags used and any outside reference."""

    def __init__(self):
        super().__init__()
        self.figures: list[tuple[str, object]] = []
        self.tags: dict[str, int] = {}
        self.outside: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "data-figure" in attrs:
            self.figures.append((attrs["data-figure"], json.loads(attrs["data-value"])))
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith(("#", "data:")):
                self.outside.append(attrs[name])
        if tag == "link" or (tag == "script"):
            self.outside.append(f"<{tag}>")


def parsed(text: str) -> Figures:
    found = Figures()
    found.feed(text)
    return found


def lookup(data: dict, path: str) -> object:
    value: object = data
    for part in path.split("/"):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def check_figures(page: Figures, stats: dict) -> None:
    """Every figure on the page is the one stats --json gives, and the page states every one of them."""
    stats = {**stats, "files": sum(stats["statuses"].values())}
    assert page.figures, "the page states no figures"
    for path, value in page.figures:
        assert lookup(stats, path) == value, f"{path}: the page says {value!r}, stats --json {lookup(stats, path)!r}"
    shown = {path for path, _ in page.figures}
    wanted = {f"statuses/{s}" for s in stats["statuses"]} | {f"totals/{k}" for k in (
        "runs", "cost_usd", "estimate_usd", "tokens", "prompt_tokens", "completion_tokens")}
    wanted |= {f"confidence/bins/{i}" for i in range(len(stats["confidence"]["bins"]))} | {"confidence/threshold"}
    wanted |= {f"metadata/categories/{c}" for c in stats["metadata"]["categories"]}
    wanted |= {f"metadata/difficulty/{d}" for d in stats["metadata"]["difficulty"]}
    wanted |= {f"metadata/top_topics/{i}" for i in range(len(stats["metadata"]["top_topics"]))}
    for group in ("failed_validation", "skipped"):
        wanted |= {f"reasons/{group}/{i}" for i in range(len(stats["reasons"][group]))}
    for i, _ in enumerate(stats["runs"]):
        wanted |= {f"runs/{i}/cost_usd", f"runs/{i}/estimate_usd"}
    assert wanted <= shown, f"the page lacks {sorted(wanted - shown)}"


# ---------------------------------------------------------------- without a browser

def test_a_library_objbatch_never_touched_gets_an_empty_report_that_says_so(library, tmp_path):
    _, db = library
    before = db.read_bytes()
    done = run("report", "--db", db, "--runs", tmp_path / "runs")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "runs" / "report.html").read_text()
    assert "objbatch has not run on this library yet" in text and "Nothing to review." in text
    assert db.read_bytes() == before  # a reader leaves an untouched database as it is
    page = parsed(text)
    assert not page.outside
    check_figures(page, json.loads(run("stats", "--db", db, "--json", "-n", "1000").stdout))
    assert re.fullmatch(r"report: \S+report\.html \(\d+ KB\): 32 files, 0 run\(s\), 0 to review\n", done.stderr)


def test_make_report_writes_to_the_runs_folder_or_where_o_says(library, tmp_path):
    _, db = library
    done = make("report", f"DB={db}", f"RUNS={tmp_path / 'r'}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "report.html").read_text().startswith("<!DOCTYPE html>")
    elsewhere = run("report", "--db", db, "-o", tmp_path / "x.html")
    assert elsewhere.returncode == 0 and (tmp_path / "x.html").stat().st_size > 1000
    assert run("report", "--db", tmp_path / "none.db").returncode == 1


def synthetic_library(db: Path, files: int) -> None:
    """A library of `files` files with metadata, made in SQL (no disk files: the report reads none of them
    beyond the review queue's, which say they cannot be read)."""
    subprocess.run([str(ROOT / "bin" / "make-sample-library"), "--root", str(db.parent / "lib"), "--db", str(db),
                    "--count", "1"], check=True, capture_output=True)
    conn = sqlite3.connect(db)
    statuses = ["extracted"] * 8 + ["needs_review", "failed_validation"]
    topics = ["ethics", "reason", "values", "egoism", "justice", "art", "logic", "history", "rights", "virtue"]
    categories = ["course_transcript", "qa_session", "cultural_commentary", "book_excerpt"]
    with conn:
        upgrade(conn)  # what objbatch adds, as the first writer would
        rows, meta, tags = [], [], []
        for i in range(files):
            path = f"/nowhere/c{i % 50}/lecture {i}.txt"
            status = statuses[i % len(statuses)]
            score = (i * 37 % 100) / 100
            rows.append((path, f"h{i}", f"lecture {i}.txt", 1000, status, score,
                         "answer contained no JSON" if status == "failed_validation" else None))
            if status != "failed_validation":
                chosen = [topics[(i + k) % len(topics)] for k in range(8)]
                meta.append((path, json.dumps({"category": categories[i % 4], "difficulty": ["intro", "advanced"][i % 2],
                                               "primary_topics": chosen, "confidence_score": score})))
                tags += [(path, t) for t in chosen]
        conn.executemany("INSERT INTO files (file_path, content_hash, filename, file_size, ai_metadata_status, "
                         "ai_confidence_score, error_message) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO file_metadata_ai (file_path, metadata_json, is_current) VALUES (?, ?, 1)", meta)
        conn.executemany("INSERT INTO file_primary_topics VALUES (?, ?)", tags)
    conn.close()


@pytest.mark.slow
def test_at_100000_files_the_report_stays_small_and_lists_only_the_queue(tmp_path):
    db = tmp_path / "big.db"
    synthetic_library(db, 100_000)
    started = time.monotonic()
    done = run("report", "--db", db, "-o", tmp_path / "big.html", "-n", "25")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "big.html").read_text()
    size = len(text.encode())
    print(f"report of 100,001 files: {size / 1024:.0f} KB in {took:.1f} s")
    page = parsed(text)
    assert size < 150_000 and page.tags.get("div", 0) < 400 and page.tags.get("tr", 0) < 120
    queued = run("review", "--db", db, "--nl", "-n", "0").stderr  # review: N needs_review, M failed_validation
    total = sum(int(n) for n in re.findall(r"(\d+) \w+", queued))
    assert text.count('class="item"') == 25 and f"the first 25 of {total:,} files" in text and total > 20_000
    assert "the transcript cannot be read here" in text
    check_figures(page, json.loads(run("stats", "--db", db, "--json", "-n", "1000").stdout))


# ---------------------------------------------------------------- in a real browser

def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def console(stderr: str) -> list[str]:
    """What the page said on the console (headless Chromium logs each message as INFO:CONSOLE)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs "
                                               "it when missing)")
def test_the_report_renders_in_chromium_with_the_figures_of_stats(emulator, library, runs_dir, tmp_path):
    _, db = library
    emulator.faults(answers={"missing_confidence": 0.35, "prose": 0.15}, seed=4)
    for name in ("first", "second"):
        done = make("batch", f"DB={db}", f"RUNS={runs_dir}", "POLL=0.1", f"NAME={name}", "MAX=20",
                    env=emulator.env)
        assert done.returncode == 0, done.stderr
    done = make("report", f"DB={db}", f"RUNS={runs_dir}")
    assert done.returncode == 0, done.stderr
    report = runs_dir / "report.html"
    stats = json.loads(run("stats", "--db", db, "--json", "-n", "1000").stdout)
    assert stats["totals"]["runs"] == 2 and stats["statuses"]["needs_review"] and stats["reasons"]["skipped"]

    # the harness sees a page's console messages: a control page that makes some
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src '
                       "'none'; script-src 'unsafe-inline'\"></head><body><img src=\"http://127.0.0.1:9/x.png\">"
                       '<script>console.error("control")</script></body></html>')
    seen = chromium("--dump-dom", control.as_uri(), profile=tmp_path / "profile-control")
    assert len(console(seen.stderr)) >= 2, seen.stderr

    rendered = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile-dom")
    assert rendered.returncode == 0, rendered.stderr
    assert console(rendered.stderr) == [], "\n".join(console(rendered.stderr))
    page = parsed(rendered.stdout)
    assert not page.outside and "Review queue: the first" in rendered.stdout
    check_figures(page, stats)

    shot = tmp_path / "report.png"
    taken = chromium("--window-size=1280,2200", f"--screenshot={shot}", report.as_uri(),
                     profile=tmp_path / "profile-shot")
    assert taken.returncode == 0 and console(taken.stderr) == [], taken.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("OBJBATCH_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["OBJBATCH_KEEP_SCREENSHOT"])
    assert query(db, "SELECT COUNT(*) FROM objbatch_runs")[0][0] == 2


def test_stats_gives_totals_over_all_runs_and_the_spread_of_the_metadata(tmp_path):
    db = tmp_path / "small.db"
    synthetic_library(db, 200)
    conn = sqlite3.connect(db)
    with conn:
        for i, (tokens_in, tokens_out) in enumerate([(1000, 100), (2000, 300), (500, 50)]):
            conn.execute("INSERT INTO objbatch_runs (run_name, model, state, created_at, estimate_json) VALUES "
                         "(?, 'mistral-small-latest', 'applied', ?, ?)", (f"r{i}", f"2026-01-0{i + 1}",
                                                                           json.dumps({"batch_usd": 0.01})))
            conn.execute("INSERT INTO objbatch_jobs (job_id, run_name, model, status, prompt_tokens, "
                         "completion_tokens) VALUES (?, ?, 'mistral-small-latest', 'SUCCESS', ?, ?)",
                         (f"j{i}", f"r{i}", tokens_in, tokens_out))
    conn.close()
    data = json.loads(run("stats", "--db", db, "--json", "-n", "1").stdout)
    assert len(data["runs"]) == 1 and data["runs"][0]["run"] == "r2"  # the newest; the totals count all three
    total = data["totals"]
    assert (total["runs"], total["jobs"], total["prompt_tokens"], total["completion_tokens"], total["tokens"]) == \
        (3, 3, 3500, 450, 3950)
    assert total["estimate_usd"] == pytest.approx(0.03)
    priced = json.loads(run("stats", "--db", db, "--json", "-n", "10").stdout)["runs"]
    assert total["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in priced)) and total["cost_usd"] > 0
    metas = [json.loads(m) for (m,) in query(db, "SELECT metadata_json FROM file_metadata_ai")]
    assert data["metadata"]["files"] == len(metas) == 180
    assert data["metadata"]["categories"] == {c: sum(m["category"] == c for m in metas) for c in
                                              {m["category"] for m in metas}}
    assert sum(data["metadata"]["difficulty"].values()) == 180
    assert data["metadata"]["top_topics"][0][1] == max(sum(t in m["primary_topics"] for m in metas)
                                                       for t in {t for m in metas for t in m["primary_topics"]})
    assert sum(data["confidence"]["bins"]) == 180 and data["confidence"]["threshold"] == 0.85
    assert data["reasons"]["failed_validation"] == [["answer contained no JSON", 20]]
    table = run("stats", "--db", db).stdout
    assert "All runs: 3 run(s), 3 job(s), 3,950 tokens (3,500 in, 450 out), $" in table
    assert re.search(r"^  categories   course_transcript \d+, ", table, re.M) and "top topics   " in table
