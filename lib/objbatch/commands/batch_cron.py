"""batch-cron: advance the work one step and exit, for cron (`make cron`).

1. Collect: every unfinished run in the database's ledger (whether or not its folder exists) is taken
   one stage further by batch-run with a single status check instead of a long wait: a finished job is
   fetched, validated and applied. A run another process is working on is left to it.
2. Submit: if fewer than --max-in-flight runs are still in flight and nothing failed, start a new run
   (which submits and checks once).
Each action is one line, appended to cron.log in the runs folder (and printed when run on a terminal);
otherwise quiet unless something needs attention. Exit 0: nothing in flight; 75: jobs still running
(normal, come back later); 1: a run needs attention (its output is printed). A lock keeps two cron runs
from overlapping.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click

from .. import defaults, ledger, runs
from ..common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    SERVICE_ENV,
    Failure,
    append_private,
    cli,
    count,
    file_lock,
    log,
    printable,
    private_folder,
    scrub,
)
from ..make_vars import check_settings, resolve
from ..options import IN_FLIGHT, db_option

OWN = {"DB": "it conflicts with --db; give the database with --db only",
       "RUNS": "it conflicts with --runs; give the runs folder with --runs only",
       "NAME": "batch-cron names its runs itself; leave NAME out",
       "MAX_IN_FLIGHT": "it conflicts with --max-in-flight; give the cap with --max-in-flight only"}


def check(settings: tuple[str, ...], base: list[str]) -> None:
    """The --set variables are make variables with good values, and none that batch-cron sets itself,
    before any lock, log line or run."""
    for setting in settings:
        name = setting.split("=", 1)[0]
        if name in OWN:
            raise Failure(f"--set {setting}: {OWN[name]}", EXIT_USAGE)
    check_settings(resolve([*base, *settings]))


def batch_run(settings: list[str]) -> tuple[int, str]:
    """One batch-run (exit status, everything it printed)."""
    start = "from objbatch import launch; launch.batch_run.start(prog_name='batch-run')"  # as the console script
    proc = subprocess.run([sys.executable, "-c", start,
                           "--no-wait", *settings], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def describe(conn: ledger.Library, name: str, code: int, printed: str) -> str:
    """What one batch-run did, in one line, from the ledger (the authority) and its exit status."""
    run = runs.get(conn, name)
    if code == EXIT_OK:
        if run is None:
            return "nothing pending: no new run"
        counts = ", ".join(f"{n} {k}" for k, n in sorted(ledger.load_json(
            conn.execute("SELECT counts_json FROM objbatch_runs WHERE run_name = ?", (name,)).fetchone()[0],
            {}).items()) if k != "claims released")
        return f"run {name} {run.state}: {counts or 'nothing to apply'}"
    if code == EXIT_TEMPFAIL:
        jobs = conn.execute("SELECT job_id, status, completed_requests, total_requests FROM objbatch_jobs "
                            "WHERE run_name = ?", (name,)).fetchall()
        progress = ", ".join(f"job {j[0]} {j[1]} {j[2] or 0}/{j[3] or 0}" for j in jobs)
        return f"run {name} still running: {progress or 'being worked on by another process'}"
    last = (printed.strip().splitlines() or ["no output"])[-1]
    return f"{'run ' + name if run else 'no new run: it'} needs attention: {last}"


def note(runs_dir: Path, line: str) -> None:
    """One action: appended to the runs folder's cron.log, and shown when a person is watching."""
    stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}"
    append_private(runs_dir / "cron.log", printable(scrub(stamped)) + "\n")
    if sys.stderr.isatty():
        log(f"batch-cron: {line}")


@cli("batch-cron --db data/library.db --runs runs --set MAX=200 --set BUDGET=5",
     "*/10 * * * *  cd ~/objbatch && bin/batch-cron --db data/library.db    # crontab: cron.log says what happened",
     env=(*SERVICE_ENV, "OBJBATCH_MIN_POLL"),
     exits={EXIT_TEMPFAIL: "a run is still in flight (or another batch-cron is working); nothing is wrong"})
@db_option()
@click.option("--runs", "runs_folder", default=defaults.RUNS, show_default=True, help="The runs folder (make's RUNS).")
@click.option("--max-in-flight", default=defaults.MAX_IN_FLIGHT, show_default=True, type=IN_FLIGHT,
              help="Start a new run only while fewer runs than this are in flight.")
@click.option("--set", "settings", multiple=True, metavar="VAR=VALUE",
              help="Make variables for the runs, e.g. --set MAX=200 --set BUDGET=5 (a cap on each run's estimate).")
def main(db: str, runs_folder: str, max_in_flight: int, settings: tuple[str, ...]) -> None:
    """Collect finished jobs, then submit a new batch if there is room; never blocks for long."""
    runs_dir = Path(runs_folder).resolve()
    base = [f"DB={Path(db).resolve()}", f"RUNS={runs_dir}", *settings, "TIMEOUT=0", "POLL=0"]
    check(settings, base[:2])
    base.append(f"MAX_IN_FLIGHT={max_in_flight}")  # the cap is the database's: select-pending checks it as it claims
    private_folder(runs_dir, "runs folder", link_ok=True)
    with file_lock(runs_dir / ".cron.lock", wait=False) as locked:
        if not locked:
            note(runs_dir, "another cron run is still working: nothing done")
            sys.exit(EXIT_TEMPFAIL)  # quietly come back later
        with ledger.opened(db) as conn:
            for warning in runs.unfetched_warnings(conn):  # said on stderr too, so cron mails it; then collected
                note(runs_dir, f"warning: {warning}")
                if not sys.stderr.isatty():
                    log(f"batch-cron: warning: {warning}")
            names = [run.name for run in runs.unfinished(conn)]
            outcomes = {}
            for name in names:
                outcomes[name] = batch_run([*base, f"NAME={name}"])
                note(runs_dir, describe(conn, name, *outcomes[name]))
            in_flight = [name for name, (code, _) in outcomes.items() if code == EXIT_TEMPFAIL]
            if len(in_flight) < max_in_flight and all(code in (EXIT_OK, EXIT_TEMPFAIL) for code, _ in outcomes.values()):
                name = runs.new_name("cron")
                outcomes[name] = batch_run([*base, f"NAME={name}"])
                flying = runs.unfinished(conn) if runs.get(conn, name) is None else []
                note(runs_dir, f"no new run: {count(len(flying), 'run')} in flight and the cap is "
                     f"{max_in_flight}" if len(flying) >= max_in_flight else describe(conn, name, *outcomes[name]))
                in_flight += [name] if outcomes[name][0] == EXIT_TEMPFAIL or len(flying) >= max_in_flight else []
    failed = {name: output for name, (code, output) in outcomes.items() if code not in (EXIT_OK, EXIT_TEMPFAIL)}
    for name, output in failed.items():
        log(f"batch-cron: run {name} needs attention:\n{output.rstrip()}")
    sys.exit(EXIT_FAILED if failed else EXIT_TEMPFAIL if in_flight else EXIT_OK)


if __name__ == "__main__":
    main()
