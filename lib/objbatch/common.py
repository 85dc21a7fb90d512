"""Helpers every command shares: errors and exit codes, JSONL streams, atomic files, progress lines."""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import re
import shlex
import signal
import stat
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import click

from . import defaults

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: "not finished yet, run me again later"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
INTERRUPTED = "interrupted; rerun the same command to resume"

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"


class Failure(click.ClickException):
    """An expected failure: one line on stderr, `<command>: error: <message>`, then exit `code` (click's
    exit_code). Raised anywhere below a command; click shows it (its own show) and exits."""

    label = "error"

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code
        self.command_name: str | None = None  # the command that failed, set by ObjbatchCommand

    @property  # click reads it as the exit status (a class variable there: each Failure has its own)
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code

    def show(self, file: IO[Any] | None = None) -> None:
        name = self.command_name or os.path.basename(sys.argv[0] or "objbatch")
        line = f"{name}: {self.label}: {printable(scrub(self.format_message()), newlines=False)}"
        click.echo(line, file=file, err=file is None)


class NotFinished(Failure):
    """Work is still running elsewhere (or the service is away for now); exit 75 so cron and scripts know
    to come back later. `label` replaces "error" in the printed line: it is not a failure."""

    def __init__(self, message: str, label: str = "not finished"):
        super().__init__(message, EXIT_TEMPFAIL)
        self.label = label


# The rule make checks too (defaults.mk): RUN_NAME_CHARS, not starting with '.', at most RUN_NAME_MAX.
RUN_NAME = re.compile("[{first}][{chars}]{{0,{rest}}}".format(
    first=re.escape(defaults.RUN_NAME_CHARS.replace(".", "")), chars=re.escape(defaults.RUN_NAME_CHARS),
    rest=defaults.RUN_NAME_MAX - 1))


def check_run_name(name: str) -> str:
    """Run names become folder names and make targets: letters, digits, '.', '_', '-', at most 64, no leading
    '.'. Anything else is refused before any file or database is touched."""
    if not RUN_NAME.fullmatch(name or ""):
        raise Failure(f"run name {name!r} is not allowed: use letters, digits, '.', '_' and '-' (at most "
                      f"{defaults.RUN_NAME_MAX}, not starting with '.')", EXIT_USAGE)
    return name


# Secrets registered here are masked in every message a command prints (config registers the API key).
SECRETS: set[str] = set()


URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")


def scrub(text: str) -> str:
    """The text without registered secrets, nor a URL's user name and password (http://user:pass@host)."""
    for secret in SECRETS:
        if len(secret) >= 8:  # a real key; a placeholder like "local" would mangle every word
            text = text.replace(secret, "***")
    return URL_USERINFO.sub(r"\1***@", text)


# What a terminal would act on instead of showing: C0 controls (ESC starts CSI/OSC sequences: clear the
# screen, set the window title, plant a hyperlink), DEL, C1 controls (0x9b is a one-byte CSI) and the
# bidirectional overrides that reorder what is shown. Every text output escapes them (see printable).
# Lone surrogates too: a name whose bytes are not UTF-8 reaches Python from argv as \udc80-\udcff
# (surrogateescape), and no UTF-8 stream can write it; it is shown as the byte it stands for (\xff).
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
CONTROLS_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, newlines: bool = True) -> str:
    """Text safe to show on a terminal: control characters written as \\x1b, \\u202e. Lines are kept
    (newlines=True) for a message or a table already composed; a value put in a line escapes them too."""
    return (CONTROLS_BUT_NEWLINE if newlines else CONTROLS).sub(_escaped, text)


def printable_values(value: Any) -> Any:
    """Every string in a row (dicts and lists walked) made printable, line breaks included: a value from
    the database or the service cannot start a line of its own, nor move the cursor."""
    if isinstance(value, str):
        return printable(value, newlines=False)
    if isinstance(value, dict):
        return {key: printable_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_values(item) for item in value]
    return value


SQLITE_MAX = 2**63 - 1


