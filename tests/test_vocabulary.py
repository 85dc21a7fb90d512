"""One vocabulary, click as designed (issue 19, items 3 and 4), in process with click's CliRunner: one flag per
concept (older spellings still work, hidden), every number through one type, every default written once for
make and click, one-line errors with their exit codes, and nothing done at import time."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
import tomllib

import click
import pytest
from click.testing import CliRunner

from conftest import ROOT, make
from objbatch import defaults
from objbatch.common import EXIT_TEMPFAIL, Failure, NotFinished, Number, cli


def commands() -> dict[str, click.Command]:
    """Every objbatch console script's click command, by its name (from pyproject.toml)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = {}
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        if module.startswith("objbatch."):
            entry = getattr(importlib.import_module(module), attr)
            found[name] = entry.command()
    return found


def options(command: click.Command) -> dict[str, click.Parameter]:
    return {param.name: param for param in command.params if param.name}


# ---------------------------------------------------------------- errors and exit codes

@cli("demo")
@click.option("--what", default="ok")
def demo(what: str) -> None:
    if what == "usage":
        raise Failure("--what is wrong; give another", 2)
    if what == "later":
        raise NotFinished("job j is still running; rerun later")
    if what == "bug":
        raise ValueError("a plain bug")
    if what == "ctrl-c":
        raise KeyboardInterrupt
    if what == "secret":
        raise Failure("key sk-0123456789abcdef leaked\nand a second line")


@pytest.mark.parametrize("what, code, line", [
    ("ok", 0, ""),
    ("usage", 2, "demo: error: --what is wrong; give another\n"),
    ("later", EXIT_TEMPFAIL, "demo: not finished: job j is still running; rerun later\n"),
    ("bug", 1, "demo: error: ValueError: a plain bug (rerun with --verbose for details)\n"),
    ("ctrl-c", 130, "demo: error: interrupted; rerun the same command to resume\n"),
])
def test_an_error_is_one_line_naming_the_command_with_its_exit_code(what, code, line):
    done = CliRunner().invoke(demo, ["--what", what], prog_name="demo")
    assert (done.exit_code, done.stderr) == (code, line)
    assert isinstance(Failure("x"), click.ClickException)


def test_verbose_adds_the_traceback_and_keeps_the_line_last():
    done = CliRunner().invoke(demo, ["--verbose", "--what", "bug"], prog_name="demo")
    assert done.exit_code == 1
    assert done.stderr.startswith("Traceback") and "ValueError: a plain bug" in done.stderr
    assert done.stderr.endswith("demo: error: ValueError: a plain bug (rerun with --verbose for details)\n")


def test_a_failure_line_masks_secrets_and_stays_one_line():
    from objbatch.common import SECRETS

    SECRETS.add("sk-0123456789abcdef")
    try:
        done = CliRunner().invoke(demo, ["--what", "secret"], prog_name="demo")
    finally:
        SECRETS.discard("sk-0123456789abcdef")
    assert done.stderr == "demo: error: key *** leaked\\x0aand a second line\n"


def test_a_usage_error_is_click_s_exit_2_and_version_help_come_from_the_command_class():
    runner = CliRunner()
    assert runner.invoke(demo, ["--bogus"], prog_name="demo").exit_code == 2
    version = runner.invoke(demo, ["--version"], prog_name="demo")
    assert version.exit_code == 0 and version.stdout.startswith("demo (objbatch) ")
    helped = runner.invoke(demo, ["-h"], prog_name="demo").stdout
    assert helped.index("--verbose") < helped.index("--what") < helped.index("--version") < helped.index("--help")
    assert "Exit codes:" in helped and "Examples:" in helped


# ---------------------------------------------------------------- import has no side effects

