"""A run's life (issue 15): the reproductions of items 1, 3, 4, 7, 11 and 13, each with the real commands,
the real emulator and a real SQLite library, checking what the service was asked and what the database
holds."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import batch, batch_run, claimed, jobs, make, query, rows, run

pytestmark = pytest.mark.slow
QUICK_GIVE_UP = {"OBJBATCH_RETRY_SECONDS": "0.3"}  # a 503 storm ends the command (exit 75) within a second


def attempts(db) -> int:
    return query(db, "SELECT COALESCE(SUM(attempts), 0) FROM objbatch_files")[0][0]


def statuses(db) -> dict[str, str]:
    return {p: r["ai_metadata_status"] for p, r in rows(db).items()}


def frozen_without_a_job(emu, db, runs, name) -> None:
    """Run `name` froze what it sends, then every job creation was answered 503 until it gave up (exit 75)."""
    emu.faults(preset="none", http_storm=100_000, http_storm_path="POST /v1/batch/jobs", http_status=503,
               retry_after=0.01)
    stuck = batch_run(emu, db, runs, f"NAME={name}", env=QUICK_GIVE_UP)
    assert stuck.returncode == 75, stuck.stderr
    assert jobs(emu) == []
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = ?", name) == [("submitting",)]
    emu.faults(http_storm=0)


# ---------------------------------------------------------------- item 1

def test_cancel_after_a_failed_job_creation_requeues_everything_and_spends_nothing(emulator, library, runs_dir):
    _, db = library
    name = "cz-run-life"
    elsewhere = runs_dir.parent / "other-runs"  # a RUNS folder that never held the run (no shared folder in the clone)
    frozen_without_a_job(emulator, db, runs_dir, name)
    before = statuses(db)
    cancelled = make("cancel", f"DB={db}", f"RUNS={elsewhere}", env=emulator.env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert not (elsewhere / name).exists(), "make cancel made a run folder"
    assert "never reached the service" not in cancelled.stderr and "applied" not in cancelled.stdout
    assert query(db, "SELECT state FROM objbatch_runs") == [("cancelled",)]
    assert jobs(emulator) == [] and claimed(db) == 0 and attempts(db) == 0
    assert statuses(db) == before  # every file is where it was: back in the queue
    again = batch(emulator, db, runs_dir, "NAME=after")
    assert again.returncode == 0, again.stderr
    assert len(jobs(emulator)) == 1


# ---------------------------------------------------------------- item 3

def test_a_paid_result_is_judged_against_what_was_sent_after_a_crash_and_a_rebuilt_folder(emulator, library,
                                                                                          runs_dir):
    _, db = library
    emulator.faults(preset="none")
    killed = batch(emulator, db, runs_dir, "NAME=k", env={"OBJBATCH_KILL_AT": "after-create"})
    assert killed.returncode != 0 and len(jobs(emulator)) == 1
    sent = query(db, "SELECT file_path FROM objbatch_claims WHERE run_name = 'k' AND custom_id IS NOT NULL "
                     "ORDER BY file_path")
    changed = sent[0][0]
    with open(changed, "a", encoding="utf-8") as handle:
        handle.write("\nA paragraph added after the request was sent.\n")
    shutil.rmtree(runs_dir / "k")
    again = batch(emulator, db, runs_dir, "NAME=k")
    assert again.returncode == 0, again.stderr
    assert len(jobs(emulator)) == 1, "the run paid twice"
    assert "not in the manifest" not in again.stderr
    assert re.search(r"job \S+ found in the service's job list", again.stderr), again.stderr
    after = rows(db)
    assert after[changed]["ai_metadata_status"] == "pending"
    assert "changed" in after[changed]["error_message"]
    assert attempts(db) == 0
    others = [p for (p,) in sent[1:]]
    assert all(after[p]["ai_metadata_status"] in ("extracted", "needs_review") for p in others)
    results = query(db, "SELECT COUNT(*) FROM objbatch_applied WHERE result_key LIKE ?", jobs(emulator)[0]["id"] + "/%")
    assert results == [(len(sent),)]  # every paid result was judged, the changed file's too (its tokens counted)
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'k'") == [("applied",)] and claimed(db) == 0
    cached = {e.get("custom_id") for e in map(json.loads, (runs_dir / "k" / "manifest.jsonl").read_text().splitlines())}
    assert set(jobs(emulator)[0]["custom_ids"]) <= cached  # the folder's manifest is rebuilt from the ledger


# ---------------------------------------------------------------- item 4

def test_the_budget_holds_when_a_frozen_run_without_a_job_is_resumed(emulator, library, runs_dir):
    _, db = library
    frozen_without_a_job(emulator, db, runs_dir, "b1")
    estimate = run("batch-run", "--estimate", f"DB={db}", f"RUNS={runs_dir}", "BUDGET=0.0001", env=emulator.env)
    assert estimate.returncode == 1 and "would refuse" in estimate.stderr, estimate.stderr
    refused = batch_run(emulator, db, runs_dir, "BUDGET=0.0001")
    assert refused.returncode == 1 and "over the budget" in refused.stderr, refused.stderr
    assert jobs(emulator) == [] and claimed(db) == 0 and attempts(db) == 0


# ---------------------------------------------------------------- item 7

def test_decisions_applied_by_hand_without_run_still_let_the_run_finish(emulator, library, runs_dir):
    _, db = library
    emulator.faults(preset="none")
    killed = batch(emulator, db, runs_dir, "NAME=h", env={"OBJBATCH_KILL_AT": "apply-midway:1"})
    assert killed.returncode != 0 and claimed(db) > 0
    by_hand = run("apply-sql", "--db", db, runs_dir / "h" / "decisions.jsonl")
    assert by_hand.returncode == 0, by_hand.stderr
    again = batch(emulator, db, runs_dir)  # resumes h
    assert again.returncode == 0, again.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'h'") == [("applied",)]
    assert claimed(db) == 0 and len(jobs(emulator)) == 1


# ---------------------------------------------------------------- item 11

@pytest.mark.parametrize("status", ["FAILED", "TIMEOUT_EXCEEDED"])
def test_requests_that_never_ran_cost_no_attempt(emulator, library, runs_dir, status):
    _, db = library
    emulator.faults(preset="none", job_status=status, partial=0.5)
    assert batch(emulator, db, runs_dir, "NAME=one").returncode == 0
    after = rows(db)
    lost = [p for p, r in after.items() if r["error_message"] and f"job ended {status}" in r["error_message"]]
    assert lost and all(after[p]["ai_metadata_status"] == "pending" for p in lost)
    assert attempts(db) == 0
    emulator.faults(job_status="SUCCESS", partial=0)
    assert batch(emulator, db, runs_dir, "NAME=two").returncode == 0
    assert len(jobs(emulator)[1]["custom_ids"]) == len(lost)
    assert all(rows(db)[p]["ai_metadata_status"] in ("extracted", "needs_review") for p in lost)


# ---------------------------------------------------------------- item 13

def test_the_budget_refusal_advice_works_as_given_and_shows_the_figures(emulator, library, runs_dir):
    _, db = library
    emulator.faults(preset="none")
    refused = batch(emulator, db, runs_dir, "BUDGET=0.00001", "NAME=b1")
    assert refused.returncode != 0 and jobs(emulator) == [] and claimed(db) == 0
    assert "$0.0000 " not in refused.stderr and "$0.00001" in refused.stderr, refused.stderr
    advice = re.search(r"make batch (.*BUDGET=(\S+).*NAME=b1)", refused.stderr)
    assert advice, refused.stderr
    again = batch(emulator, db, runs_dir, f"BUDGET={advice.group(2)}", "NAME=b1")
    assert again.returncode == 0, again.stderr
    assert len(jobs(emulator)) == 1
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'b1'") == [("applied",)]


# ---------------------------------------------------------------- a way out always exists

def left_at(emu, db, runs, where) -> None:
    """Leave run w unfinished at `where`: killed at a kill point, or stuck without a job."""
    if where == "no job (creation refused)":
        frozen_without_a_job(emu, db, runs, "w")
        return
    if where == "job running":
        emu.pace(seconds_per_request=0.5, max_run_seconds=60, queue_seconds=0.1)
        stopped = make(f"{runs}/w/job.json", f"DB={db}", f"RUNS={runs}", "NAME=w", env=emu.env)
        assert stopped.returncode == 0, stopped.stderr
        return
    killed = batch(emu, db, runs, "NAME=w", env={"OBJBATCH_KILL_AT": where, "OBJBATCH_INLINE_MAX_REQUESTS": "5"})
    assert killed.returncode != 0 and "Killed" in killed.stderr, killed.stderr


@pytest.mark.parametrize("where", ["after-claim", "build-line:3", "after-upload", "after-create",
                                   "no job (creation refused)", "job running", "after-download", "apply-midway:3"])
def test_make_cancel_ends_an_unfinished_run_in_any_state_and_the_next_batch_proceeds(emulator, library, runs_dir,
                                                                                      where):
    _, db = library
    emulator.faults(preset="none")
    left_at(emulator, db, runs_dir, where)
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'w'")[0][0] not in ("applied", "cancelled")
    created = len(jobs(emulator))
    cancelled = make("cancel", f"DB={db}", f"RUNS={runs_dir}", "POLL=0.1", env=emulator.env)
    assert cancelled.returncode == 0, cancelled.stderr
    ended = query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'w'")[0][0]
    assert ended == "cancelled" or (ended == "applied" and "had already ended" in cancelled.stderr), ended
    assert claimed(db) == 0 and len(jobs(emulator)) == created  # a cancel never creates a job
    emulator.pace(seconds_per_request=0.001, max_run_seconds=1)
    after = batch(emulator, db, runs_dir, "NAME=next")
    assert after.returncode == 0, after.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'next'") in ([("applied",)], [])
    assert claimed(db) == 0


# ---------------------------------------------------------------- what was sent belongs to the ledger

def test_the_ledger_records_the_request_lines_actually_sent_when_a_frozen_run_is_resumed_with_others(
        emulator, library, runs_dir):
    import hashlib

    _, db = library
    frozen_without_a_job(emulator, db, runs_dir, "d")
    requests = runs_dir / "d" / "requests.jsonl"
    lines = requests.read_text().splitlines()
    first = json.loads(lines[0])
    first["body"]["messages"][0]["content"] += " Answer in JSON only."  # same file and content, another request
    lines[0] = json.dumps(first, ensure_ascii=False, separators=(",", ":"))
    requests.write_text("\n".join(lines) + "\n")
    resumed = batch_run(emulator, db, runs_dir, "NAME=d")
    assert resumed.returncode == 0, resumed.stderr
    assert len(jobs(emulator)) == 1
    recorded = dict(query(db, "SELECT custom_id, request_digest FROM objbatch_claims WHERE run_name = 'd' "
                              "AND custom_id IS NOT NULL"))
    sent = {json.loads(line)["custom_id"]: hashlib.blake2b((line + "\n").encode(), digest_size=16).hexdigest()
            for line in lines}
    assert recorded == sent


# ---------------------------------------------------------------- a job the service no longer knows

def run_with_a_job_in_flight(emu, db, runs, parts: int = 1) -> list[str]:
    """Run w has its job(s) at the service, still running; their ids."""
    emu.faults(preset="none")
    emu.pace(queue_seconds=0, hold_at=0)  # RUNNING, nothing done, until released (never a 5 s run that ends)
    split = {"OBJBATCH_MAX_REQUESTS_PER_JOB": str(-(-25 // parts))} if parts > 1 else {}
    left = batch(emu, db, runs, "NAME=w", "TIMEOUT=0.3", env=split)
    assert "still running" in left.stderr and "Error 75" in left.stderr, left.stderr
    ids = [j["id"] for j in jobs(emu)]
    assert len(ids) == parts
    return ids


def test_a_run_whose_jobs_the_service_lost_says_so_and_cancel_forget_ends_it(emulator, library, runs_dir):
    _, db = library
    before = statuses(db)
    [job_id] = run_with_a_job_in_flight(emulator, db, runs_dir)
    emulator.stop()
    shutil.rmtree(emulator.state_dir)  # the service lost everything it knew
    emulator.start()
    for stuck in (batch(emulator, db, runs_dir), make("cancel", f"DB={db}", env=emulator.env),
                  make("cron", f"DB={db}", f"RUNS={runs_dir}", env=emulator.env)):
        assert stuck.returncode != 0 and "Error 75" not in stuck.stderr, stuck.stderr  # a failure, not "later"
        assert f"does not know job {job_id} (HTTP 404)" in stuck.stderr and "FORGET=1" in stuck.stderr, stuck.stderr
        assert "Traceback" not in stuck.stderr
    assert query(db, "SELECT state FROM objbatch_runs") == [("submitted",)] and claimed(db) > 0
    typo = make("cancel", f"DB={db}", "FORGET=yes", env=emulator.env)
    assert typo.returncode == 2 and "FORGET is 1" in typo.stderr, typo.stderr
    forgotten = make("cancel", f"DB={db}", "FORGET=1", env=emulator.env)
    assert forgotten.returncode == 0, forgotten.stderr
    assert "back in the queue, no attempt spent" in forgotten.stderr
    assert query(db, "SELECT state, end_reason FROM objbatch_runs") == [("cancelled", "jobs_unknown")]
    assert claimed(db) == 0 and attempts(db) == 0 and statuses(db) == before
    assert jobs(emulator) == []  # forgetting created nothing and cancelled nothing
    emulator.pace(seconds_per_request=0.001, max_run_seconds=1)
    again = batch(emulator, db, runs_dir, "NAME=after")
    assert again.returncode == 0, again.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'after'") == [("applied",)]
    assert "pending" not in statuses(db).values()


def test_cancel_forget_changes_nothing_while_the_service_still_knows_a_job_of_the_run(emulator, library, runs_dir):
    _, db = library
    first, second = run_with_a_job_in_flight(emulator, db, runs_dir, parts=2)
    emulator.stop()
    state = emulator.state_dir / "state.json"
    saved = json.loads(state.read_text())
    del saved["jobs"][second]  # the service lost one of the run's two jobs
    state.write_text(json.dumps(saved))
    emulator.start()
    mixed = make("cancel", f"DB={db}", "FORGET=1", env=emulator.env)
    assert mixed.returncode != 0, mixed.stderr
    assert f"knows job(s) {first} but not {second}" in mixed.stderr, mixed.stderr
    assert query(db, "SELECT state FROM objbatch_runs") == [("submitted",)] and claimed(db) > 0
    assert emulator.record()["cancels"] == []
    assert [j.status for j in emulator.sdk().batch.jobs.list().data] == ["RUNNING"]


def test_cancel_forget_forgets_nothing_when_what_answers_404_at_the_url_is_not_the_batch_api(emulator, library,
                                                                                              runs_dir):
    """Another web server at the service's URL (a proxy's error page, another program on the port) answers 404
    to everything: that must not pass for a lost job, whose run goes on (and is paid) at the real service."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    _, db = library
    [job_id] = run_with_a_job_in_flight(emulator, db, runs_dir)
    emulator.stop()
    other = http.server.ThreadingHTTPServer(("127.0.0.1", emulator.port), NotFound)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        refused = make("cancel", f"DB={db}", "FORGET=1", env=emulator.env)
    finally:
        other.shutdown()
        other.server_close()
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "job list failed: HTTP 404" in refused.stderr, refused.stderr
    assert query(db, "SELECT state, end_reason FROM objbatch_runs") == [("submitted", None)] and claimed(db) > 0
    emulator.start()
    assert [j["id"] for j in jobs(emulator)] == [job_id]


