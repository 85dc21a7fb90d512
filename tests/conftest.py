"""Fixtures: an isolated environment for every test, a real emulator over real HTTP, the real commands."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-key-not-secret"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's key, keyring, state or service."""
    for name in ("MISTRAL_API_KEY", "MISTRAL_SA_TOKEN_PATH", "MISTRAL_SERVER_URL", "OBJBATCH_KILL_AT",
                 "OBJBATCH_STOP_AT", "OBJBATCH_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("OBJBATCH_RETRY_SECONDS", "20")
    monkeypatch.setenv("OBJBATCH_MIN_POLL", "0.05")  # the emulator does not rate-limit reads: tests poll fast
    # The product's fixed waits (config.WAITS), short: each still decides, only sooner.
    for name, seconds in FAST_WAITS.items():
        monkeypatch.setenv(name, seconds)
    # Python's own Ctrl-C and SIGPIPE handling for every test, whatever an earlier one ran in this process (a
    # command run in process sets its own; batch-run ignores Ctrl-C once its run is over): no test depends on
    # which tests its pytest-xdist worker ran before it.
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGPIPE: signal.SIG_IGN}
    saved = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


FAST_WAITS = {"OBJBATCH_FIRST_CONTACT_SECONDS": "1", "OBJBATCH_CLEANUP_SECONDS": "1",
              "OBJBATCH_WAIT_RETRY_FLOOR": "1", "OBJBATCH_LEASE_POLL": "0.05"}