def test_importing_every_objbatch_module_changes_no_signal_handler_and_no_umask():
    probe = """
import importlib, json, os, pkgutil, signal
def state():
    handlers = {s: signal.getsignal(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)}
    mask = os.umask(0o022); os.umask(mask)
    return handlers, mask
os.umask(0o027)
before = state()
import objbatch
names = [m.name for m in pkgutil.walk_packages(objbatch.__path__, "objbatch.")]
for name in names:
    importlib.import_module(name)
after = state()
changed = [s.name for s in before[0] if before[0][s] != after[0][s]]
print(json.dumps([len(names), changed, oct(before[1]), oct(after[1])]))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    modules, changed, before, after = json.loads(done.stdout)
    assert modules > 20
    assert changed == [], f"importing objbatch changed signal handlers {changed}"
    assert before == after == "0o27"


def test_every_console_script_starts_through_the_launcher_which_makes_a_ctrl_c_while_loading_one_line():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    ours = {name: target for name, target in scripts.items() if target.startswith("objbatch")}
    assert ours and all(target == f"objbatch.launch:{name.replace('-', '_')}" for name, target in ours.items())
    probe = "import os, signal; from objbatch import launch; launch.starting(); os.kill(os.getpid(), signal.SIGINT)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "interrupted; rerun the same command to resume\n")


def test_files_made_by_a_command_follow_the_umask_read_when_writing(tmp_path):
    import os

    from objbatch.common import atomic_output

    old = os.umask(0o077)
    try:
        with atomic_output(str(tmp_path / "private.txt")) as out:
            out.write("x\n")
        os.umask(0o022)
        with atomic_output(str(tmp_path / "shared.txt")) as out:
            out.write("x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- numbers

@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "abc", "1e400"])
def test_number_refuses_what_is_not_a_number_in_range(text):
    with pytest.raises(click.BadParameter):
        Number(min=0).convert(text, None, None)


def test_a_whole_number_is_an_int_and_refuses_fractions():
    whole = Number(min=1, whole=True)
    assert whole.convert("3", None, None) == 3 and isinstance(whole.convert("3", None, None), int)
    for text in ("2.5", "3.0", "0", "many"):
        with pytest.raises(click.BadParameter):
            whole.convert(text, None, None)
    assert math.isclose(Number(0, 1).convert("0.5", None, None), 0.5)


def numeric(param: click.Parameter) -> bool:
    """A number by its type, or by its default (an option declared without a type takes any text)."""
    if isinstance(param.type, (click.FloatRange, click.IntRange)) or param.type in (click.INT, click.FLOAT):
        return True
    return isinstance(param, click.Option) and not param.is_flag and isinstance(param.default, (int, float)) \
        and not isinstance(param.default, bool)


def numeric_options() -> list[tuple[str, str]]:
    return [(name, param.opts[0]) for name, command in commands().items() for param in command.params
            if numeric(param)]


def test_every_numeric_option_of_every_command_is_a_number():
    found = numeric_options()
    assert len(found) > 15
    for name, flag in found:
        param = next(p for p in commands()[name].params if p.opts[0] == flag)
        assert isinstance(param.type, Number), f"{name} {flag} is {param.type!r}, not the shared Number type"


@pytest.mark.parametrize("name, flag", numeric_options())
def test_every_numeric_option_refuses_nan_and_negative_before_anything_runs(name, flag):
    param = next(p for p in commands()[name].params if p.opts[0] == flag)
    huge = ("99999999999999999999999",) if param.type.whole else ()  # more than SQLite stores: it crashed
    for value in ("nan", "-1", *huge):
        done = CliRunner().invoke(commands()[name], [flag, value], prog_name=name)
        assert done.exit_code == 2, (name, flag, value, done.output)
        assert "Invalid value" in done.stderr and flag in done.stderr, done.stderr


@pytest.mark.parametrize("variable", ["OBJBATCH_MIN_POLL", "OBJBATCH_RETRY_SECONDS"])
@pytest.mark.parametrize("text", ["nan", "-1", "inf", "1e309", "abc"])
def test_every_wait_read_from_the_environment_refuses_what_is_not_a_number_of_seconds(monkeypatch, variable, text):
    from objbatch import config, polling
    from objbatch.common import Failure

    monkeypatch.setenv(variable, text)
    read = polling.min_poll if variable == "OBJBATCH_MIN_POLL" else config.retry_seconds
    with pytest.raises(Failure, match=f"{variable} must be a number of seconds .*unset it for the default"):
        read()


# ---------------------------------------------------------------- defaults written once

def test_make_and_click_take_their_defaults_from_the_one_file():
    resolved = dict(line.split("=", 1) for line in make("-s", "vars").stdout.splitlines())
    assert defaults.VALUES == {name: resolved[name] for name in defaults.VALUES}
    shared = {"--model": defaults.MODEL, "--poll": defaults.POLL, "--timeout": defaults.TIMEOUT,
              "--timeout-hours": defaults.TIMEOUT_HOURS, "--max-attempts": defaults.MAX_ATTEMPTS,
              "--max-in-flight": defaults.MAX_IN_FLIGHT, "--db": defaults.DB, "--runs": defaults.RUNS}
    seen = set()
    for name, command in commands().items():
        for param in command.params:
            flag = param.opts[0]
            if flag in shared and param.default is not None and name != "batch-cancel":
                assert param.default == shared[flag], f"{name} {flag} defaults to {param.default!r}"
                seen.add(flag)
    assert seen == set(shared), set(shared) - seen
    text = (ROOT / "Makefile").read_text()
    for name in defaults.VALUES:
        assert f"{name} = $(DEFAULT_{name})##" in text, f"the Makefile does not take {name} from defaults.mk"


def test_make_help_shows_the_default_values_not_their_names():
    shown = make().stdout
    assert f"MODEL={defaults.MODEL} " in shown and "DEFAULT_" not in shown


# ---------------------------------------------------------------- one flag per concept

def test_the_run_is_run_everywhere_and_the_old_spellings_still_work_hidden():
    with_run = {name: c for name, c in commands().items() if "run_name" in options(c)}
    assert {"select-pending", "build-jsonl", "batch-submit", "validate", "apply-sql", "batch-cancel"} <= set(with_run)
    for name, command in with_run.items():
        helped = CliRunner().invoke(command, ["--help"], prog_name=name).stdout
        assert "--run " in helped or "--run\n" in helped, name
        assert "--claim" not in helped and "--run-name" not in helped, name
        for spelling in ("--run", "--claim", "--run-name"):
            ctx = command.make_context(name, [spelling, "r1", *required_arguments(name)], resilient_parsing=True)
            assert ctx.params["run_name"] == "r1", (name, spelling)


def required_arguments(name: str) -> list[str]:
    return {"show": ["x"]}.get(name, [])


def test_at_most_n_is_max_everywhere_with_limit_hidden():
    with_max = {name: c for name, c in commands().items() if "limit" in options(c)}
    assert {"select-pending", "review", "export-metadata", "stats", "report"} <= set(with_max)
    for name, command in with_max.items():
        assert options(command)["limit"].opts[:2] == ["-n", "--max"], name
        helped = CliRunner().invoke(command, ["--help"], prog_name=name).stdout
        assert "--limit" not in helped, name
        for spelling in ("-n", "--max", "--limit"):
            ctx = command.make_context(name, [spelling, "7"], resilient_parsing=True)
            assert ctx.params["limit"] == 7, (name, spelling)


def test_an_error_names_an_option_as_help_does_not_by_its_hidden_old_spelling():
    """review -n -1 said "Invalid value for '-n' / '--max' / '--limit'": the alias --help hides."""
    with_max = {name: c for name, c in commands().items() if "limit" in options(c)}
    for name, command in with_max.items():
        done = CliRunner().invoke(command, ["--limit", "-1"], prog_name=name)
        assert done.exit_code == 2 and "Invalid value for '-n' / '--max': -1" in done.output, (name, done.output)
        assert "--limit" not in done.output, name


@pytest.mark.parametrize("name", ["run-20261129-080000-1a2b", "a.b_c-D9", ".hidden", "semi;colon", "sl/ash", "é"])
def test_make_and_the_commands_accept_the_same_run_names(name):
    from objbatch.common import check_run_name

    by_make = make("-s", "vars", f"NAME={name}").returncode == 0
    try:
        by_code = check_run_name(name) == name
    except Failure:
        by_code = False
    assert by_make == by_code, (name, by_make, by_code)


def test_a_new_run_name_is_a_valid_one():
    from objbatch.common import check_run_name
    from objbatch.runs import new_name

    assert check_run_name(new_name("cron")).startswith("cron-")
