"""estimate: what sending these request lines would cost, before anything is paid.

Counts the requests and their input tokens as they would be sent (prompt, schema and text), the files
build-jsonl skipped and why (from its manifest), the expected answer tokens (the average of this database's
past runs, or a stated default), and the cost at the model's batch price beside the synchronous one.
Creates nothing, uploads nothing, claims nothing. `make estimate` does this for what `make batch` would
send.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import IO, Iterable

import click

from .. import costs, kinds, ledger
from ..common import EXIT_FAILED, Failure, cli, log
from ..options import DOLLARS, db_option, model_option


def _requests(stream: IO[str]) -> Iterable[dict]:
    for lineno, request in kinds.read(stream, "request"):
        if not isinstance(request.get("body"), dict):
            raise Failure(f"request line {lineno} has no body; pipe build-jsonl's output")
        yield request


@cli("estimate requests.jsonl --manifest manifest.jsonl --db data/library.db",
     "build-jsonl select.jsonl --manifest m.jsonl | estimate --budget 5 --json",
     env=("OBJBATCH_MODEL",), exits={EXIT_FAILED: "failed, or the estimate is over --budget"})
@click.argument("requests", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--manifest", type=click.File("r", encoding="utf-8"), default=None,
              help="build-jsonl's manifest: adds the files it skipped, and why.")
@db_option(default=None, help="The library database: expected answer length from its past runs.")
@model_option(help="The model the run would use (batch-submit's --model).")
@click.option("--allow-unpriced", is_flag=True, help="Estimate tokens for a model without a price in schemas/prices.json.")
@click.option("--budget", type=DOLLARS, default=None, metavar="USD",
              help="Exit 1 if the estimate is over this many dollars.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def main(requests: IO[str], manifest: IO[str] | None, db: str | None, model: str, allow_unpriced: bool,
         budget: float | None, as_json: bool) -> None:
    """Estimate tokens and cost of REQUESTS (build-jsonl's lines; - for stdin) before paying."""
    costs.check_model(model, allow_unpriced)
    entries = (entry for _, entry in kinds.read(manifest, "manifest line")) if manifest else ()
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(ledger.opened(db, identity=False, read_only=True)) if db else None
        sent = itertools.chain(((request, None) for request in _requests(requests)), ((None, e) for e in entries))
        figures = costs.estimate(model, sent, conn)
    figures.skips_known = manifest is not None
    click.echo(json.dumps(figures.as_dict()) if as_json else figures.render())
    stale = costs.stale_note()
    if stale:
        log(f"estimate: {stale}")
    refusal = costs.over_budget(figures, budget)
    if refusal:
        raise Failure(f"{refusal}; nothing was sent", EXIT_FAILED)


if __name__ == "__main__":
    main()
