"""The make variables a run is given (`make batch MAX=5`, `batch-run MAX=5`, `batch-cron --set MAX=5`): the
Makefile resolves them (its defaults; an unknown one is refused there), and their values are checked
before any file or database is touched."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import click

from . import costs, defaults
from .common import EXIT_FAILED, EXIT_USAGE, ROOT, Failure, check_run_name
from .options import MAKE_NUMBERS

ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def make_env(**extra: str) -> dict[str, Any]:
    """The environment for a make of our own: without the outer make's flags and variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return {**env, "PWD": os.getcwd(), **extra}  # relative paths are relative to here (the Makefile reads PWD)


def resolve(assignments: list[str]) -> dict[str, str]:
    """Every make variable with the Makefile's defaults applied; make refuses unknown ones."""
    bad = [a for a in assignments if not ASSIGNMENT.match(a)]
    if bad:
        raise Failure(f"{bad[0]!r} is not VAR=VALUE; give make variables, e.g. batch-run MAX=100", EXIT_USAGE)
    output = make(["vars", *assignments], EXIT_USAGE)
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def make(args: list[str], code: int = EXIT_FAILED) -> str:
    """What make prints, run in the project folder (make -s -C ROOT ARGS); its error as one Failure line
    (make's "Makefile:12: *** unknown variable 'X' ... Stop." as "unknown variable 'X' ...")."""
    proc = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), *args],
                          capture_output=True, text=True, env=make_env())
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or [f"make {' '.join(args[:2])} exited {proc.returncode}"]
        raise Failure(re.sub(r"^.*?\*\*\* |\.\s+Stop\.$", "", lines[-1]), code)
    return proc.stdout


def check_settings(settings: dict[str, str]) -> None:
    """Numbers are numbers, the run name is safe and the model has a price, before any file or database
    is touched."""
    if settings.get("NAME"):
        check_run_name(settings["NAME"])
    for flag in ("RETRY_EXHAUSTED", "ALLOW_UNPRICED", "KEEP_REMOTE"):
        if settings.get(flag, "") not in ("", "0", "1"):
            raise Failure(f"{flag} is 1 (on) or empty or 0 (off), not {settings[flag]!r}", EXIT_USAGE)
    costs.check_model(settings["MODEL"], settings.get("ALLOW_UNPRICED") == "1")
    costs.check_effort(settings["MODEL"], settings.get("REASONING_EFFORT") or None)
    for name, kind in MAKE_NUMBERS.items():
        text = settings.get(name, "")
        try:
            if text or name in defaults.VALUES:  # empty means unset only where there is no default (MAX, BUDGET):
                kind.convert(text, None, None)   # the stages are given POLL= as --poll '' (after paying)
        except click.BadParameter:
            span = f"from {kind.min} to {kind.max}" if kind.max is not None else f"of at least {kind.min}"
            fix = f"; leave {name} out for its default, {defaults.VALUES[name]}" if not text else ""
            raise Failure(f"{name} must be a {'whole ' if kind.whole else ''}number {span} (got {text!r}){fix}",
                          EXIT_USAGE) from None