class Emulator:
    """A mistral-emulator process on 127.0.0.1 with its own state dir; restartable on the same port."""

    def __init__(self, state_dir: Path, args: list[str]):
        self.state_dir, self.args, self.port, self.proc = state_dir, args, 0, None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "mistral-emulator"), "--host", "127.0.0.1", "--port", str(self.port), "--state-dir",
             str(self.state_dir), "--api-key", TEST_KEY, *self.args], stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline().strip()  # export MISTRAL_SERVER_URL=http://127.0.0.1:PORT
        assert first.startswith("export MISTRAL_SERVER_URL=http://127.0.0.1:"), first
        self.url = first.split("=", 1)[1]
        self.proc.stdout.readline()  # export MISTRAL_API_KEY=...
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def env(self) -> dict:
        return {**os.environ, "MISTRAL_SERVER_URL": self.url, "MISTRAL_API_KEY": TEST_KEY}

    def _control(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                         headers={"Authorization": f"Bearer {TEST_KEY}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def record(self) -> dict:
        return self._control("/_emulator/record")

    def faults(self, **changes) -> dict:
        return self._control("/_emulator/faults", changes)

    def pace(self, **changes) -> dict:
        return self._control("/_emulator/pace", changes)

    def release(self) -> dict:
        """Let every unfinished job finish now."""
        return self._control("/_emulator/release", {})

    def sdk(self, key: str = TEST_KEY):
        from mistralai.client import Mistral

        return Mistral(api_key=key, server_url=self.url)


@pytest.fixture
def emulator(tmp_path):
    emu = Emulator(tmp_path / "emulator", [])
    yield emu
    emu.stop()


# Commands run() calls in this process (click's CliRunner): their start (Python, the SDK's import) is most of
# what a short command costs. The others start a process of their own: batch-run and batch-cron run make and
# hold the process's signals, the emulator and with-emulator serve, set-key reads a terminal.
IN_PROCESS = {"select-pending", "build-jsonl", "batch-submit", "batch-wait", "batch-fetch", "batch-cancel", "validate",
              "apply-sql", "stats", "review", "show", "approve", "requeue", "export-metadata", "estimate", "report",
              "make-sample-library"}
OWN_PROCESS_ENV = ("OBJBATCH_KILL_AT", "OBJBATCH_STOP_AT")  # a kill point would kill the test itself
LEASE_ENV = "OBJBATCH_LEASE"  # the test holds a run's lease: a command must be another process to be refused it
# Read once when a process starts (a module path, the keyring backend, the streams' encoding): a change needs one.
AT_START_ENV = ("PYTHONPATH", "PYTHON_KEYRING_BACKEND", "PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LC_ALL",
                "LC_CTYPE")


def run(cmd: str, *args: str, input: str | None = None, env: dict | None = None, cwd: Path | None = None,
        timeout: float = 120, process: bool = False) -> subprocess.CompletedProcess:
    """Run one of the project's commands as a user would: its exit code, stdout and stderr. In this process
    where that is the same (IN_PROCESS, no kill point, no other folder); `process=True` asks for its own."""
    env = dict(os.environ) if env is None else env
    if process or cmd not in IN_PROCESS or cwd is not None or any(env.get(k) for k in OWN_PROCESS_ENV) \
            or any(env.get(k) != os.environ.get(k) for k in AT_START_ENV) or LEASE_ENV in os.environ:
        return subprocess.run([str(BIN / cmd), *map(str, args)], input=input, capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=timeout)
    changes = {k: v for k, v in env.items() if os.environ.get(k) != v}
    changes.update({k: None for k in os.environ if k not in env})  # the environment given, exactly
    result = invoke(cmd, *args, input=input, env=changes)
    return subprocess.CompletedProcess([cmd, *map(str, args)], result.exit_code, result.stdout, result.stderr)


def make(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def request_lines(n: int, prefix: str = "r", subject: str = "The Virtue of Honesty") -> str:
    lines = []
    for i in range(n):
        text = ("honesty and ethics depend on reason and values. " * 60)
        body = {"messages": [{"role": "system", "content": "Return JSON."},
                             {"role": "user", "content": f"File name: MOTM_2020-01-{i % 28 + 1:02d}_"
                                                         f"{subject.replace(' ', '-')}.txt\n\n--- Transcript ---\n"
                                                         f"{text}"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "m", "schema": {}}}}
        lines.append(json.dumps({"custom_id": f"{prefix}{i}", "body": body}))
    return "\n".join(lines) + "\n"


@pytest.fixture
def library(tmp_path):
    """A small sample library and its database in the library's existing schema (v12)."""
    from mistral_emulator.sample_library import build

    root, db = tmp_path / "library", tmp_path / "library.db"
    build(root, db, count=24, seed=3)
    return root, db


def rows(db: Path) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["file_path"]: r for r in conn.execute("SELECT * FROM files")}
    finally:
        conn.close()


def query(db: Path, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
def runs_dir(tmp_path):
    path = tmp_path / "runs"
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- run helpers the run-state suites share

def batch(emu, db, runs, *extra, env=None):
    return make("batch", f"DB={db}", f"RUNS={runs}", "POLL=0.1", *extra, env={**emu.env, **(env or {})})


def batch_run(emu, db, runs, *extra, env=None):
    return run("batch-run", f"DB={db}", f"RUNS={runs}", "POLL=0.1", *extra, env={**emu.env, **(env or {})})


def jobs(emu) -> list[dict]:
    return emu.record()["jobs_created"]


def claimed(db) -> int:
    return query(db, "SELECT COUNT(*) FROM objbatch_claims WHERE state = 'claimed'")[0][0]


# ---------------------------------------------------------------- waiting on visible state, never on a sleep

def wait_until(check, what: str, limit: float = 60):
    """Look at visible state (a file, the emulator's record, a process) until `check()` is true."""
    deadline = time.monotonic() + limit
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not seen within {limit:.0f} s"
        time.sleep(0.02)
    return result


def stopped(proc: subprocess.Popen) -> bool:
    """Whether the process stopped itself at its OBJBATCH_STOP_AT point (state T); it must not have ended."""
    assert proc.poll() is None, f"the process ended ({proc.returncode}) instead of stopping"
    return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


class Started:
    """A command running in the background whose stderr is read as it comes: a test waits for a line it
    prints (`saw`), then acts, then collects it (`finish`)."""

    def __init__(self, argv: list, env: dict, **popen):
        self.proc = subprocess.Popen([str(a) for a in argv], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, **popen)
        self.err: list[str] = []
        self.out = ""
        self._reader = threading.Thread(target=lambda: self.err.extend(iter(self.proc.stderr.readline, "")),
                                        daemon=True)
        self._reader.start()

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    def wait_for(self, text: str, limit: float = 60) -> None:
        wait_until(lambda: self.saw(text) or self.proc.poll() is not None, f"{text!r} on stderr", limit)
        assert self.saw(text), f"ended ({self.proc.returncode}) without printing {text!r}: {''.join(self.err)}"

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        self.out = self.proc.stdout.read()
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return self.proc.returncode, self.out, "".join(self.err)


# ---------------------------------------------------------------- a command in process (click's CliRunner)

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def command(name: str):
    """The click command behind a console script, as pyproject.toml names it (objbatch's start through
    objbatch.launch, which loads the command's module)."""
    from objbatch import launch

    module, attribute = SCRIPTS[name].split(":")
    entry = getattr(importlib.import_module(module), attribute)
    return entry.command() if isinstance(entry, launch.Command) else entry


def invoke(name: str, *args, input: str | None = None, env: dict | None = None):
    """Run a command in this process, as its console script would (name, exit code, stdout, stderr), for the
    argument and error paths: no process to start. A command that may be killed, or that needs its own
    process (signals, a kill point), runs through run() instead. Signal handlers a command sets are undone."""
    from click.testing import CliRunner

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGPIPE)}
    try:
        return CliRunner().invoke(command(name), [str(a) for a in args], input=input, env=env, prog_name=name,
                                  catch_exceptions=False)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
