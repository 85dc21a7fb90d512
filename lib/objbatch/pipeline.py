"""The pipeline contract between make and batch-run.

make is the one definition of the chain: its stage targets ($(RUNS)/NAME/select.jsonl ... applied.json)
name each stage's command and arguments, and make decides what is missing or stale. batch-run asks it
(`make -n`) and runs the printed commands in its own process (Python and the SDK start once). It runs only
what this module recognises, and refuses anything else in one line rather than guessing:

- a stage command, as make's $(BIN) names it (STAGES), with options that command declares;
- `mkdir -p -m 700 FOLDER...` (a run's folder: made private, as objbatch's own folders are);
- words that are plain or single-quoted, as the Makefile's `shq` quotes every value. Any other shell syntax
  (an environment assignment, `||`, `;`, a pipe, a redirection, `$`, double quotes, globs) is refused:
  that line is for a shell, and batch-run has none.

tests/test_pipeline_contract.py runs make -n for every stage target with odd values and holds every line
to this contract.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from importlib import metadata as entry_points
from pathlib import Path

import click

from . import launch
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ROOT, Failure, log, private_folder
from .make_vars import make, make_env

# The stage commands, in the order make runs them. Only these run inside batch-run.
STAGES = ("select-pending", "build-jsonl", "batch-submit", "batch-wait", "batch-fetch", "validate", "apply-sql")
PRIVATE_MKDIR = ["mkdir", "-p", "-m", "700"]

# One shell word's pieces, in the subset batch-run reads: blanks, a single-quoted string, a run of characters
# that mean nothing to a shell, a backslash-escaped character (backslash-newline: a continued line), a line
# end; anything else is shell syntax.
_PIECE = re.compile(r"(?P<blank>[ \t]+)|'(?P<quoted>[^']*)'|(?P<plain>[A-Za-z0-9_./=:,+@%^-]+)|"
                    r"\\(?P<escaped>(?s:.))|(?P<newline>\n)|(?P<other>(?s:.))")


@dataclass
class Stage:
    """One line make printed, checked: its argv, and the click command that runs it (None: the mkdir)."""

    argv: list[str]
    command: click.Command | None

    @property
    def name(self) -> str:
        return Path(self.argv[0]).name


def due(target: str, assignments: list[str]) -> list[Stage]:
    """The stages make would run now to bring `target` up to date, in order, each checked. The project's
    venv is brought up to date first, for real, as `make batch` does before it starts batch-run (make -n
    would otherwise print the venv's own recipe, which is for a shell)."""
    if not up_to_date("venv"):
        log("batch-run: .venv is older than pyproject.toml; rebuilding it first, as make batch does (about a minute)")
        make(["venv"])
    return [check(argv) for argv in commands(make(["-n", target, *assignments]))]


def up_to_date(target: str) -> bool:
    """Whether make has nothing to do for `target` (make -q)."""
    return subprocess.run(["make", "-q", "-s", "--no-print-directory", "-C", str(ROOT), target],
                          capture_output=True, env=make_env()).returncode == 0


def commands(text: str) -> list[list[str]]:
    """The commands in make -n's output, as argv lists: one per line (a backslash-newline continues one).
    Shell syntax outside the subset the Makefile's recipes use is refused, naming the line."""
    found: list[list[str]] = []
    words: list[str] = []
    word: str | None = None
    for match in _PIECE.finditer(text):
        kind, value = match.lastgroup, match.group(match.lastgroup or 0)
        if kind == "other":
            raise _refused(text, match.start(), f"shell syntax ({value!r}) batch-run does not run")
        if kind == "escaped" and value == "\n":  # a continued line: nothing, as in a shell
            continue
        if kind in ("blank", "newline"):
            if word is not None:
                words.append(word)
                word = None
            if kind == "newline" and words:
                found.append(words)
                words = []
            continue
        word = (word or "") + value
    if word is not None:
        words.append(word)
    if words:
        found.append(words)
    return found


def check(argv: list[str]) -> Stage:
    """The stage an argv is, if it is one this contract knows: a stage command with options it declares,
    or the private mkdir. Anything else is refused in one line."""
    name = Path(argv[0]).name
    if argv[:4] == PRIVATE_MKDIR and len(argv) > 4:
        return Stage(argv, None)
    if "=" in argv[0] or name not in STAGES:
        raise Failure(f"make printed a command batch-run does not run: {' '.join(argv)[:200]} (a stage recipe in "
                      f"the Makefile must be one of {', '.join(STAGES)}, or {' '.join(PRIVATE_MKDIR)}; see "
                      "docs/design.md, 'The pipeline contract')")
    command = load(name)
    context = click.Context(command, info_name=name)
    try:
        _, extra, _ = command.make_parser(context).parse_args(argv[1:])
    except click.UsageError as exc:
        problem = exc.format_message().rstrip(".")
        raise Failure(f"make printed {name} with {problem[:1].lower()}{problem[1:]}; the Makefile's stage recipe "
                      "and the command disagree", EXIT_USAGE) from None
    if extra:
        raise Failure(f"make printed {name} with extra arguments {' '.join(extra)!r}; the Makefile's stage recipe "
                      "and the command disagree", EXIT_USAGE)
    return Stage(argv, command)


def load(name: str) -> click.Command:
    """A stage's click command, found as its console script is (pyproject.toml names its module)."""
    found = entry_points.entry_points(group="console_scripts", name=name)
    scripts = [ep for ep in found if ep.dist is None or ep.dist.name == "objbatch"]
    if not scripts:
        raise Failure(f"command {name} is not installed in this Python; run make venv")
    entry = scripts[0].load()
    command = entry.command() if isinstance(entry, launch.Command) else entry
    if not isinstance(command, click.Command):
        raise Failure(f"console script {name} is not a click command; check pyproject.toml")
    return command


def run(stage: Stage) -> int:
    """One stage, in this process. Its exit status."""
    if stage.command is None:
        for folder in stage.argv[len(PRIVATE_MKDIR):]:
            private_folder(folder, "run folder")
        return EXIT_OK
    try:
        stage.command.main(args=stage.argv[1:], prog_name=stage.name, standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:  # Ctrl-C while click set the stage up, before the stage's own handler
        raise KeyboardInterrupt from None
    return EXIT_OK


def _refused(text: str, at: int, what: str) -> Failure:
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    line = text[start:end if end >= 0 else len(text)].strip()
    return Failure(f"make printed {what}: {line[:200]} (a stage recipe in the Makefile must be one command with "
                   "single-quoted values; see docs/design.md, 'The pipeline contract')")
