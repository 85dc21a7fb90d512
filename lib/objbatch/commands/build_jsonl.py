"""build-jsonl: one batch request line per selected file, and a manifest line per file (sent or skipped).

Files that cannot be sent (not text, too big, missing, unreadable, not decodable) become skip records in the
manifest with the reason; one bad file never stops the run. It streams: one file in memory at a time.
"""

from __future__ import annotations

import os
from typing import IO

import click

from .. import costs, kinds, ledger, prompt, runs
from ..common import Failure, Number, atomic_output, check_run_name, cli, count, dumps, kill_point, log, write_jsonl
from ..options import db_option, model_option, output_option, run_option
from ..requests import build
from ..states import RunState


@cli("build-jsonl select.jsonl --manifest manifest.jsonl -o requests.jsonl",
     "select-pending --db data/library.db --max 5 | build-jsonl --manifest manifest.jsonl | estimate",
     env=("OBJBATCH_MODEL", "OBJBATCH_REASONING_EFFORT"))
@click.argument("selection", type=click.File("r", encoding="utf-8"), default="-")
@output_option(help="Write request lines here (atomically) instead of stdout.")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False),
              help="Write one line per file here: what was sent (custom_id, hashes) or why it was skipped.")
@model_option(help="Model named in each request body.")
@click.option("--text-tokens", default=prompt.DEFAULT_TEXT_TOKENS, show_default=True, type=Number(min=500, whole=True),
              help="Token budget for the transcript text; longer texts are excerpted.")
@click.option("--reasoning-effort", default=None, envvar="OBJBATCH_REASONING_EFFORT",
              help="reasoning_effort for a model that takes it (none, minimal, low, medium, high, xhigh); "
                   "unset by default: the model's own default.")
@db_option(default=None, help="With --run: the library database whose ledger holds the run.")
@run_option(help="The run being built: once it was submitted, its manifest comes from the ledger (what was "
                   "sent cannot change) and no requests are built.")
@click.option("--library-root", type=click.Path(file_okay=False), default=None,
              help="Read only files under this folder (symlinks resolved); a file outside is skipped with the "
                   "reason. Default: the library_root select-pending put in each line.")
def main(selection: IO[str], output: str, manifest: str, model: str, text_tokens: int,
         reasoning_effort: str | None, db: str | None, run_name: str | None, library_root: str | None) -> None:
    """Turn SELECTION (select-pending's JSONL; - for stdin) into batch request lines."""
    reasoning_effort = reasoning_effort or None
    costs.check_effort(model, reasoning_effort)
    if run_name and db and frozen_manifest(db, run_name, manifest, output):
        return
    config = prompt.config_hash(model, text_tokens, reasoning_effort)
    sent = skipped = 0
    seen: set[str] = set()
    with atomic_output(output) as out, atomic_output(manifest) as man:
        for lineno, record in kinds.read(selection, "selection"):
            if not isinstance(record["file_path"], str) or not record["file_path"]:
                raise Failure(f"selection line {lineno} has no file_path and filename; pipe select-pending's output")
            if library_root:
                record["library_root"] = os.path.realpath(library_root)
            elif not isinstance(record.get("library_root"), str) or not record["library_root"].startswith("/"):
                raise Failure(f"selection line {lineno} has no library_root (the folder files may be read from); "
                              "pipe select-pending's output, or give --library-root")
            if record["file_path"] in seen:
                continue
            seen.add(record["file_path"])
            request, entry = build(record, model, text_tokens, config, reasoning_effort)
            if request:
                out.write(dumps(request) + "\n")
                sent += 1
            else:
                skipped += 1
            man.write(dumps(entry) + "\n")
            kill_point("build-line")
    log(f"build-jsonl: {count(sent, 'request')}, {count(skipped, 'file')} skipped")


def frozen_manifest(db: str, run_name: str, manifest: str, output: str) -> bool:
    """For a run whose submission started, write its manifest from the ledger and no requests."""
    with ledger.opened(db) as conn:
        run = runs.belonging(conn, check_run_name(run_name))
        if run is None or not (run.finished or run.state == RunState.CANCELLING or runs.has_jobs(conn, run.name)):
            return False  # nothing reached the service yet: built (again) from the files
        entries = list(runs.manifest(conn, run_name))
    with atomic_output(manifest) as man:
        write_jsonl(entries, man)
    with atomic_output(output):
        pass
    log(f"build-jsonl: run {run_name} was already submitted; its manifest ({len(entries)} files) comes from the "
        "database ledger and no requests are built")
    return True


if __name__ == "__main__":
    main()