def test_cancel_forget_forgets_nothing_while_the_job_list_shows_a_job_of_the_run(emulator, library, runs_dir):
    """The service answers 404 for the recorded job id, yet lists a job of the run (the ledger's id is not the
    service's): the run is not forgotten."""
    _, db = library
    [job_id] = run_with_a_job_in_flight(emulator, db, runs_dir)
    emulator.stop()
    state = emulator.state_dir / "state.json"
    saved = json.loads(state.read_text())
    saved["jobs"]["someone-else-" + job_id] = saved["jobs"].pop(job_id)
    saved["jobs"]["someone-else-" + job_id]["id"] = "someone-else-" + job_id
    state.write_text(json.dumps(saved))
    ids = emulator.state_dir / "files"
    (ids / f"{job_id}.ids.json").rename(ids / f"someone-else-{job_id}.ids.json")
    emulator.start()
    refused = make("cancel", f"DB={db}", "FORGET=1", env=emulator.env)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "someone-else-" + job_id in refused.stderr, refused.stderr
    assert query(db, "SELECT state, end_reason FROM objbatch_runs") == [("submitted", None)] and claimed(db) > 0


@pytest.mark.parametrize("then", ["batch", "cancel"])
def test_results_downloaded_before_the_service_lost_their_job_are_applied_not_paid_again(emulator, library,
                                                                                          runs_dir, then):
    _, db = library
    emulator.faults(preset="none")
    killed = batch(emulator, db, runs_dir, "NAME=b", env={"OBJBATCH_KILL_AT": "after-download"})
    assert "Killed" in killed.stderr and list((runs_dir / "b" / "raw").glob("*.jsonl")), killed.stderr
    emulator.stop()
    shutil.rmtree(emulator.state_dir)  # the service lost the job after its results were kept
    emulator.start()
    args = ("cancel", f"DB={db}", f"RUNS={runs_dir}", "POLL=0.1") if then == "cancel" else ()
    ended = make(*args, env=emulator.env) if args else batch(emulator, db, runs_dir)
    assert ended.returncode == 0, ended.stderr
    assert "HTTP 404" not in ended.stderr and "FORGET" not in ended.stderr
    assert query(db, "SELECT state FROM objbatch_runs WHERE run_name = 'b'")[0][0] in ("applied", "cancelled")
    assert claimed(db) == 0 and jobs(emulator) == []  # nothing sent again
    assert "pending" not in statuses(db).values() and "extracted" in statuses(db).values()
