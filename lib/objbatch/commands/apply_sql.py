"""apply-sql: write decisions into the library database, all in one transaction.

Never touches approved or deleted rows. A file whose content changed since it was sent (in the database
or on disk) goes back to pending. A paid result for content the database still holds is stored even if the
file cannot be read right now (unmounted disk, permissions): it is never thrown away. Each result is
applied once (keyed by job and custom_id), so applying the same decisions twice leaves the database as
applying them once. With --run, the run must be one of this database's, and it ends finished; without it,
each result is recorded for the run whose job returned it (so that run can still finish). A result is
judged against what its run's ledger recorded as sent.
"""

from __future__ import annotations

import json
from typing import IO

import click

from .. import ledger, runs
from ..applier import Applier, read_decisions
from ..common import Failure, atomic_output, check_run_name, cli, kill_point, log
from ..options import db_option, output_option, run_option


@cli("apply-sql --db data/library.db decisions.jsonl -o applied.json",
     "validate --manifest manifest.jsonl results.jsonl | apply-sql --db data/library.db")
@click.argument("decisions", type=click.File("r", encoding="utf-8"), default="-")
@db_option()
@run_option(help="The run these decisions finish (one of this database's): it ends finished, its files released. "
                   "Without it, each result still counts for the run whose job returned it.")
@output_option(help="Also write a JSON summary here (atomically).", default=None)
def main(decisions: IO[str], db: str, run_name: str | None, output: str | None) -> None:
    """Apply DECISIONS (validate's JSONL; - for stdin) to the library database in one transaction."""
    if run_name:
        check_run_name(run_name)
    applied = 0
    with ledger.opened(db) as conn:
        applier = Applier(conn, run_name)
        with ledger.transaction(conn):
            run = runs.require(conn, run_name) if run_name else None
            for decision in read_decisions(decisions):
                applier.apply(decision)
                applied += 1
                kill_point("apply-midway")  # the crash tests' ':N' picks the decision
            applier.finish()
            undecided = runs.undecided(conn, run.name) if run and not run.finished else 0
            if run and not run.finished and not undecided:
                applier.counts["claims released"] = runs.finish(conn, run.name, dict(applier.counts))
    log("apply-sql: " + (", ".join(f"{n} {k}" for k, n in sorted(applier.counts.items())) or "nothing to apply"))
    if undecided:  # no summary file: to make, the run is not applied
        raise Failure(f"run {run_name} is not finished: {undecided} of its files have no result yet (its own "
                      f"decisions, from all its jobs, finish it: make batch NAME={run_name})")
    if output:
        with atomic_output(output) as out:
            out.write(json.dumps({"run": run_name, "decisions": applied, "outcomes": applier.counts}) + "\n")


if __name__ == "__main__":
    main()
