"""One run of the pipeline, as `make batch` does it: which run (NAME, the oldest unfinished one, or a new
one), the database and the run folder checked, the key and the service checked before anything is claimed,
the run's lease taken, make's due stages run (pipeline.py), then the summary and what to do next. And the
estimate of what make batch would do now (make estimate), which pays nothing."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import click

from . import client, config, costs, ledger, overview, pipeline, remote, requests, runs, selection, sources
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    ROOT,
    Failure,
    atomic_write_json,
    count,
    log,
    printable,
    printable_values,
    private_folder,
)
from .make_vars import check_settings, resolve

STAGE_FILES = ("select.jsonl", "requests.jsonl", "manifest.jsonl", "job.json", "wait.jsonl", "results.jsonl",
               "decisions.jsonl", "applied.json")


class Plan:
    """Which run this invocation works on, and what is known of it."""

    def __init__(self, conn: ledger.Library, settings: dict[str, str], announce: bool = True):
        self.conn, self.settings, self.announce = conn, settings, announce
        self.runs_dir = Path(settings["RUNS"])
        self.name = settings.get("NAME", "")
        self.resumed = False
        if not self.name:
            self.name = self._unfinished_or_new()
        self.folder = self.runs_dir / self.name

    def _unfinished_or_new(self) -> str:
        open_runs = runs.unfinished(self.conn)
        if open_runs:
            others = f" ({len(open_runs) - 1} more unfinished after it)" if len(open_runs) > 1 else ""
            if self.announce:
                log(f"Resuming unfinished run {open_runs[0].name}{others} (make cancel NAME={open_runs[0].name} "
                    "drops it).")
            self.resumed = True
            return open_runs[0].name
        return runs.new_name("run")

    @property
    def run(self) -> runs.Run | None:
        return runs.belonging(self.conn, self.name)

    def check_folder(self) -> None:
        """The folder is a cache of this database's run: one holding another database's run, or stage
        files of a run this database does not know (an older copy of it), is not used."""
        info = self.folder / "run.json"
        if info.exists():
            owner = ledger.load_json(info.read_text(), {})
            if owner.get("library_id") and owner["library_id"] != self.conn.library_id and \
                    owner.get("db_path") == self.conn.path:  # the same path, another database: replaced, rebuilt
                raise Failure(f"{self.folder} holds run {self.name} of another database that was at {self.conn.path} "
                              "before (it was replaced or rebuilt since); move the folder away or choose another NAME")
            if owner.get("library_id") and owner["library_id"] != self.conn.library_id:
                raise Failure(f"run {self.name} belongs to database {owner.get('db_path')}, not {self.conn.path}; "
                              f"resume it with DB={owner.get('db_path')}, or choose another NAME")
        if self.run is None and any(_nonempty(self.folder / f) for f in STAGE_FILES):
            raise Failure(f"{self.folder} holds files of a run database {self.conn.path} does not know (another "
                          "database's, or from before this database was restored); move it away or choose "
                          "another NAME")

    def anything_to_do(self) -> bool:
        if self.run is not None:
            return True
        s = self.settings
        first = selection.preview(self.conn, 1, int(s["MAX_ATTEMPTS"]), s["RETRY_EXHAUSTED"] == "1")
        return next(first, None) is not None and s.get("MAX") != "0"


def nothing_to_do(conn: ledger.Library, settings: dict[str, str]) -> str:
    if settings.get("MAX") == "0":
        return "MAX=0: nothing to do."
    held = runs.in_flight(conn)
    if not held:
        return "No pending files: nothing to do."
    return (f"No pending files: nothing to do ({sum(r['files'] for r in held)} files are held by unfinished runs: "
            + ", ".join(f"{r['run_name']}" + (f" of database {r['db_path']}" if r["db_path"] != conn.path else "")
                        for r in held) + ").")


def _nonempty(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def check_before_paying() -> None:
    """The key is usable and the service answers it, before anything is claimed."""
    config.api_key()
    with client.Service(before_paying=True) as service:
        service.check_access()


def stage_commands(plan: Plan, assignments: list[str]) -> list[pipeline.Stage]:
    """The stage commands make would run now to bring the run to applied.json, in order (make -n), each
    checked against the pipeline contract: make decides what is stale and holds every stage's arguments;
    batch-run only runs them."""
    runs_dir = for_make(plan.runs_dir)
    stages = pipeline.due(f"{runs_dir}/{plan.name}/applied.json", [*assignments, f"RUNS={runs_dir}",
                                                                    f"NAME={plan.name}"])
    inside = f"{runs_dir}/" if not os.path.isabs(runs_dir) else None
    for stage in stages:  # make ran in the project folder: its relative paths in RUNS are made absolute
        stage.argv = [str(ROOT / arg) if inside and arg.startswith(inside) else arg for arg in stage.argv]
    return stages


def for_make(path: Path) -> str:
    """The runs folder as make should see it: relative to the project when inside it (make cannot name a
    target whose path has a space, as a clone's folder may), else absolute."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_stages(plan: Plan, assignments: list[str]) -> int:
    for stage in stage_commands(plan, assignments):
        code = pipeline.run(stage)
        if code:
            return code
        if plan.run is None and stage.name == "select-pending":
            return EXIT_OK  # another run took the pending files first: this one has nothing to do
    return EXIT_OK


def estimate(assignments: list[str]) -> int:
    """What make batch would do now, and what it would cost; creates, uploads and claims nothing."""
    settings = resolve(assignments)
    check_settings(settings)
    absolute(settings, assignments)
    with ledger.opened(settings["DB"], read_only=True) as conn:
        plan = Plan(conn, settings, announce=False)
        run = plan.run
        if run is not None:
            if not run.finished:
                for_new_runs(run, settings, assignments)
            known = runs.estimate(conn, run.name)
            click.echo(f"make batch would {'do nothing: run' if run.finished else 'resume run'} {run.name} "
                       f"({run.state}); " + (f"its estimate was {costs.money(known.get('batch_usd'))} for "
                                             f"{known['requests']:,} requests" if known else "it has no estimate yet"))
            return resumed_over_budget(conn, run, known, settings)
        root = sources.library_root(conn, settings["DB"], settings.get("LIBRARY_ROOT"))
        figures = new_run_estimate(conn, settings, root[0])
    files = figures.requests + sum(figures.skipped.values())
    if not files:
        click.echo("make batch would do nothing: " + ("MAX=0." if settings.get("MAX") == "0" else "no pending files."))
        return EXIT_OK
    click.echo(f"make batch would start a new run with {count(files, 'file')}:")
    click.echo(figures.render())
    click.echo(printable(f"Library root:   {root[0]} (from {root[1]}); nothing outside it is read"))
    stale = costs.stale_note()
    if stale:
        log(f"make estimate: {stale}")
    refusal = costs.over_budget(figures, float(settings["BUDGET"]) if settings.get("BUDGET") else None)
    if refusal:
        log(f"make batch would refuse: {refusal}")
        return EXIT_FAILED
    return EXIT_OK


def resumed_over_budget(conn: ledger.Library, run: runs.Run, known: dict[str, Any] | None,
                        settings: dict[str, str]) -> int:
    """A resumed run that has no job yet is checked against BUDGET before its job is created, as a new one."""
    if run.finished or not settings.get("BUDGET") or not known or runs.has_jobs(conn, run.name):
        return EXIT_OK
    figures = costs.Estimate(model=known.get("model") or run.model or settings["MODEL"])
    figures.input_tokens, figures.requests = known.get("input_tokens", 0), known.get("requests", 0)
    figures.answer_tokens = known.get("answer_tokens_per_request", costs.DEFAULT_ANSWER_TOKENS)
    refusal = costs.over_budget(figures, float(settings["BUDGET"]))
    if refusal:
        log(f"make batch would refuse: {refusal}")
        return EXIT_FAILED
    return EXIT_OK


def new_run_estimate(conn: ledger.Library, settings: dict[str, str], root: str) -> costs.Estimate:
    """Build, in memory, every request a new run would send (reading files under `root` only)."""
    limit = int(settings["MAX"]) if settings.get("MAX") else None
    selected = selection.preview(conn, limit, int(settings["MAX_ATTEMPTS"]), settings["RETRY_EXHAUSTED"] == "1")
    sent = requests.would_send(selected, settings["MODEL"], root, settings.get("REASONING_EFFORT") or None)
    return costs.estimate(settings["MODEL"], sent, conn)


def absolute(settings: dict[str, str], assignments: list[str]) -> list[str]:
    """DB, RUNS and LIBRARY_ROOT as given are relative to where batch-run runs; make runs in the project folder."""
    for name in ("DB", "RUNS", "LIBRARY_ROOT"):
        if settings.get(name, "").strip():
            settings[name] = os.path.abspath(settings[name])
    root = [f"LIBRARY_ROOT={settings['LIBRARY_ROOT']}"] if settings.get("LIBRARY_ROOT", "").strip() else []
    return [*assignments, f"DB={settings['DB']}", f"RUNS={settings['RUNS']}", *root]


def batch(assignments: list[str], wait_for_lock: bool = True) -> int:
    settings = resolve(assignments)
    check_settings(settings)
    assignments = absolute(settings, assignments)
    with ledger.opened(settings["DB"]) as conn:
        plan = Plan(conn, settings)
        if plan.run and plan.run.finished:
            log(f"Run {plan.name} is finished ({plan.run.state} {plan.run.finished_at}); nothing to do. "
                "make batch without NAME starts a new run.")
            _clean_up_finished(conn, plan.name, settings)  # a crash between apply and cleanup is made good
            return EXIT_OK
        plan.check_folder()
        if plan.run:
            runs.check_service(plan.name, plan.run.server_url)
        if plan.run and not plan.run.finished:
            for_new_runs(plan.run, settings, assignments)
        if plan.run and plan.run.model and plan.run.model != settings["MODEL"]:
            settings["MODEL"] = plan.run.model
            assignments = [*assignments, f"MODEL={plan.run.model}"]
        if not plan.anything_to_do():
            log(nothing_to_do(conn, settings))
            return EXIT_OK
        if plan.run is None or not plan.run.frozen:
            check_before_paying()
        with runs.lease(conn, plan.name, wait=wait_for_lock, who="make batch") as got:
            if not got:
                log(f"Run {plan.name} is being worked on by another process; it is collected later.")
                return EXIT_TEMPFAIL
            return _locked(plan, assignments)


def for_new_runs(run: runs.Run, settings: dict[str, str], assignments: list[str]) -> None:
    """A resumed run keeps the files it claimed and the model it started with: a MAX or MODEL given now
    is for new runs, and said so."""
    given = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in assignments if "=" in a}
    if run.model and run.model != settings["MODEL"]:
        log(f"Run {run.name} uses model {run.model}; MODEL={settings['MODEL']} is for new runs.")
    if given.get("MAX"):
        log(f"Run {run.name} is resumed with the files it claimed; MAX={given['MAX']} is for new runs.")


