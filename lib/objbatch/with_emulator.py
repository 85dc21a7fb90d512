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

from .common import Failure, command

LOCAL_KEY = "emulator-local-key"


@contextmanager
def running_emulator(state_dir: str, extra: list[str]) -> Iterator[str]:
    """Start the emulator on 127.0.0.1 (port 0) and yield its URL; stop it afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "objbatch.emulator", "--host", "127.0.0.1", "--port", "0",
                             "--state-dir", state_dir, *extra], stdout=subprocess.PIPE, text=True)
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip()
        if not url.startswith("http://"):
            raise Failure(f"the emulator did not start (exit {proc.poll()}); run mistral-emulator by hand to see why")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True})
@click.option("--state-dir", required=True, type=click.Path(file_okay=False), help="Emulator state folder.")
@click.option("--faults", default=None, help="Fault preset (none, real, chaos), JSON file or JSON text.")
@click.option("--seed", default=None, type=int, help="Seed for reproducible faults.")
@click.option("--pace", default=None, help="Job pace as JSON (see mistral-emulator --help).")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@command
def main(state_dir: str, faults: str | None, seed: int | None, pace: str | None, cmd: tuple[str, ...]) -> None:
    """Run CMD with MISTRAL_SERVER_URL pointing at a local emulator started for it."""
    extra = [*(["--faults", faults] if faults else []), *(["--seed", str(seed)] if seed is not None else []),
             *(["--pace", pace] if pace else [])]
    with running_emulator(state_dir, extra) as url:
        env = {**os.environ, "MISTRAL_SERVER_URL": url, "MISTRAL_API_KEY": LOCAL_KEY}
        code = subprocess.call(list(cmd), env=env)
    sys.exit(code)


if __name__ == "__main__":
    main()