class Number(click.FloatRange):
    """Every number an option takes: in its range, a real one (click's FloatRange lets 'nan' and 'inf'
    through) and, with whole=True, a whole one (returned as an int)."""

    def __init__(self, min: float | None = None, max: float | None = None, whole: bool = False) -> None:
        super().__init__(min, max)
        self.whole = whole
        # a whole number is at most what SQLite stores (2**63 - 1): a larger one is a usage error, not a crash
        self.whole_range = click.IntRange(None if min is None else int(min), SQLITE_MAX if max is None else int(max))
        if whole:
            self.name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if self.whole:  # an int is finite: click's own check, and its message ('2.5' is not a valid integer)
            return self.whole_range.convert(value, param, ctx)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


# What --help says about the environment: every variable a command reads, one line each.
ENVIRONMENT = {
    "MISTRAL_API_KEY": "the API key (else the keyring entry objlib-mistral/api_key)",
    "MISTRAL_SERVER_URL": "the service (default https://api.mistral.ai; a mistral-emulator's URL offline); "
                          "http:// only to this machine",
    "OBJBATCH_ALLOW_HTTP": "1: allow an http:// MISTRAL_SERVER_URL on another machine (a proxy you trust)",
    "OBJBATCH_MODEL": "the model when --model is not given",
    "OBJBATCH_RETRY_SECONDS": "how long failing service calls are retried (default 900)",
    "OBJBATCH_MIN_POLL": "the shortest wait between status checks (default 2; lower only for the emulator)",
    "OBJBATCH_INLINE_MAX_REQUESTS": "the default of --inline-max-requests",
    "OBJBATCH_REASONING_EFFORT": "the default of --reasoning-effort (unset: the model's own)",
    "OBJBATCH_TIMEOUT_HOURS": "the default of --timeout-hours (1-168)",
    "OBJBATCH_MAX_REQUESTS_PER_JOB": "the default of --max-requests-per-job (at most 100,000)",
    "OBJBATCH_MAX_BYTES_PER_JOB": "the default of --max-bytes-per-job (at most 512 MB)",
    "XDG_STATE_HOME": "without --db, job records go to $XDG_STATE_HOME/objbatch/jobs (~/.local/state)",
}
SERVICE_ENV = ("MISTRAL_API_KEY", "MISTRAL_SERVER_URL", "OBJBATCH_ALLOW_HTTP", "OBJBATCH_RETRY_SECONDS")
EXIT_CODES = {EXIT_OK: "done", EXIT_FAILED: "failed (one line on stderr says why and what to do)",
              EXIT_USAGE: "usage error", EXIT_INTERRUPTED: "interrupted (rerun the same command to resume)"}
NOT_FINISHED = {EXIT_TEMPFAIL: "not finished: a job is still running or the service is away; rerun later"}


def epilog(examples: Iterable[str], env: Iterable[str] = (), exits: dict[int, str] | None = None) -> str:
    """The end of a command's --help: examples, the environment variables it reads, its exit codes."""
    codes = {**EXIT_CODES, **(exits or {})}
    names = list(env)
    width = max(map(len, names), default=0)
    text = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples)
    text += "\n\n\b\nEnvironment:\n" + ("\n".join(f"  {n:<{width}}  {ENVIRONMENT[n]}" for n in names)
                                          or "  none read")
    return text + "\n\n\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {codes[code]}" for code in sorted(codes))


def _show_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    from . import __version__

    if value and not ctx.resilient_parsing:
        click.echo(f"{ctx.info_name} (objbatch) {__version__}")
        ctx.exit()