def _locked(plan: Plan, assignments: list[str]) -> int:
    run = plan.run
    if run and run.finished:
        log(f"Run {plan.name} was finished by another process ({run.state}).")
        return EXIT_OK
    created = not os.path.lexists(plan.folder)
    private_folder(plan.runs_dir, "RUNS folder", link_ok=True)
    private_folder(plan.folder, "run folder")
    if os.path.lexists(plan.folder / "raw"):  # the downloads go there: a planted symlink is refused, not followed
        private_folder(plan.folder / "raw", "run's raw folder")
    if run is not None:  # applied.json is made once the ledger finished the run; this ledger has not (a
        (plan.folder / "applied.json").unlink(missing_ok=True)  # restored backup): make must apply again
    atomic_write_json(plan.folder / "run.json", {"run_name": plan.name, "library_id": plan.conn.library_id,
                                                 "db_path": plan.conn.path})
    code = run_stages(plan, assignments)
    run = plan.run
    if run is None:  # nothing was claimed, or the run was dropped before sending (over budget)
        _drop_cache(plan.folder, created)
        if code == 0:
            log("No pending files: nothing to do.")
    if code == 0:
        if run is not None:
            summary(plan, run, *remote.clean_up(plan.conn, run.name, plan.settings.get("KEEP_REMOTE") == "1"))
        return EXIT_OK
    return code if code in (EXIT_FAILED, EXIT_TEMPFAIL, EXIT_USAGE, 130) else EXIT_FAILED


