"""make simulate: seeded sequences of a user's, a library's and a service's worst days, with the invariants
checked after every event (issue 15, section 3).

    python tests/simulate.py --seeds 100          sequences 0..99
    python tests/simulate.py --seeds 500-599      a range
    python tests/simulate.py --seed 17 -v         replay one sequence, printing each event and its output

Each sequence: a tiny sample library (make-sample-library --small, 10-20 files) in a folder of its own, then
at least --events random events drawn with random.Random(seed):
- the user: make batch (random MAX, NAME, BUDGET, TIMEOUT), make batch killed by SIGKILL at one of the
  project's kill points (OBJBATCH_KILL_AT, in a subprocess) or by SIGINT or SIGKILL after a seeded delay
  (a subprocess too),
  make cancel, make cron, approve, requeue, stages by hand (make runs/NAME/<stage>, apply-sql without --run),
  readers (stats, review, estimate, export);
- the library: edit, delete, move or make unreadable a file (then restore it), back up / restore the
  database, act on a copy of the database, delete a run folder;
- the service: fault mixes (none, real, chaos), HTTP storms on one route, jobs ending FAILED or
  TIMEOUT_EXCEEDED part-way, missing results, oddly shaped result lines, lost job creations (made, but
  answered 500), held jobs and their release, an emulator restart.
Then a settling phase: faults off, jobs released, make batch (and make cancel if needed) until no run is
unfinished. After every event the invariants below are checked; the first violation stops the sequence and
prints its seed, its events and the last command's output.

Stages run in this process (as batch-run runs them), against ONE emulator per worker process, served from a
thread on 127.0.0.1 with a fast pace; a sequence resets it to a fresh state folder. SIGKILL cannot be
simulated in process: those events run batch-run in a subprocess with OBJBATCH_KILL_AT.

Invariants (the emulator's record, the database and the files):
- paid once: a (file, content) custom_id is sent again only when every earlier request for it has ended
  and none of them returned a usable answer (extracted or needs_review), unless a requeue touched the file
  since; never twice in one job;
- every result the service returned for a finished run, for content still on disk, is applied (a row in
  objbatch_applied) or its file carries a reason;
- no file stays claimed by a finished run; at the end every unfinished run ends by make batch or make cancel;
- attempts grow only for requests that ran: a file's attempts rise during an event by at most the number of
  result lines (output or error file) applied for it during that event;
- no job is created over BUDGET (its requests' input tokens alone already cost more);
- nothing is written outside RUNS and the database (the sequence folder, the library, the project folder);
- readers change no row; the API key appears in no output, run folder or database; no traceback and no
  unexpected exception ("rerun with --verbose") in any output; exit codes are 0, 1, 2, 75 or 130.
Jobs made while acting on a copy of the database are left out of the paid-once accounting (the copy is
another library); after a restore, jobs of runs the restored database never knew are forgotten.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "sk-sim-4f7c2a9e81d3b5a6"  # a key long enough to be masked; it must never be printed
FAST_PACE = {"queue_seconds": 0.005, "seconds_per_request": 0.0005, "min_run_seconds": 0.01,
             "max_run_seconds": 0.05, "cancel_seconds": 0.005}
HELD_PACE = {"queue_seconds": 1e6}
KILL_POINTS = ("after-claim", "build-line:1", "build-line:3", "after-upload", "after-create", "after-download",
               "apply-midway:1", "apply-midway:4")
EXIT_CODES = (0, 1, 2, 75, 130)
STORED = ("extracted", "needs_review")
READERS = ("stats", "review", "estimate", "export")


class Violation(Exception):
    pass


# ------------------------------------------------------------------ the emulator, in a thread


class Emulator:
    """One mistral-emulator per worker process, served from a thread; reset() gives it a fresh state."""

    def __init__(self, parent: Path | None = None) -> None:
        from http.server import ThreadingHTTPServer

        from mistral_emulator import server

        self.base = Path(tempfile.mkdtemp(prefix="objbatch-sim-emu-", dir=parent))  # gone with its parent
        self.root = self.base / "0"
        self.api = server.Api(self._state(self.root), KEY)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.make_handler(self.api))
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client killed mid-call is part of the day
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.api.base_url = self.url
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @staticmethod
    def _state(root: Path):
        from mistral_emulator.state import State

        return State(root, {}, FAST_PACE)

    @property
    def state(self):
        return self.api.state

    def reset(self, name: str, seed: int) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = self.base / name
        self.api.state = self._state(self.root)
        self.faults(seed=seed)

    def restart(self) -> None:
        """What a killed and restarted emulator knows: what it persisted."""
        with self.state.lock:
            self.api.state = self._state_from_disk(self.root)

    @staticmethod
    def _state_from_disk(root: Path):
        from mistral_emulator.state import State

        return State(root, {}, {})

    def faults(self, **changes) -> None:
        from mistral_emulator import faults

        with self.state.lock:
            faults.update(self.state.faults, changes)
            self.state.save()

    def pace(self, **changes) -> None:
        with self.state.lock:
            self.state.pace.update(changes)
            self.state.save()

    def release(self) -> None:
        from mistral_emulator import jobs

        with self.state.lock:
            jobs.release(self.state)

    def close(self) -> None:
        self.httpd.shutdown()
        shutil.rmtree(self.base, ignore_errors=True)


# ------------------------------------------------------------------ running the commands


class Output:
    def __init__(self, argv: list[str], code: int, out: str, err: str):
        self.argv, self.code, self.out, self.err = argv, code, out, err

    def __str__(self) -> str:
        return f"$ {' '.join(map(shlex.quote, self.argv))}  -> exit {self.code}\n{self.out}{self.err}".rstrip()


@contextlib.contextmanager
def captured():
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    texts = ["", ""]
    try:
        yield texts
    finally:
        sys.stdout, sys.stderr = old
        for i, stream in enumerate((out, err)):
            stream.flush()
            texts[i] = stream.buffer.getvalue().decode("utf-8", "replace")


class Hung(BaseException):
    """An in-process command ran past HANG_SECONDS (a BaseException: no command may swallow it)."""


HANG_SECONDS = 90


def _hung(signum, frame):
    raise Hung()


@contextlib.contextmanager
def watchdog():
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def in_process(module: str, args: list[str], stdin: str | None = None) -> Output:
    """An objbatch command, run in this process as batch-run runs its stages."""
    import importlib

    import click

    command = importlib.import_module(f"objbatch.commands.{module}").main
    old_in = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    code = 0
    try:
        with captured() as texts:
            try:
                with watchdog():
                    command.main(args=args, prog_name=module.replace("_", "-"), standalone_mode=False)
            except Hung:
                sys.stderr.write(f"(simulator: still running after {HANG_SECONDS}s: the command hung)\n")
                code = -999
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except click.ClickException as exc:
                exc.show()
                code = exc.exit_code
            except click.exceptions.Abort:
                code = 1
            except Exception:  # a command must never let one out: show it as the user would see it
                sys.stderr.write(traceback.format_exc())
                code = 1
    finally:
        sys.stdin = old_in
        calm()
    return Output([module.replace("_", "-"), *args], code, *texts)


def calm() -> None:
    """The commands set SIGPIPE to its default (die quietly under a closed pipe); the simulator's own
    emulator thread must not die when a killed client leaves its socket."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def subprocess_command(argv: list[str], env: dict, timeout: float = 120,
                       signal_after: tuple[float, int] | None = None) -> Output:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    if signal_after is not None:
        try:
            proc.wait(signal_after[0])
        except subprocess.TimeoutExpired:
            proc.send_signal(signal_after[1])
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Output(argv, -999, out, err + f"\n(simulator: killed after {timeout}s: the command hung)")
    return Output(argv, proc.returncode, out, err)