def _remember_verbose(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    ctx.meta["objbatch.verbose"] = value


class ObjbatchCommand(click.Command):
    """An objbatch command: -h/--help, --verbose (listed first), --version (after the command's own options),
    a --help epilog with examples, environment and exit codes, and every error as one line with its exit
    code (a Failure as it is; Ctrl-C as 130; anything unexpected as one line naming its type, exit 1)."""

    def __init__(self, *args: Any, examples: Iterable[str] = (), env: Iterable[str] = (),
                 exits: dict[int, str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", epilog(examples, env, exits))
        kwargs["context_settings"] = {"help_option_names": ["-h", "--help"], **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)
        self.params.insert(0, click.Option(["--verbose", "-v"], is_flag=True, expose_value=False, is_eager=True,
                                           callback=_remember_verbose, help="Show tracebacks and debug detail on errors."))
        self.params.append(click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True,
                                        callback=_show_version, help="Show the version and exit."))

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except Failure as exc:  # raised by an option's own check, before the command runs
            exc.command_name = exc.command_name or info_name
            raise

    def invoke(self, ctx: click.Context) -> Any:
        started()
        verbose = ctx.meta.get("objbatch.verbose", False)
        try:
            return super().invoke(ctx)
        except Failure as exc:
            raise _named(exc, ctx, verbose) from None
        except KeyboardInterrupt:
            raise _named(Failure(INTERRUPTED, EXIT_INTERRUPTED), ctx, verbose) from None
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # anything unexpected still gets one readable line
            raise _named(unexpected(exc), ctx, verbose) from None


def _named(failure: Failure, ctx: click.Context, verbose: bool) -> Failure:
    """The failure, naming the command; with --verbose the traceback being handled is printed first."""
    if verbose:
        click.echo(printable(scrub(traceback.format_exc()).rstrip()), err=True)
    failure.command_name = failure.command_name or ctx.info_name
    return failure


def unexpected(exc: Exception) -> Failure:
    """An exception no code meant to raise, as one line (a Ctrl-C another error wrapped is an interruption)."""
    if _interrupted(exc):
        return Failure(INTERRUPTED, EXIT_INTERRUPTED)
    message = f"{type(exc).__name__}: {exc} (rerun with --verbose for details)"
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == 8:  # SQLITE_READONLY, after ledger's own check
        message = (f"the database cannot be written ({exc}): it, or its folder, is read-only; make it "
                   "writable, or copy it to a folder that can be written")
    return Failure(message, EXIT_FAILED)


def started() -> None:
    """A command starts running: a closed stdout ends it quietly (SIGPIPE), and a Ctrl-C is remembered
    (see _on_ctrl_c) and becomes one line, exit 130."""
    global _ctrl_c_seen
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _ctrl_c_seen = False
    signal.signal(signal.SIGINT, _on_ctrl_c)


def cli(*examples: str, env: Iterable[str] = (), exits: dict[int, str] | None = None,
        **context_settings: Any) -> Callable[[Callable[..., Any]], ObjbatchCommand]:
    """Declare a command (an ObjbatchCommand) with its --help examples, the environment variables it reads
    and its exit codes beyond the usual ones."""
    return click.command(cls=ObjbatchCommand, examples=examples, env=env, exits=exits,
                         context_settings=context_settings)


_ctrl_c_seen = False


def _on_ctrl_c(*_: object) -> None:
    """Python's own handler, remembering that it ran: a library may turn the KeyboardInterrupt into an error
    of its own that does not chain it (pydantic-core building a schema; make simulate SEED=211)."""
    global _ctrl_c_seen
    _ctrl_c_seen = True
    raise KeyboardInterrupt


def _interrupted(exc: BaseException) -> bool:
    """A Ctrl-C that another exception wrapped (Python 3.11 wraps one that lands while a class is being made,
    as when the SDK is first imported, in a RuntimeError), or that a library swallowed into its own error."""
    if _ctrl_c_seen:
        return True
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def log(message: str) -> None:
    """A progress or summary line for people: always stderr, never stdout; control characters escaped,
    secrets masked."""
    click.echo(printable(scrub(message)), err=True)


# ---------------------------------------------------------------- JSONL

MAX_LINE = 16 << 20  # characters: a request holds at most one transcript, a result line is cut at 4 MiB


def read_jsonl(stream: IO[str], what: str = "input") -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) lazily; blank lines skipped; a bad line is a Failure naming it."""
    for lineno, value, _ in read_jsonl_lines(stream, what):
        yield lineno, value


def read_jsonl_lines(stream: IO[str], what: str = "input") -> Iterator[tuple[int, Any, str]]:
    """As read_jsonl, with each line's text too (to pass it on without encoding it again)."""
    if stream.isatty():  # a bare command at a prompt would otherwise wait without a word
        log(f"reading {what} lines from the terminal; end with Ctrl-D (or give a file, see --help)")
    for lineno, line in enumerate(iter(lambda: stream.readline(MAX_LINE + 1), ""), 1):
        if len(line) > MAX_LINE:  # never read whole: a stage's lines are far smaller
            raise Failure(f"{what} line {lineno} is longer than {MAX_LINE:,} characters; it is no {what} line of "
                          "objbatch's: check the input")
        text = line.strip()
        if not text:
            continue
        try:
            yield lineno, json.loads(text), text
        except json.JSONDecodeError as exc:
            raise Failure(f"{what} line {lineno} is not valid JSON ({exc.msg}); fix or remove that line") from None


def bounded_lines(handle: IO[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """(line, its length) for each line of a binary file, holding at most `limit` + 1 bytes of a line in
    memory: a longer line comes as (its first `limit` bytes, its whole length), the rest read past."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        size = len(line)
        if size > limit and not line.endswith(b"\n"):
            while True:
                rest = handle.readline(1 << 20)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            line = line[:limit]
        yield line, size


def load_schema(name: str) -> dict[str, Any]:
    """One of the contract files in schemas/ (they live in the clone, beside lib/), each a JSON object."""
    try:
        with open(SCHEMAS / name, encoding="utf-8") as handle:
            contract = json.load(handle)
    except FileNotFoundError:
        raise Failure(f"{SCHEMAS / name} is missing: objbatch runs from its clone (make venv, or pip install -e "
                      "the clone), not from a copy installed without schemas/") from None
    if not isinstance(contract, dict):
        raise Failure(f"{SCHEMAS / name} is not a JSON object: restore it from the clone (git checkout schemas/)")
    return contract


def count(n: int, noun: str) -> str:
    """'1 file', '2 files'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# JSON escapes C0 controls itself; these it would write raw (with ensure_ascii=False), and a terminal acts on them.
RAW_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def dumps(obj: Any, **options: Any) -> str:
    """JSON text, UTF-8 as it is except the characters a terminal would act on (\\u009b, \\u202e)."""
    text = json.dumps(obj, ensure_ascii=False, **({"separators": (",", ":")} | options))
    return RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if RAW_IN_JSON.search(text) else text


def write_jsonl(records: Iterable[Any], out: IO[str]) -> int:
    """Write records one per line (flushed one by one on stdout, so a pipe sees each at once). Returns the
    count."""
    flush = out is sys.stdout
    written = 0
    for record in records:
        out.write(dumps(record) + "\n")
        if flush:
            out.flush()
        written += 1
    return written


def umask() -> int:
    """The process's umask, read when a file is made (never at import: importing a module changes nothing).
    Linux shows it in /proc/self/status; elsewhere it is set and set back, the only way to read it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


# Folders objbatch made for itself in this process (a run's folder): what it writes there is 0600 and never
# goes through a symbolic link. See private_folder.
PRIVATE: set[str] = set()


@contextmanager
def atomic_output(path: str | None) -> Iterator[IO[str]]:
    """stdout for None or '-', else a text file that appears complete or not at all (see atomic_writer).
    A file the user names keeps the usual rule: through the user's own symlink, the existing file's mode,
    else the umask's. In a private folder (a run's), it is 0600 and a symlink there is replaced, never
    followed."""
    if path is None or path == "-":
        yield sys.stdout
        return
    if not path.strip():
        raise Failure("-o needs a file name (or - for stdout)", EXIT_USAGE)
    private = os.path.dirname(os.path.abspath(path)) in PRIVATE
    if not private and os.path.islink(path) and os.lstat(path).st_uid not in (os.getuid(), 0):
        raise Failure(f"-o {path} is a symbolic link another user made (in a shared folder like /tmp, a trap); "
                      "objbatch does not follow it: give another file name", EXIT_USAGE)
    try:
        mode = (os.lstat if private else os.stat)(path).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise Failure(f"-o {path} is a folder; give a file name in it", EXIT_USAGE)
    if mode is not None and not stat.S_ISREG(mode) and not private:  # /dev/null, /dev/stdout, a named pipe
        with open(path, "w", encoding="utf-8") as special:
            yield special
        return
    if private:
        target, file_mode = Path(os.path.abspath(path)), 0o600
    else:
        target = Path(os.path.realpath(path))  # through a symlink: the link stays, its file is replaced
        file_mode = mode & 0o7777 if mode is not None else 0o666 & ~umask()
    try:
        with atomic_writer(target, file_mode) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8")
            yield text
            text.flush()
            text.detach()
    except OSError as exc:
        if exc.filename is None or Path(exc.filename).parent != target.parent:
            raise
        raise Failure(f"cannot write {path}: {exc.strerror}; check the folder exists and can be written") from None


@contextmanager
def atomic_writer(path: Path, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """A binary handle whose file appears at `path` complete (fsynced, renamed) or, on error, not at all.
    The rename replaces whatever is at `path` (a planted symlink included) and never writes through it;
    the file is `mode` (0600: objbatch's files hold the library's text), missing folders 0700."""
    make_folders(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_folders(path: Path) -> None:
    """Each missing folder of `path` made 0700 (mkdir never follows a symlink in the last place)."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass


def private_folder(path: str | Path, what: str, link_ok: bool = False) -> Path:
    """A folder objbatch writes into, made 0700 if missing. Like ssh with a loose ~/.ssh, one that another
    user owns or can write to is refused, as is a symlink (for RUNS, `link_ok`: a link of the user's own
    to a folder of the user's own). An own folder readable by others is made 0700 (`what` is a run's)."""
    folder = Path(os.path.abspath(path))
    make_folders(folder)
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode):
        if not link_ok or info.st_uid != os.getuid():
            raise Failure(f"{what} {folder} is a symbolic link; objbatch writes only into real folders of yours: "
                          "remove the link (its run is rebuilt from the database)")
        info = os.stat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise Failure(f"{what} {folder} is not a folder; move it away")
    if info.st_uid != os.getuid():
        raise Failure(f"{what} {folder} belongs to another user (uid {info.st_uid}); objbatch writes only into "
                      "folders of yours: choose another RUNS")
    if info.st_mode & 0o022:
        raise Failure(f"{what} {folder} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                      f"fix it with: chmod go-w {shlex.quote(str(folder))}")
    if not link_ok and info.st_mode & 0o077:
        os.chmod(folder, 0o700)  # a run folder of an older objbatch (0755): its files hold the library's text
    PRIVATE.add(str(folder))
    return folder


def append_private(path: Path, line: str) -> None:
    """Append a line to a log only this user can read (0600), never through a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise Failure(f"cannot write {path}: {exc.strerror} (a symlink there is not followed); remove it") from None
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_json_file(path: str | Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise Failure(f"{what} {path} does not exist; check the path") from None
    except json.JSONDecodeError as exc:
        raise Failure(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or regenerate it") from None


def now_iso() -> str:
    """UTC in the library's format, YYYY-MM-DDTHH:MM:SS.fff."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


class Progress:
    """A live line on a terminal, a plain line per change otherwise (cron logs)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._last = ""

    def update(self, line: str, changed_key: str) -> None:
        line = printable(line, newlines=False)
        if self.live:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        elif changed_key != self._last:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last = changed_key

    def done(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def state_dir() -> Path:
    """Where durable records live when no run folder is given: $XDG_STATE_HOME/objbatch."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "objbatch"


def kill_point(name: str) -> None:
    """Fault-injection hook for the crash tests: SIGKILL this process at the named point when
    OBJBATCH_KILL_AT names it (optionally 'name:N' for the Nth time the point is reached). OBJBATCH_STOP_AT
    stops it there instead (SIGSTOP): a test holds it at that point, does something else, then continues it."""
    for variable, sent in (("OBJBATCH_KILL_AT", signal.SIGKILL), ("OBJBATCH_STOP_AT", signal.SIGSTOP)):
        wanted = os.environ.get(variable, "")
        if not wanted or wanted.split(":")[0] != name:
            continue
        count = _kill_counts[variable, name] = _kill_counts.get((variable, name), 0) + 1
        if ":" not in wanted or int(wanted.split(":")[1]) == count:
            os.kill(os.getpid(), sent)


_kill_counts: dict[tuple[str, str], int] = {}


@contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on `path` (released when the process dies, even by SIGKILL). Yields whether it
    was obtained: with wait=False a lock held elsewhere yields False at once."""
    make_folders(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise Failure(f"cannot open the lock {path}: {exc.strerror} (a symlink there is not followed); "
                      "remove it") from None
    with os.fdopen(fd, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