def _clean_up_finished(conn: ledger.Library, name: str, settings: dict[str, str]) -> None:
    outcome, warnings = remote.clean_up(conn, name, settings.get("KEEP_REMOTE") == "1")
    if outcome:
        log(f"Run {name}'s files: {outcome}.")
    for warning in warnings:
        log(f"Warning: {warning}")


def _drop_cache(folder: Path, created: bool) -> None:
    """The folder of a run the ledger does not hold (any more) caches nothing: its stage files go (they
    would make the same NAME skip its stages), and the folder too if this invocation made it and only
    objbatch's files are in it. check_folder refused earlier if stage files were there before the run."""
    ours = set(STAGE_FILES) | {"run.json", "raw"}
    if created and folder.is_dir() and all(p.name in ours or p.name.startswith(".") for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in (*STAGE_FILES, "run.json"):
        (folder / name).unlink(missing_ok=True)


def summary(plan: Plan, run: runs.Run, remote_files: str | None = None, warnings: list[str] | None = None) -> None:
    figures = overview.gather(plan.conn, 3, int(plan.settings["MAX_ATTEMPTS"]))
    head = f"Run {run.name} {run.state}" + (f" (its files: {remote_files})" if remote_files else "") + ":"
    notes = "".join(f"{printable(f'Warning: {warning}')}\n" for warning in warnings or [])
    say(f"{printable(head)}\n{notes}{printable(overview.render(printable_values(figures)))}\n"
        f"{next_step(figures['statuses'])}")


def say(text: str) -> None:
    """The summary on stdout, for the person watching. A reader that went away (make batch | head) does not
    stop or fail a paid run: what it no longer reads goes to /dev/null."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a closed stdout: an error on write, not the end
    try:
        click.echo(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def next_step(statuses: dict[str, int]) -> str:
    """What a person does after a run."""
    review, failed = statuses.get("needs_review", 0), statuses.get("failed_validation", 0)
    if not review and not failed:
        return "Next: nothing needs review: make export writes the metadata, make report shows it all."
    parts = ([f"{review:,} need review"] if review else []) + (
        [f"{failed:,} failed validation (the next make batch retries them)"] if failed else [])
    return f"Next: {', '.join(parts)}: make review (or make report for the whole picture)."
