"""with-emulator: run a command against a fresh local mistral-emulator, then stop it.

Sets MISTRAL_SERVER_URL to the emulator and MISTRAL_API_KEY to a local placeholder (a real key is never
sent to the emulator), runs the command, and exits with its exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import click

from . import __version__
from .cli import one_line_errors

LOCAL_KEY = "emulator-local-key"


@contextmanager
def running_emulator(state_dir: str, extra: list[str]) -> Iterator[str]:
    """Start the emulator on 127.0.0.1 (port 0) and yield its URL; stop it afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "mistral_emulator", "--host", "127.0.0.1", "--port", "0",
                             "--state-dir", state_dir, "--api-key", LOCAL_KEY, *extra], stdout=subprocess.PIPE,
                            text=True)
    try:
        first = (proc.stdout.readline() if proc.stdout else "").strip()
        if not first.startswith("export MISTRAL_SERVER_URL=http://"):
            raise click.ClickException(f"the emulator did not start (exit {proc.poll()}); run mistral-emulator by "
                                       "hand to see why")
        yield first.split("=", 1)[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True},
               epilog="""\b
Example:
  $ with-emulator --state-dir /tmp/emu --faults real -- bin/batch-run DB=demo/library.db

\b
Environment: none read; the command gets MISTRAL_SERVER_URL (the emulator) and MISTRAL_API_KEY (a local
placeholder), replacing any real key.

\b
Exit codes: the command's own; 1 if the emulator did not start or the command does not exist.""")
@click.option("--state-dir", required=True, type=click.Path(file_okay=False), help="Emulator state folder.")
@click.option("--faults", default=None, help="Fault preset (none, real, chaos), JSON file or JSON text.")
@click.option("--seed", default=None, type=int, help="Seed for reproducible faults.")
@click.option("--pace", default=None, help="Job pace as JSON (see mistral-emulator --help).")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@one_line_errors
def main(state_dir: str, faults: str | None, seed: int | None, pace: str | None, cmd: tuple[str, ...]) -> None:
    """Run CMD with MISTRAL_SERVER_URL pointing at a local emulator started for it."""
    extra = [*(["--faults", faults] if faults else []), *(["--seed", str(seed)] if seed is not None else []),
             *(["--pace", pace] if pace else [])]
    with running_emulator(state_dir, extra) as url:
        env = {**os.environ, "MISTRAL_SERVER_URL": url, "MISTRAL_API_KEY": LOCAL_KEY}
        try:
            code = subprocess.call(list(cmd), env=env)
        except FileNotFoundError:
            raise click.ClickException(f"{cmd[0]}: no such command") from None
    sys.exit(code)
