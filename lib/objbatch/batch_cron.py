"""batch-cron: advance the work one step and exit, for cron (`make cron`).

1. Collect: every unfinished run (selected, not applied) is taken one stage further through make, with a
   single status check instead of a long wait: a finished job is fetched, validated and applied.
2. Submit: if fewer than --max-in-flight runs are still in flight, start a new run (which submits and
   checks once).
Quiet unless something needs attention. Exit 0: nothing in flight; 75: jobs still running (normal, come
back later); 1: a stage failed (its output is printed). A lock keeps two cron runs from overlapping.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click

from .common import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, ROOT, command, file_lock, log

STILL_RUNNING = "Error 75"  # how make reports a stage that exited 75 (EX_TEMPFAIL)


def unfinished(runs: Path) -> list[str]:
    return sorted(d.name for d in runs.glob("*/") if (d / "select.jsonl").exists() and not (d / "applied.json").exists())


def make(target: str, settings: list[str]) -> tuple[str, str]:
    """Run one make target; ('done' | 'running' | 'failed', its output)."""
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), target, *settings, "TIMEOUT=0",
                           "POLL=0"], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return "done", output
    return ("running" if STILL_RUNNING in output else "failed"), output


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", default="data/library.db", show_default=True, help="The library database.")
@click.option("--runs", default="runs", show_default=True, help="The runs folder (make's RUNS).")
@click.option("--max-in-flight", default=1, show_default=True, type=click.IntRange(min=1),
              help="Start a new run only while fewer runs than this are in flight.")
@click.option("--set", "settings", multiple=True, metavar="VAR=VALUE",
              help="Extra make settings for new runs, e.g. --set MAX=200 --set MODEL=mistral-small-latest.")
@command
def main(db: str, runs: str, max_in_flight: int, settings: tuple[str, ...]) -> None:
    """Collect finished jobs, then submit a new batch if there is room; never blocks for long."""
    runs_dir = Path(runs).resolve()
    base = [f"DB={Path(db).resolve()}", f"RUNS={runs_dir}", *settings]
    with file_lock(runs_dir / ".cron.lock", wait=False) as locked:
        if not locked:
            sys.exit(EXIT_TEMPFAIL)  # another cron run is still working: quietly come back later
        states = {name: make(f"{runs_dir}/{name}/applied.json", [*base, f"NAME={name}"])
                  for name in unfinished(runs_dir)}
        in_flight = [name for name, (state, _) in states.items() if state == "running"]
        if len(in_flight) < max_in_flight and not any(state == "failed" for state, _ in states.values()):
            name = f"cron-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
            states[name] = make("batch", [*base, f"NAME={name}"])
            in_flight += [name] if states[name][0] == "running" else []
    failed = {name: output for name, (state, output) in states.items() if state == "failed"}
    for name, output in failed.items():
        log(f"batch-cron: run {name} needs attention:\n{output.rstrip()}")
    sys.exit(EXIT_FAILED if failed else EXIT_TEMPFAIL if in_flight else EXIT_OK)


if __name__ == "__main__":
    main()
