"""Where every console script starts (pyproject.toml: `select-pending = "objbatch.launch:select_pending"`).

A Ctrl-C while a command is still loading (Python importing click, the core and the command: a fraction of a
second, more on a busy machine) ends it with one line and exit 130, not a traceback. The handler is set
here, when a command starts, not when a module is imported: a test or a program importing objbatch keeps
its own handlers. The command's own handling replaces it once it runs (common.started)."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any


def _interrupted_while_starting(*_: object) -> None:
    sys.stderr.write("interrupted; rerun the same command to resume\n")
    os._exit(130)


def starting() -> None:
    signal.signal(signal.SIGINT, _interrupted_while_starting)


class Command:
    """The entry point of the command in objbatch/commands/<name>.py: loaded only when it is called."""

    def __init__(self, name: str) -> None:
        self.module = f"objbatch.commands.{name}"

    def command(self) -> Any:
        """The click command (objbatch.commands.<name>.main)."""
        return importlib.import_module(self.module).main

    def __call__(self) -> None:
        self.start()

    def start(self, prog_name: str | None = None) -> None:
        starting()
        self.command().main(prog_name=prog_name)


select_pending = Command("select_pending")
build_jsonl = Command("build_jsonl")
batch_submit = Command("batch_submit")
batch_wait = Command("batch_wait")
batch_fetch = Command("batch_fetch")
batch_run = Command("batch_run")
batch_cancel = Command("batch_cancel")
batch_cron = Command("batch_cron")
validate = Command("validate")
apply_sql = Command("apply_sql")
stats = Command("stats")
review = Command("review")
show = Command("show")
approve = Command("approve")
requeue = Command("requeue")
export_metadata = Command("export_metadata")
estimate = Command("estimate")
report = Command("report")
set_key = Command("set_key")
