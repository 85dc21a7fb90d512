"""validate: one decision per fetched result (extracted, needs_review or failed_validation, with reasons),
plus a skipped decision for every file the manifest says was not sent.

The rules are data: schemas/metadata.schema.json (hard) and schemas/soft-rules.json (soft, repairs,
weights, threshold). See README "Decisions and confidence".
"""

from __future__ import annotations

from typing import IO

import click

from .. import metadata
from ..common import EXIT_USAGE, Failure, atomic_output, cli, log, write_jsonl
from ..decisions import Manifest, decisions, sent_manifest
from ..options import FRACTION, db_option, output_option, run_option


@cli("validate results.jsonl --manifest manifest.jsonl -o decisions.jsonl",
     "validate --threshold 0.8 --manifest manifest.jsonl results.jsonl | jq -r 'select(.decision != \"extracted\") "
     "| .file_path'")
@click.argument("results", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="build-jsonl's manifest: links results to files and adds the skipped files.")
@db_option(default=None, help="With --run: judge against what the run's ledger in this database says was sent (the "
                   "authority; --manifest is then only used for a run that sent nothing).")
@run_option(help="With --db: the run whose results these are.")
@click.option("--threshold", type=FRACTION, default=None,
              help="Confidence below which a valid answer needs review (default from schemas/soft-rules.json).")
@output_option(help="Write decisions here (atomically) instead of stdout.")
def main(results: IO[str], manifest: str | None, db: str | None, run_name: str | None, threshold: float | None,
         output: str) -> None:
    """Decide each result in RESULTS (batch-fetch's JSONL; - for stdin)."""
    if bool(db) != bool(run_name):
        raise Failure("give --db and --run together (the run's ledger), or neither", EXIT_USAGE)
    threshold = metadata.soft_rules()["threshold"] if threshold is None else threshold
    counts: dict[str, int] = {}
    with sent_manifest(db, run_name, manifest) as path, atomic_output(output) as out:
        write_jsonl(decisions(results, Manifest(path), threshold, counts), out)
    log("validate: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) if counts else "validate: no results")


if __name__ == "__main__":
    main()