# ------------------------------------------------------------------ one sequence


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


class Sequence:
    def __init__(self, seed: int, events: int, emulator: Emulator, workdir: Path, verbose: bool = False,
                 tolerate: tuple[str, ...] = ()):
        from mistral_emulator.sample_library import build

        self.tolerate, self.tolerated, self.tolerated_texts = set(tolerate), {}, []

        self.seed, self.n_events, self.emu, self.verbose = seed, events, emulator, verbose
        self.rng = random.Random(seed)
        self.dir = workdir / f"seq-{seed}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.lib, self.db, self.runs = self.dir / "library", self.dir / "library.db", self.dir / "runs"
        self.state_home = self.dir / "state"
        self.state_home.mkdir()
        build(self.lib, self.db, count=self.rng.randint(10, 20), seed=seed, small=True)
        emulator.reset(f"seq-{seed}", seed)
        self.events: list[str] = []
        self.outputs: list[Output] = []
        self.event_jobs: dict[str, int] = {}          # job id -> index of the event that created it
        self.excluded: set[str] = set()               # jobs made while acting on a copy of the database
        self.known_jobs: set[str] = set()
        self.lineage_run_ids: set[str] = set()        # run ids this database has known (reset by a restore)
        self.backup: tuple[Path, set[str]] | None = None
        self.touched_at: dict[str, float] = {}        # file path -> when a requeue last changed it
        self.hidden: list[tuple[Path, Path, str]] = []  # (path, where it went, how) for library events undone
        self.paths: dict[str, str] = {}               # sha256(path)[:16] -> path, for custom_ids
        self.held = False
        self.budget: float | None = None
        self.restored = self.in_copy = self.library_event = False
        self.approved: dict[str, tuple] = {}
        self.event_started = time.time()
        self.copy_problems: list[str] = []
        self.event_index = 0
        self.snapshot = self._outside()
        self.attempts = self._attempts()
        self.applied = self._applied_keys()
        self.root_listing = self._root_listing()

    # -------------------------------------------------------------- environment

    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "OBJBATCH_KILL_AT")}
        env.update(MISTRAL_SERVER_URL=self.emu.url, MISTRAL_API_KEY=KEY, OBJBATCH_MIN_POLL="0.01",
                   OBJBATCH_RETRY_SECONDS="1", XDG_STATE_HOME=str(self.state_home),
                   PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
        return env

    def run(self) -> None:
        old_env, old_cwd, env = dict(os.environ), os.getcwd(), self.env
        os.environ.clear()
        os.environ.update(env)
        os.chdir(self.dir)
        try:
            for index in range(self.n_events):
                self.step(index, self.pick())
            self.settle()
        finally:
            os.chdir(old_cwd)
            os.environ.clear()
            os.environ.update(old_env)

    def step(self, index: int, event) -> None:
        self.event_index = index
        self.outputs = []
        self.budget = None
        self.in_copy = self.library_event = False
        self.event_started = time.time()
        self.copy_problems: list[str] = []
        self.reader = False
        before = self.rows() if getattr(event, "__name__", "") == "ev_reader" else None
        started = time.time()
        description = event()
        self.events.append(f"{index:>3} {description}")
        if self.verbose:
            print(f"[{time.time() - started:6.2f}s] {self.events[-1]}", file=sys.__stderr__)
            for out in self.outputs:
                print("      " + str(out).replace("\n", "\n      "), file=sys.__stderr__)
        self.check(before)

    def note(self, output: Output) -> Output:
        self.outputs.append(output)
        return output

    # -------------------------------------------------------------- the user

    def settings(self, **fixed: str) -> list[str]:
        rng = self.rng
        names = ["NAME=a", "NAME=b", f"NAME=r{self.event_index}"]
        out = [f"DB={self.db}", f"RUNS={self.runs}", "POLL=0.01", f"TIMEOUT={'0' if self.held else '20'}"]
        if rng.random() < 0.75:
            out.append(f"MAX={rng.choice([0, 1, 2, 3, 3, 5, 8])}")
        if rng.random() < 0.3:
            out.append(rng.choice(names))
        if rng.random() < 0.2:
            self.budget = rng.choice([0.000001, 0.0001, 5.0])
            out.append(f"BUDGET={self.budget:g}")
        if rng.random() < 0.1:
            out.append("RETRY_EXHAUSTED=1")
        for key, value in fixed.items():
            out = [a for a in out if not a.startswith(key + "=")] + [f"{key}={value}"]
        return out

    def ev_batch(self) -> str:
        args = self.settings()
        self.note(in_process("batch_run", args))
        return "make batch " + " ".join(a for a in args if not a.startswith(("DB=", "RUNS=", "POLL=")))

    def ev_batch_killed(self) -> str:
        point = self.rng.choice(KILL_POINTS)
        args = self.settings()
        out = self.note(subprocess_command([str(BIN / "batch-run"), *args], {**self.env, "OBJBATCH_KILL_AT": point}))
        if out.code == -signal.SIGKILL:
            out.code = 137
        return f"make batch killed at {point}: " + " ".join(a for a in args if a.startswith(("MAX", "NAME", "BUDGET")))

    def ev_batch_interrupted(self) -> str:
        delay = round(self.rng.uniform(0.3, 1.0), 2)
        sig = self.rng.choice([signal.SIGINT, signal.SIGKILL])
        args = self.settings()
        out = self.note(subprocess_command([str(BIN / "batch-run"), *args], self.env, signal_after=(delay, sig)))
        if out.code == -signal.SIGKILL:
            out.code = 137
        return f"make batch, {sig.name} after {delay}s: " + " ".join(
            a for a in args if a.startswith(("MAX", "NAME", "BUDGET")))

    def unfinished(self) -> list[str]:
        with self.connect() as conn:
            try:
                return [r[0] for r in conn.execute("SELECT run_name FROM objbatch_runs WHERE state NOT IN "
                                                   "('applied', 'cancelled') ORDER BY created_at, run_name")]
            except sqlite3.OperationalError:
                return []

    def cancel(self, name: str | None) -> None:
        """make cancel [NAME=]: batch-cancel, then batch-run NAME=<it> to harvest (polls shortened)."""
        args = ["--db", str(self.db), "--poll", "0.01"] + (["--run", name] if name else [])
        out = self.note(in_process("batch_cancel", args))
        harvest = out.out.strip()
        if out.code == 0 and harvest:
            self.note(in_process("batch_run", [f"DB={self.db}", f"RUNS={self.runs}", f"NAME={harvest}", "POLL=0.01",
                                              f"TIMEOUT={'0' if self.held else '20'}"]))

    def ev_cancel(self) -> str:
        open_runs = self.unfinished()
        name = self.rng.choice(open_runs) if open_runs and self.rng.random() < 0.6 else None
        self.cancel(name)
        return f"make cancel{' NAME=' + name if name else ''}"

    def ev_cron(self) -> str:
        sets = [f"--set={a}" for a in self.settings() if a.startswith(("MAX=", "BUDGET="))]
        self.note(subprocess_command([str(BIN / "batch-cron"), "--db", str(self.db), "--runs", str(self.runs), *sets],
                                     self.env))
        return "make cron " + " ".join(sets)

    def files(self, statuses: tuple[str, ...]) -> list[str]:
        with self.connect() as conn:
            conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
            marks = ",".join("?" * len(statuses))
            return [r[0] for r in conn.execute(f"SELECT file_path FROM files WHERE ai_metadata_status IN ({marks}) "
                                               "ORDER BY file_path", statuses)]

    def ev_approve(self) -> str:
        candidates = self.files(("needs_review", "extracted"))
        if not candidates or self.rng.random() < 0.3:
            self.note(in_process("approve", ["--db", str(self.db), "--min-confidence", "0.9"]))
            return "approve --min-confidence 0.9"
        chosen = self.rng.sample(candidates, min(len(candidates), self.rng.randint(1, 2)))
        self.note(in_process("approve", ["--db", str(self.db), *chosen]))
        return f"approve {len(chosen)} file(s)"

    def ev_requeue(self) -> str:
        before = self.rows()
        candidates = self.files(("needs_review", "extracted", "failed_validation", "skipped", "approved"))
        if not candidates or self.rng.random() < 0.3:
            status = self.rng.choice(["failed_validation", "needs_review", "skipped"])
            self.note(in_process("requeue", ["--db", str(self.db), "--status", status]))
            what = f"requeue --status {status}"
        else:
            chosen = self.rng.sample(candidates, min(len(candidates), self.rng.randint(1, 3)))
            self.note(in_process("requeue", ["--db", str(self.db), "--include-approved", *chosen]))
            what = f"requeue {len(chosen)} file(s)"
        after = self.rows()
        now = time.time()
        for path, row in after.get("files", {}).items():
            if before.get("files", {}).get(path) != row:
                self.touched_at[path] = now
        return what

    def ev_by_hand(self) -> str:
        runs_here = [p for p in self.runs.iterdir() if p.is_dir()] if self.runs.exists() else []
        if not runs_here:
            return self.ev_batch()
        folder = self.rng.choice(sorted(runs_here))
        if (folder / "decisions.jsonl").exists() and self.rng.random() < 0.4:
            self.note(in_process("apply_sql", ["--db", str(self.db), str(folder / "decisions.jsonl")]))
            return f"apply-sql --db DB {folder.name}/decisions.jsonl (by hand, no --run)"
        target = self.rng.choice(["select.jsonl", "requests.jsonl", "job.json", "wait.jsonl", "results.jsonl",
                                  "decisions.jsonl", "applied.json"])
        from objbatch import pipeline
        from objbatch.common import Failure

        proc = subprocess.run(["make", "-n", "-s", "--no-print-directory", "-C", str(ROOT), f"DB={self.db}",
                               f"RUNS={self.runs}", f"NAME={folder.name}", "POLL=0.01",
                               f"TIMEOUT={'0' if self.held else '20'}", f"{self.runs}/{folder.name}/{target}"],
                              capture_output=True, text=True, env=self.env)
        if proc.returncode:
            self.note(Output(["make", target], proc.returncode, proc.stdout, proc.stderr))
            return f"make {folder.name}/{target} (make refused)"
        for argv in pipeline.commands(proc.stdout):
            with captured() as texts:
                try:
                    with watchdog():
                        code = pipeline.run(pipeline.check(argv))  # as batch-run runs a stage make names
                except Hung:
                    sys.stderr.write(f"(simulator: still running after {HANG_SECONDS}s: the command hung)\n")
                    code = -999
                except Failure as exc:  # the pipeline contract refused the line: a bug in the Makefile
                    sys.stderr.write(f"error: {exc}\n")
                    code = 1
                except Exception:
                    sys.stderr.write(traceback.format_exc())
                    code = 1
            calm()
            if self.note(Output(argv, code, *texts)).code:
                break
        return f"make RUNS/{folder.name}/{target} (stages by hand)"

    def ev_reader(self) -> str:
        which = self.rng.choice(READERS)
        self.reader = True
        if which == "stats":
            self.note(in_process("stats", ["--db", str(self.db)]))
        elif which == "review":
            self.note(in_process("review", ["--db", str(self.db), "--skipped"]))
        elif which == "export":
            self.note(in_process("export_metadata", ["--db", str(self.db), "--json"]))
        else:
            self.note(in_process("batch_run", ["--estimate", *self.settings()]))
        return which

    # -------------------------------------------------------------- the library

    def library_files(self) -> list[Path]:
        return sorted(p for p in self.lib.rglob("*") if p.is_file() and p.suffix in (".txt", ".md"))

    def ev_library(self) -> str:
        rng = self.rng
        self.library_event = True
        if self.hidden and rng.random() < 0.4:
            path, where, how = self.hidden.pop(rng.randrange(len(self.hidden)))
            if how == "unreadable":
                shutil.rmtree(path, ignore_errors=True)
            if where.exists() and not path.exists():
                os.replace(where, path)
            result = f"library: {path.name} is back ({how} undone)"
        else:
            files = self.library_files()
            if not files:
                return "library: nothing to change"
            path = rng.choice(files)
            how = rng.choice(["edit", "edit", "edit and rescan", "add", "delete", "move", "unreadable", "bad row"])
            if how == "bad row":
                return self.bad_row()
            if how == "add":
                path = path.with_name(f"Added {self.event_index} - On Reason.txt")
                path.write_text(f"A new lecture {rng.randrange(10**6)} on reason, ethics and values.\n" * 20)
            if how.startswith("edit"):
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(f"\nAn added sentence {rng.randrange(10**6)} about reason and virtue.\n")
            if how in ("add", "edit and rescan"):
                self.scan(path)
            if how == "delete":
                path.unlink()
            elif how in ("move", "unreadable"):
                where = self.dir / "moved" / f"{len(self.hidden)}-{path.name}"
                where.parent.mkdir(exist_ok=True)
                os.replace(path, where)
                if how == "unreadable":  # the simulator runs as root, for whom modes do not stop a read
                    path.mkdir()
                self.hidden.append((path, where, how))
            result = f"library: {how} {path.relative_to(self.lib)}"
        self.snapshot = self._outside()
        return result

    def bad_row(self) -> str:
        """A row the library's scanner should not have written: a name or path that is not UTF-8, a NUL
        in a path, or a FIFO named like a transcript."""
        kind = self.rng.choice(["filename not UTF-8", "path not UTF-8", "NUL in path", "FIFO"])
        n = self.event_index
        path: object = str(self.lib / f"Bad {n}.txt")
        name: object = f"Bad {n}.txt"
        if kind == "filename not UTF-8":
            name = f"Bad {n} \xff.txt".encode("latin-1")
        elif kind == "path not UTF-8":
            path = str(self.lib / f"Bad {n} ").encode() + b"\xff.txt"
        elif kind == "NUL in path":
            path = str(self.lib / f"Bad {n}\x00.txt")
        else:
            os.mkfifo(self.lib / f"Bad {n}.txt")
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn, conn:
            conn.execute("INSERT OR IGNORE INTO files (file_path, content_hash, filename, file_size, "
                         "ai_metadata_status) VALUES (CAST(? AS TEXT), ?, CAST(? AS TEXT), 100, 'pending')",
                         (path, sha(f"bad {n}"), name))
        self.snapshot = self._outside()
        return f"library: a bad row ({kind})"

    def scan(self, path: Path) -> None:
        """What the library's own scanner does with a new or changed file: its row, content hash, pending."""
        data = path.read_bytes()
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn, conn:
            conn.execute("INSERT INTO files (file_path, content_hash, filename, file_size, ai_metadata_status) "
                         "VALUES (?, ?, ?, ?, 'pending') ON CONFLICT(file_path) DO UPDATE SET "
                         "content_hash = excluded.content_hash, file_size = excluded.file_size, "
                         "ai_metadata_status = CASE WHEN ai_metadata_status = 'approved' THEN 'approved' "
                         "ELSE 'pending' END", (str(path), sha(data), path.name, len(data)))

    def ev_database(self) -> str:
        rng = self.rng
        self.library_event = True
        choice = rng.choice(["backup", "restore", "copy", "copy", "delete run folder"])
        if choice == "backup" or (choice == "restore" and not self.backup):
            target = self.dir / "backup.db"
            with self.connect() as conn, contextlib.closing(sqlite3.connect(target)) as copy:
                conn.backup(copy)
            self.backup = (target, set(self.lineage_run_ids) | self._run_ids())
            self.snapshot = self._outside()
            return "database: backed up"
        if choice == "restore":
            for suffix in ("-wal", "-shm"):
                Path(f"{self.db}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.backup[0], self.db)
            self.lineage_run_ids = set(self.backup[1])
            self.restored = True
            self.snapshot = self._outside()
            return "database: restored from the backup"
        if choice == "copy":
            return self.on_copy()
        folders = sorted(p for p in self.runs.iterdir() if p.is_dir()) if self.runs.exists() else []
        if not folders:
            return "database: no run folder to delete"
        folder = rng.choice(folders)
        shutil.rmtree(folder)
        return f"delete run folder {folder.name}"

    def on_copy(self) -> str:
        """Copy the database, act on the copy, delete it: the original must not change."""
        self.in_copy = True
        copy = self.dir / "copy" / "library.db"
        copy.parent.mkdir(exist_ok=True)
        with self.connect() as conn, contextlib.closing(sqlite3.connect(copy)) as target:
            conn.backup(target)
        original = self.rows()
        cancels_before = len(self.emu.state.record["cancels"])
        action = self.rng.choice(["cancel", "batch", "estimate", "stats"])
        if action == "cancel":
            self.note(in_process("batch_cancel", ["--db", str(copy), "--poll", "0.01"]))
        elif action == "batch":
            self.note(in_process("batch_run", [f"DB={copy}", f"RUNS={self.runs}", "POLL=0.01", "MAX=2",
                                               f"TIMEOUT={'0' if self.held else '20'}"]))
        else:
            before = self.rows(copy)
            self.note(in_process("batch_run", ["--estimate", f"DB={copy}", f"RUNS={self.runs}"])
                      if action == "estimate" else in_process("stats", ["--db", str(copy)]))
            if self.rows(copy) != before:
                self.copy_problems.append(f"{action} on a copy of the database changed the copy (a reader must "
                                          "change nothing)")
        if self.rows() != original:
            self.copy_problems.append(f"{action} on a copy of the database changed the original")
        mine = self._job_ids_of_current_runs()
        cancelled = [j for j in self.emu.state.record["cancels"][cancels_before:] if j in mine]
        if cancelled:
            self.copy_problems.append(f"{action} on a copy of the database cancelled the original's jobs {cancelled}")
        shutil.rmtree(copy.parent)
        return f"database: copied, {action} on the copy"

    # -------------------------------------------------------------- the service

    def ev_service(self) -> str:
        rng = self.rng
        kind = rng.choice(["preset", "preset", "storm", "storm", "job_status", "missing", "hold", "release",
                           "restart", "odd", "lost"])
        if kind == "odd":
            rate = rng.choice([0.0, 0.2, 1.0])
            self.emu.faults(odd_lines=rate)
            return f"service: oddly shaped result lines {rate}"
        if kind == "lost":
            n = rng.choice([1, 2])
            self.emu.faults(lost_creates=n)
            return f"service: the next {n} job creation(s) succeed but answer 500"
        if kind == "preset":
            preset = rng.choice(["none", "real", "chaos"])
            self.emu.faults(preset=preset, seed=self.seed * 1000 + self.event_index)
            return f"service: faults {preset}"
        if kind == "storm":
            path = rng.choice(["POST /v1/batch/jobs", "POST /v1/files", "GET /v1/batch/jobs", "GET /v1/files", ""])
            n, status = rng.choice([2, 5, 40]), rng.choice([429, 503])
            self.emu.faults(http_storm=n, http_storm_path=path, http_status=status, retry_after=0.01)
            return f"service: storm of {n} x {status} on {path or 'every call'}"
        if kind == "job_status":
            status, partial = rng.choice(["FAILED", "TIMEOUT_EXCEEDED", "SUCCESS"]), rng.choice([0.0, 0.5, 0.9])
            self.emu.faults(job_status=status, partial=partial)
            return f"service: jobs end {status} (partial {partial})"
        if kind == "missing":
            rate = rng.choice([0.0, 0.3])
            self.emu.faults(missing=rate, error_in_error_file=rng.choice([0.0, 0.2]))
            return f"service: missing results {rate}"
        if kind == "hold":
            self.emu.pace(**HELD_PACE)
            self.held = True
            return "service: jobs held (queued until released)"
        if kind == "release":
            self.emu.pace(**FAST_PACE)
            self.emu.release()
            self.held = False
            return "service: jobs released"
        self.emu.restart()
        return "service: emulator restarted"

    # -------------------------------------------------------------- picking and settling

    def pick(self):
        table = [(self.ev_batch, 30), (self.ev_batch_killed, 7), (self.ev_batch_interrupted, 3),
                 (self.ev_cancel, 7), (self.ev_cron, 3), (self.ev_approve, 4), (self.ev_requeue, 5),
                 (self.ev_by_hand, 6), (self.ev_reader, 5), (self.ev_library, 12), (self.ev_database, 6),
                 (self.ev_service, 16)]
        events, weights = zip(*table, strict=True)
        return self.rng.choices(events, weights)[0]

    def settle(self) -> None:
        """Faults off, jobs released: make batch, then make cancel, must end every unfinished run."""
        self.emu.faults(preset="none")
        self.emu.pace(**FAST_PACE)
        self.emu.release()
        self.held = False
        for attempt in range(4):
            open_runs = self.unfinished()
            if not open_runs:
                return
            settle = self._settle_batch if attempt < 2 else self._settle_cancel
            self.step(self.n_events + attempt, functools.partial(settle, open_runs[0]))
        left = self.unfinished()
        if left and "unfinished" not in self.tolerate:
            raise Violation(f"runs {left} are still unfinished after make batch and make cancel "
                            "(with the service healthy)")

    def _settle_batch(self, name: str) -> str:
        self.note(in_process("batch_run", [f"DB={self.db}", f"RUNS={self.runs}", "POLL=0.01", "TIMEOUT=20"]))
        return f"settle: make batch (resumes {name})"

    def _settle_cancel(self, name: str) -> str:
        self.cancel(name)
        return f"settle: make cancel NAME={name}"

    # -------------------------------------------------------------- observations

    def connect(self, path: Path | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{path or self.db}?mode=ro", uri=True, timeout=30)
        conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")  # a bad row is data too
        return contextlib.closing(conn)  # type: ignore[return-value]

    def rows(self, path: Path | None = None) -> dict[str, dict]:
        """Every row of every table (objbatch's leases aside: a lease is not data)."""
        out: dict[str, dict] = {}
        with self.connect(path) as conn:
            conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if table in ("objbatch_leases", "sqlite_sequence"):
                    continue
                cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
                key = "file_path" if table == "files" else None
                data = [tuple(r) for r in conn.execute(f"SELECT * FROM {table}")]
                out[table] = {r[cols.index(key)]: r for r in data} if key else {i: r for i, r in enumerate(sorted(
                    data, key=repr))}
        return out

    def _run_ids(self) -> set[str]:
        with self.connect() as conn:
            try:
                return {r[0] for r in conn.execute("SELECT run_id FROM objbatch_runs WHERE run_id IS NOT NULL")}
            except sqlite3.OperationalError:
                return set()

    def _job_ids_of_current_runs(self) -> set[str]:
        ids = self._run_ids()
        with self.emu.state.lock:
            return {j["id"] for j in self.emu.state.jobs.values()
                    if (j.get("metadata") or {}).get("objbatch_run_id") in ids}

    def _attempts(self) -> dict[str, int]:
        with self.connect() as conn:
            try:
                return dict(conn.execute("SELECT file_path, attempts FROM objbatch_files"))
            except sqlite3.OperationalError:
                return {}

    def _applied_keys(self) -> dict[str, tuple]:
        with self.connect() as conn:
            try:
                return {r[0]: tuple(r[1:]) for r in conn.execute(
                    "SELECT result_key, file_path, outcome, run_name FROM objbatch_applied")}
            except sqlite3.OperationalError:
                return {}

    def _outside(self) -> dict[str, tuple]:
        """Everything in the sequence folder but RUNS and the database, with size and mtime."""
        seen = {}
        skip = {self.runs, self.db, Path(f"{self.db}-wal"), Path(f"{self.db}-shm"), Path(f"{self.db}-journal")}
        for path in self.dir.rglob("*"):
            if path in skip or self.runs in path.parents:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            seen[str(path)] = (st.st_size, st.st_mtime_ns, st.st_mode)
        return seen

    @staticmethod
    def _root_listing() -> set[str]:
        return {p.name for p in ROOT.iterdir() if p.name not in (".pytest_cache", ".ruff_cache", "__pycache__")}

    def jobs(self) -> dict[str, dict]:
        """The emulator's jobs, advanced to now: id -> job (with custom_ids, lines, end time)."""
        state = self.emu.state
        out = {}
        with state.lock:
            for entry in state.record["jobs_created"]:
                job = state.jobs.get(entry["id"])
                if job is None:
                    continue
                state.job_view(job)
                ids = state.ids(job["id"])[0]
                lines: dict[str, list[dict]] = {}
                for key in ("output_file", "error_file"):
                    if job.get(key):
                        for text in (state.root / "files" / job[key]).read_text().splitlines():
                            if text.strip():
                                line = json.loads(text)
                                lines.setdefault(str(line.get("custom_id")), []).append(line)
                t = job["timeline"]
                if job["status"] in ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED"):
                    ended = float("inf")
                elif t.get("cancel_at") is not None:
                    ended = t["cancel_at"] + state.pace["cancel_seconds"]
                else:
                    ended = min(t["end"], t["created"] + job["timeout_hours"] * t.get("seconds_per_hour", 3600.0))
                out[job["id"]] = {"id": job["id"], "ids": ids, "lines": lines, "status": job["status"],
                                  "created": t["created"], "ended": ended, "model": job["model"],
                                  "run_id": (job.get("metadata") or {}).get("objbatch_run_id"),
                                  "run_name": (job.get("metadata") or {}).get("objbatch_run_name"),
                                  "requests": None if job["id"] in self.known_jobs else list(state._requests(job))}
        return out

    # -------------------------------------------------------------- the invariants

    def check(self, reader_before: dict | None) -> None:
        """Every invariant after the event; the first broken one (not in --tolerate) is raised."""
        problems: list[Violation] = []

        def run(name: str, check, *args) -> None:
            try:
                check(*args)
            except Violation as exc:
                if name in self.tolerate:
                    self.tolerated[name] = self.tolerated.get(name, 0) + 1
                    self.tolerated_texts.append(f"{name}: {re.sub(r'/tmp/[^ ]*/seq-[0-9]+/', '', str(exc))[:300]}")
                else:
                    problems.append(exc)

        run("output", self.check_outputs)
        run("copy", self.check_copy)
        if reader_before is not None:
            run("reader", self.check_reader, reader_before)
        run("outside", self.check_files_outside)
        run_ids = self._run_ids()
        self.lineage_run_ids |= run_ids
        jobs = self.jobs()
        counted = {j: job for j, job in jobs.items() if j not in self.excluded}
        new = [j for j in jobs if j not in self.known_jobs]
        for job_id in new:
            self.event_jobs[job_id] = self.event_index
            if self.in_copy:
                self.excluded.add(job_id)
                counted.pop(job_id, None)
        current = {j: job for j, job in counted.items() if job["run_id"] in self.lineage_run_ids | run_ids}
        applied = self._applied_keys()
        run("paid_once", self.check_paid_once, new, current, applied)
        run("budget", self.check_budget, new, jobs)
        self.known_jobs.update(new)
        run("claims", self.check_claims)
        run("results", self.check_results_applied, current, applied)
        run("attempts", self.check_attempts, current, applied)
        run("key", self.check_key_in_files)
        run("approved", self.check_approved)
        self.applied = applied
        self.restored = False
        if problems:
            raise problems[0]

    def check_outputs(self) -> None:
        for out in self.outputs:
            text = out.out + out.err
            if KEY in text:
                raise Violation(f"the API key appears in the output of {out.argv[0]}")
            if "Traceback (most recent call last)" in text or "rerun with --verbose for details" in text:
                lines = [line for line in text.splitlines() if "rerun with --verbose" in line or "Error" in line]
                raise Violation(f"{out.argv[0]} failed with an unexpected exception: {(lines or [''])[-1].strip()}")
            summary = re.search(r"^Run (\S+) (\w+):$", out.out, re.M)
            if out.argv[0].endswith("batch-run") and out.code == 0 and summary and \
                    summary.group(2) not in ("applied", "cancelled"):
                raise Violation(f"batch-run exited 0 (done) but run {summary.group(1)} is {summary.group(2)}")
            if out.code == -999:
                raise Violation(f"{out.argv[0]} hung (killed by the simulator)")
            if out.code not in EXIT_CODES and out.code not in (137, -2):
                raise Violation(f"{out.argv[0]} exited {out.code}")

    def check_copy(self) -> None:
        if self.copy_problems:
            raise Violation(self.copy_problems[0])

    def check_reader(self, before: dict) -> None:
        if self.rows() != before:
            raise Violation("a reader changed the database")

    def check_files_outside(self) -> None:
        now = self._outside()
        if now != self.snapshot:
            changed = sorted(set(now.items()) ^ set(self.snapshot.items()))
            paths = sorted({Path(p).relative_to(self.dir).as_posix() for p, _ in changed})
            if any(not p.startswith("state") or self._state_written(p) for p in paths):
                raise Violation(f"written outside RUNS and the database: {paths[:5]}")
        self.snapshot = now
        listing = self._root_listing()
        if listing != self.root_listing:
            raise Violation(f"the project folder changed: {sorted(listing ^ self.root_listing)}")

    @staticmethod
    def _state_written(path: str) -> bool:
        return path != "state"

    def path_of(self, custom_id: str) -> str | None:
        prefix = custom_id[1:17]
        if prefix not in self.paths:
            with self.connect() as conn:
                conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
                for (path,) in conn.execute("SELECT file_path FROM files"):
                    self.paths[sha(path.encode("utf-8", "surrogateescape"))[:16]] = path
        return self.paths.get(prefix)

    def check_paid_once(self, new: list[str], current: dict[str, dict], applied: dict[str, tuple]) -> None:
        for job_id in new:
            job = current.get(job_id)
            if job is None:
                continue
            if len(set(job["ids"])) != len(job["ids"]):
                raise Violation(f"job {job_id} carries a custom_id twice")
            for custom_id in job["ids"]:
                for other in current.values():
                    if other["id"] == job_id or custom_id not in other["ids"] or other["created"] > job["created"]:
                        continue
                    path = self.path_of(custom_id)
                    if other["ended"] > job["created"]:
                        raise Violation(f"{path} ({custom_id}) sent again in job {job_id} while job {other['id']} "
                                        f"({other['status']}) still had it in flight")
                    decision = applied.get(f"{other['id']}/{custom_id}")
                    usable = decision is not None and decision[1] in STORED
                    if usable and self.touched_at.get(path, 0) < other["ended"]:
                        raise Violation(f"{path} ({custom_id}) sent again in job {job_id} after job {other['id']} "
                                        f"returned a usable answer ({decision[1]}) and no requeue since")

    def check_budget(self, new: list[str], jobs: dict[str, dict]) -> None:
        if self.budget is None or not new:
            return
        from objbatch import costs

        for job_id in new:
            job = jobs[job_id]
            tokens = sum(costs.request_tokens(r.get("body") or {}) for r in job["requests"] or [])
            usd = costs.cost(job["model"], tokens, 0)
            if usd is not None and usd > self.budget:
                raise Violation(f"job {job_id} created with BUDGET={self.budget:g}, but its input alone costs "
                                f"${usd:.6f}")

    def has_ledger(self) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'objbatch_runs'").fetchone() is not None

    def check_claims(self) -> None:
        with self.connect() as conn:
            try:
                rows = conn.execute("SELECT c.run_name, c.file_path, r.state FROM objbatch_claims c LEFT JOIN "
                                    "objbatch_runs r USING (run_name) WHERE c.state = 'claimed' AND "
                                    "(r.state IS NULL OR r.state IN ('applied', 'cancelled'))").fetchall()
            except sqlite3.OperationalError:
                return
        if rows:
            raise Violation(f"{len(rows)} file(s) still claimed by finished run {rows[0][0]} ({rows[0][2]}), "
                            f"e.g. {rows[0][1]}")

    def check_results_applied(self, current: dict[str, dict], applied: dict[str, tuple]) -> None:
        if not current or not self.has_ledger():
            return
        with self.connect() as conn:
            conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
            runs_state = {r[0]: r[1] for r in conn.execute("SELECT run_id, state FROM objbatch_runs "
                                                           "WHERE run_id IS NOT NULL")}
            files = {r[0]: r[1:] for r in conn.execute("SELECT file_path, ai_metadata_status, error_message, "
                                                       "is_deleted FROM files")}
        for job in current.values():
            if runs_state.get(job["run_id"]) not in ("applied", "cancelled") or job["ended"] == float("inf"):
                continue
            for custom_id in job["lines"]:
                key = f"{job['id']}/{custom_id}"
                if key in applied:
                    continue
                path = self.path_of(custom_id)
                if path is None or path not in files:
                    continue
                try:
                    if not stat.S_ISREG(os.stat(path).st_mode):
                        continue
                    digest = sha(Path(path).read_bytes())
                except (OSError, ValueError):
                    continue
                if digest[:16] != custom_id.split("-", 1)[1]:
                    continue  # the file changed since: the answer is for content no longer there
                status, message, deleted = files[path]
                if deleted or status == "approved" or (message or "").strip():
                    continue
                raise Violation(f"the service returned a result for {path} ({key}) in finished run "
                                f"{job['run_name']}, for content still on disk, and it was neither applied "
                                f"nor given a reason (status {status})")

    def check_attempts(self, current: dict[str, dict], applied: dict[str, tuple]) -> None:
        attempts = self._attempts()
        previous, self.attempts = self.attempts, attempts
        if not self.restored:
            new_keys = [k for k in applied if k not in self.applied]
            for path, n in attempts.items():
                grew = n - previous.get(path, 0)
                if grew <= 0:
                    continue
                ran = 0
                for key in new_keys:
                    if applied[key][0] != path or "/" not in key:
                        continue
                    job_id, custom_id = key.split("/", 1)
                    if custom_id in current.get(job_id, {}).get("lines", {}):
                        ran += 1
                if grew > ran:
                    raise Violation(f"{path}: attempts grew by {grew} but only {ran} request(s) for it ran "
                                    "(had a line in an output or error file)")

    def check_approved(self) -> None:
        """An approved file's metadata changes only by the user's hand (requeue --include-approved) or the
        library's (a rescan, a restored database)."""
        with self.connect() as conn:
            try:
                now = {r[0]: tuple(r[1:]) for r in conn.execute(
                    "SELECT file_path, ai_metadata_status, ai_metadata_json FROM files")}
            except sqlite3.OperationalError:  # objbatch never touched the database yet
                return
        before, self.approved = self.approved, {p: v for p, v in now.items() if v[0] == "approved"}
        if self.library_event or self.restored:
            return
        for path, value in before.items():
            if now.get(path) != value and self.touched_at.get(path, 0) < self.event_started:
                raise Violation(f"approved file {path} changed without a requeue: {value[0]} -> "
                                f"{(now.get(path) or ('gone',))[0]}")

    def check_key_in_files(self) -> None:
        needle = KEY.encode()
        for base in (self.runs, self.dir / "state"):
            if base.exists():
                for path in base.rglob("*"):
                    if path.is_file() and needle in path.read_bytes():
                        raise Violation(f"the API key is written in {path}")
        for suffix in ("", "-wal"):
            db = Path(f"{self.db}{suffix}")
            if db.exists() and needle in db.read_bytes():
                raise Violation("the API key is written in the database")


# ------------------------------------------------------------------ the runner


CHECKS = ("output", "copy", "reader", "outside", "paid_once", "budget", "claims", "results", "attempts", "key",
          "approved", "unfinished")


def replay_line(seed: int, events: int) -> str:
    return f"make simulate SEED={seed}" + (f" EVENTS={events}" if events != 24 else "")


def run_one(seed: int, events: int, emulator: Emulator, workdir: Path, verbose: bool = False,
            tolerate: tuple[str, ...] = ()) -> dict:
    """One sequence: {seed, violation (None or the text), events, outputs, count, seconds, tolerated}."""
    started = time.time()
    sequence = None
    violation = None
    try:
        sequence = Sequence(seed, events, emulator, workdir, verbose, tolerate)
        sequence.run()
    except Violation as exc:
        violation = str(exc)
    except Exception:
        violation = "the simulator itself failed:\n" + traceback.format_exc()
    finally:
        if sequence is not None and not verbose:
            shutil.rmtree(sequence.dir, ignore_errors=True)
    return {"seed": seed, "violation": violation, "events": sequence.events if sequence else [],
            "outputs": [str(o) for o in sequence.outputs] if sequence and violation else [],
            "count": len(sequence.events) if sequence else 0, "seconds": time.time() - started,
            "tolerated": sequence.tolerated if sequence else {},
            "tolerated_texts": sequence.tolerated_texts if sequence else []}


_worker: dict = {}


def _init_worker(workdir: str) -> None:
    _worker["emu"] = Emulator(Path(workdir))
    _worker["dir"] = Path(workdir)


def _work(args: tuple) -> dict:
    seed, events, tolerate = args
    return run_one(seed, events, _worker["emu"], _worker["dir"], False, tolerate)


def seeds_of(text: str) -> list[int]:
    """'N': 0..N-1; 'LOW-HIGH': LOW..HIGH."""
    if "-" in text:
        low, high = text.split("-", 1)
        return list(range(int(low), int(high) + 1))
    return list(range(int(text)))


def report(result: dict, events: int) -> str:
    lines = [f"VIOLATION seed {result['seed']}: {result['violation']}", "events:"]
    lines += [f"  {e}" for e in result["events"]]
    if result.get("outputs"):
        lines.append("the last event's commands:")
        lines += ["  " + o.replace("\n", "\n  ") for o in result["outputs"]]
    lines.append(f"replay: {replay_line(result['seed'], events)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="20", help="how many sequences (0..N-1), or a range LOW-HIGH")
    parser.add_argument("--seed", type=int, default=None, help="replay this one sequence, printing every event")
    parser.add_argument("--events", type=int, default=24, help="random events per sequence (default 24)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, each with its own emulator")
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop after this long and report the sequences that finished")
    parser.add_argument("--tolerate", action="append", default=[], choices=CHECKS,
                        help="count this invariant's violations instead of stopping (to hunt past a known bug)")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    os.environ.update(MISTRAL_API_KEY=KEY, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    workdir = Path(tempfile.mkdtemp(prefix="objbatch-sim-"))
    tolerate = tuple(args.tolerate)
    try:
        if args.seed is not None:
            _init_worker(str(workdir))
            result = run_one(args.seed, args.events, _worker["emu"], workdir, True, tolerate)
            print(report(result, args.events) if result["violation"] else
                  f"seed {args.seed}: {result['count']} events, no violation ({result['seconds']:.1f}s)"
                  + (f"; tolerated: {result['tolerated']}" if result["tolerated"] else ""))
            return 1 if result["violation"] else 0
        seeds = seeds_of(args.seeds)
        started = time.time()
        results = []
        deadline = started + args.minutes * 60 if args.minutes else float("inf")
        pool = multiprocessing.get_context("fork").Pool(args.workers, _init_worker, (str(workdir),),
                                                        maxtasksperchild=200)
        stopped = ""
        try:
            pending = pool.imap_unordered(_work, [(s, args.events, tolerate) for s in seeds])
            while len(results) < len(seeds):
                wait = min(600.0, deadline - time.time())
                if wait <= 0:
                    stopped = f" (stopped after {args.minutes:g} minutes)"
                    break
                try:
                    result = pending.next(timeout=wait)
                except multiprocessing.TimeoutError:
                    if time.time() < deadline:
                        done = {r["seed"] for r in results}
                        stopped = f" (no sequence ended for 10 minutes: a worker died or hung; unfinished seeds " \
                                  f"{sorted(set(seeds) - done)[:10]})"
                    else:
                        stopped = f" (stopped after {args.minutes:g} minutes)"
                    break
                results.append(result)
                if result["violation"]:
                    print(report(result, args.events), flush=True)
                if len(results) % 50 == 0:
                    print(f"simulate: {len(results)} of {len(seeds)} sequences, "
                          f"{sum(1 for r in results if r['violation'])} with a violation, "
                          f"{time.time() - started:.0f}s", file=sys.stderr, flush=True)
        finally:
            pool.terminate()
        elapsed = time.time() - started
        bad = sorted(r["seed"] for r in results if r["violation"])
        events = sum(r["count"] for r in results)
        tolerated: dict[str, int] = {}
        texts: dict[str, list[int]] = {}
        for r in results:
            for name, n in r["tolerated"].items():
                tolerated[name] = tolerated.get(name, 0) + n
            for text in r.get("tolerated_texts", []):
                texts.setdefault(text, []).append(r["seed"])
        for text, where in sorted(texts.items()):
            print(f"tolerated: {text} (seeds {', '.join(map(str, sorted(set(where))[:8]))})")
        print(f"simulate: {len(results)} sequences{stopped}, {events} events, {len(bad)} with a violation"
              + (f" (seeds {', '.join(map(str, bad))})" if bad else "")
              + (f", tolerated {tolerated}" if tolerated else "")
              + f"; {elapsed:.0f}s on {args.workers} workers: {events / elapsed:.1f} events/s, "
              f"{len(results) / elapsed * 60:.1f} sequences/min")
        return 1 if bad or len(results) < len(seeds) and not args.minutes else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
