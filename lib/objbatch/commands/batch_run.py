"""batch-run: one run of the pipeline, as `make batch` does it, with exit codes scripts can trust.

    batch-run [VAR=VALUE ...]        the same variables as make batch (make help lists them)

1. The variables are resolved by the Makefile (its defaults; an unknown variable is refused, exit 2).
2. The database is checked (it exists, it has every column objbatch writes) and given its identity.
3. The run: NAME, or the oldest unfinished run in the database's ledger, or a new one. A finished run is
   finished (nothing happens); a run of another database, or a run folder holding another database's
   run, is refused naming both.
4. Before anything is claimed: the API key is usable and the service answers (a dead URL fails within
   seconds).
5. The run's lock is taken (another process working on it is waited for). make says which stages are due
   for $(RUNS)/NAME/applied.json (make -n: what is missing or stale, with every stage's arguments), and
   batch-run runs those stage commands in its own process (one Python, the SDK loaded once), each checked
   against the pipeline contract (pipeline.py: anything else is refused); each rebuilds from the ledger
   what its folder lacks.

Exit 0: done (or nothing to do); 75: a job is still running (rerun later: nothing is lost); 1: something
needs attention (the stage said what); 2: a usage error. make itself can only exit 0 or 2: scripts and
cron that need the difference call batch-run (or batch-cron).
"""

from __future__ import annotations

import re
import signal
import sys

import click

from .. import defaults
from ..batch import batch, estimate
from ..common import NOT_FINISHED, ROOT, SERVICE_ENV, cli


@cli("batch-run MAX=116", "batch-run NAME=run-20261129-0800 POLL=60", "batch-run --estimate MAX=500",
     env=(*SERVICE_ENV, "OBJBATCH_MIN_POLL"), exits=NOT_FINISHED,
     ignore_unknown_options=True)
@click.argument("assignments", nargs=-1, metavar="[VAR=VALUE]...")
@click.option("--no-wait", is_flag=True, help="If another process holds the run, exit 75 at once instead of waiting.")
@click.option("--estimate", "only_estimate", is_flag=True,
              help="Only say what make batch would do and what it would cost (make estimate); pays nothing.")
@click.option("--keep-remote", is_flag=True,
              help="Keep the run's files at the service once it is applied (KEEP_REMOTE=1); by default its "
                   "uploaded requests and result files are deleted there after apply.")
def main(assignments: tuple[str, ...], no_wait: bool, only_estimate: bool, keep_remote: bool) -> None:
    """Run the pipeline once, as make batch does, and exit 0 (done), 75 (still running), 1 or 2."""
    if keep_remote:
        assignments = (*assignments, "KEEP_REMOTE=1")
    code = estimate(list(assignments)) if only_estimate else batch(list(assignments), wait_for_lock=not no_wait)
    # The run is over and said so: a Ctrl-C now could only break Python's own exit (a traceback from an
    # atexit callback after the summary; make simulate SEED=105).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def shown(default: str) -> str:
    """A Makefile default as make help shows it: $(DEFAULT_POLL) is defaults.mk's value."""
    return re.sub(r"\$\((DEFAULT_[A-Z_]+)\)", lambda match: defaults.LINES[match.group(1)], default)


def variables_help() -> str:
    """The VAR=VALUE variables, as the Makefile declares them (its ## comments): batch-run --help lists them."""
    try:
        text = (ROOT / "Makefile").read_text(encoding="utf-8")
    except OSError:
        return ""
    found = [(name, shown(default), meaning)
             for name, default, meaning in re.findall(r"^([A-Z_]+) = ?([^#\n]*)## (.*)$", text, re.M)]
    width = max((len(name) + len(default.strip()) + 1 for name, default, _ in found), default=0)
    return "\n\n\b\nVariables (VAR=VALUE, as for make batch; make help lists them too):\n" + "\n".join(
        f"  {name + '=' + default.strip():<{width}}  {meaning}" for name, default, meaning in found)


main.help = (main.help or "") + variables_help()


if __name__ == "__main__":
    main()
