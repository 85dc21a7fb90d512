"""The project's shape and conventions: two packages under lib/, every command with --version and a --help
that has examples, environment and exit codes, make lint clean, and the README's hand transcript working
when typed as shown."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import BIN, ROOT, invoke, make

LIB = ROOT / "lib"
COMMANDS = sorted(p.name for p in (ROOT / "bin").iterdir() if not p.name.startswith("_"))


def imports(package: Path) -> dict[Path, set[str]]:
    """Every module of a package and the top-level names of what it imports (relative imports excluded)."""
    found = {}
    for module in package.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[module] = names
    return found


def test_lib_holds_the_product_and_the_offline_world_apart():
    packages = sorted(p.name for p in LIB.iterdir() if (p / "__init__.py").exists())
    assert packages == ["mistral_emulator", "objbatch"]
    servers = {"http.server", "socketserver", "wsgiref.simple_server", "mistral_emulator"}
    for module, names in imports(LIB / "objbatch").items():
        found = {n for n in names if any(n == s or n.startswith(s + ".") for s in servers)}
        assert not found, f"{module.name} imports {found}: the product must not start or import a server"
    for module, names in imports(LIB / "mistral_emulator").items():
        assert not any(n == "objbatch" or n.startswith("objbatch.") for n in names), \
            f"{module.name} imports objbatch: the emulator shares only schemas/ with the product"


def product_imports(module: Path) -> set[str]:
    """The objbatch modules a module of the product imports, by full name (relative imports resolved; a name
    imported from a package counts as the module of that name)."""
    package = list(module.relative_to(LIB).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] if node.level else [])
            source = ".".join(filter(None, (base, node.module)))
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "objbatch" or name.startswith("objbatch.")}


def test_commands_sit_over_the_core_and_never_import_each_other():
    """style.md 12: a command parses its options and calls the core; shared logic lives in a core module
    named for what it owns, never in the command that needed it first."""
    commands = LIB / "objbatch" / "commands"
    scripts = re.findall(r'^[a-z-]+ = "objbatch\.launch:([a-z_]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert sorted(scripts) == sorted(p.stem for p in commands.glob("*.py") if p.name != "__init__.py"), \
        "every command module is a console script (started by objbatch.launch), and every one is in commands/"
    for module in sorted((LIB / "objbatch").rglob("*.py")):
        wrong = sorted(name for name in product_imports(module) if name.startswith("objbatch.commands."))
        if module.parent == commands:
            assert not wrong, f"command {module.name} imports command {wrong[0]}: move what they share into the core"
        else:
            assert not wrong, f"core module {module.name} imports command {wrong[0]}: the core never needs a command"

def test_every_console_script_has_a_launcher_in_bin():
    text = (ROOT / "pyproject.toml").read_text()
    scripts = re.findall(r'^([a-z-]+) = "(?:objbatch|mistral_emulator)\.', text, re.M)
    assert sorted(scripts) == COMMANDS
    template = (ROOT / "bin" / "stats").read_text().replace("stats", "{name}")
    for command in COMMANDS:  # every launcher is the same few lines: the one run below stands for all
        assert (ROOT / "bin" / command).read_text() == template.format(name=command), command
        assert os.access(ROOT / "bin" / command, os.X_OK), command
    launched = subprocess.run([str(ROOT / "bin" / "stats"), "--version"], capture_output=True, text=True, timeout=60)
    assert launched.returncode == 0 and launched.stdout.startswith("stats (objbatch) "), launched.stderr


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """Every command's --help, asked once (in process: the click command its console script names)."""
    answers = {command: invoke(command, "--help") for command in COMMANDS}
    for command, answer in answers.items():
        assert answer.exit_code == 0, (command, answer.stderr)
    return {command: answer.stdout for command, answer in answers.items()}


def test_every_command_has_version_and_a_help_with_example_environment_and_exit_codes(helps):
    readme = (ROOT / "README.md").read_text()
    for command in COMMANDS:
        version = invoke(command, "--version")
        assert version.exit_code == 0, (command, version.stderr)
        assert re.fullmatch(rf"{command}( \(objbatch\))? \d+\.\d+\.\d+\n", version.stdout), version.stdout
    for command, text in helps.items():
        assert text.startswith(f"Usage: {command}"), text
        assert len(text.splitlines()[2].strip()) > 20, f"{command} --help: a sentence, not an empty docstring"
        assert f"`{command}`" in readme, f"the README does not name {command}"
        assert re.search(r"^\s*Examples?:\n\s+\$? ?" + re.escape(command) + r"\b", text, re.M) or \
            re.search(r"^\s*Examples?:\n(\s+.*\n)*?\s+.*\b" + re.escape(command) + r"\b", text, re.M), \
            f"{command} --help has no example using it:\n{text}"
        assert re.search(r"^\s*Environment:", text, re.M), f"{command} --help does not say what it reads"
        assert re.search(r"^\s*Exit codes:", text, re.M), f"{command} --help gives no exit codes"


@pytest.mark.parametrize("command", ["batch-submit", "batch-wait", "batch-fetch", "batch-cancel", "batch-run"])
def test_commands_that_call_the_service_name_its_variables(helps, command):
    text = helps[command]
    for name in ("MISTRAL_API_KEY", "MISTRAL_SERVER_URL", "OBJBATCH_RETRY_SECONDS"):
        assert name in text, f"{command} --help does not mention {name}"


def test_make_lint_passes():
    done = make("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_checks_the_product_strictly_and_relaxes_only_the_emulator():
    """make lint's mypy (pyproject [tool.mypy]) is --strict for every module of lib/objbatch, commands and core;
    the emulator is relaxed, and no module is excused from checking: a new module is strict without a list to
    update."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and set(config["files"]) == {"lib/objbatch", "lib/mistral_emulator"}
    relaxed = {module for override in config.get("overrides", []) for module in override["module"]}
    assert relaxed <= {"mistral_emulator.*"}, relaxed
    for override in config.get("overrides", []):
        assert not override.get("ignore_errors") and override.get("disallow_untyped_defs", True), override


def test_a_bare_make_lists_every_target_and_variable_with_one_line_each():
    done = make()
    assert done.returncode == 0, done.stderr
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z-]+):.*## ", makefile, re.M)
    variables = re.findall(r"^([A-Z_]+) =.*## ", makefile, re.M)
    assert {"batch", "estimate", "demo", "test", "lint", "help"} <= set(targets)
    assert {"DB", "NAME", "MAX", "MODEL", "BUDGET", "FORMAT"} <= set(variables)
    for name in targets:
        assert re.search(rf"^  {name}\s+\S", done.stdout, re.M), f"make help does not list {name}"
    for name in variables:
        assert re.search(rf"^  {name}=\S*\s+\S", done.stdout, re.M), f"make help does not list {name}"


def test_make_variables_come_from_the_command_line_not_the_environment():
    # WSL exports NAME as the host name; a MAX left in a shell must not shape a paid run
    done = make("-s", "vars", "MAX=5", env={**os.environ, "NAME": "DESKTOP-ABC", "MAX": "2", "DB": "other.db"})
    assert "NAME=\n" in done.stdout and "MAX=5\n" in done.stdout and "DB=data/library.db\n" in done.stdout


@pytest.mark.parametrize("args, message", [
    (("export", "FORMAT=xml"), "FORMAT must be csv, json or nl (got 'xml')"),
    (("demo", "FAULTS=bogus"), "FAULTS must be none, real, chaos, a JSON file or JSON text (got 'bogus'); demo/ is "
                               "untouched"),
])
def test_a_bad_make_value_is_one_line_before_anything_runs(args, message):
    done = make(*args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""


@pytest.mark.parametrize("args, message", [
    (("--port", "99999"), "99999 is not in the range 0<=x<=65535"),
    (("--host", "0.0.0.0"), "'0.0.0.0' is not a loopback address; use 127.0.0.1"),
    (("--pace", '{"bogus": 1}'), "unknown setting 'bogus'; known: queue_seconds"),
    (("--pace", '{"queue_seconds": -1}'), "queue_seconds must be a number of at least 0 (got -1)"),
    (("--pace", "[1]"), "give a JSON object"),
])
@pytest.mark.emulator
def test_the_emulator_refuses_bad_options_before_serving(tmp_path, args, message):
    done = subprocess.run([BIN / "mistral-emulator", "--state-dir", tmp_path / "state", *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""


# ---------------------------------------------------------------- the README's transcript

def transcript(heading: str = "## The pipeline by hand") -> tuple[list[str], list[str]]:
    """The commands ($ lines) and the output lines of one of the README's transcripts."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(heading):]
    block = section[section.index("```\n") + 4:]
    block = block[:block.index("```")]
    lines = block.splitlines()
    return [line[2:] for line in lines if line.startswith("$ ")], [line for line in lines if not line.startswith("$ ")]


def normalized(line: str) -> str:
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", line)
    line = re.sub(r"requests-[0-9a-f]{12}", "requests-<hash>", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", line)
    line = re.sub(r"\(\d[\d,]* input tokens\)", "(<n> input tokens)", line)  # the paths sent vary in length
    line = re.sub(r"estimate \$(0\.\d+)", lambda m: f"estimate ${float(m.group(1)):.3f}", line)  # and so the cost
    line = re.sub(r", [\d,]+\.\d/s,", ",", line)  # a rate appears when a poll caught the job part-way
    return re.sub(r"\d+:\d\d elapsed", "<t> elapsed", line).strip()


def session_normalized(line: str) -> str:
    """As normalized, and what differs with where the clone is: the library's folder, and so the request
    lines' length (tokens and dollars); the times."""
    line = re.sub(r"\S*/data/library/", "data/library/", normalized(line))
    line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", "<time>", line)
    line = re.sub(r"\$\d+\.\d+", "$<usd>", line)
    line = re.sub(r"\d{1,3}(,\d{3})+", "<n>", line)
    return re.sub(r"\(\d+ KB\)", "(<n> KB)", line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def started_whole(command: str) -> str:
    """A server put in the background prints its lines while the next commands print theirs; on a busy
    machine a line of one could land inside a line of another. Typed here, the server's lines go to a file
    that is shown, whole, once it has printed them (as a person sees them before typing on)."""
    if not command.rstrip().endswith("&"):
        return command
    shown = '"$TMPDIR/background.out"'
    return (f"{command.rstrip()[:-1]} > {shown} &\n"
            f"until [ \"$(grep -c '^export ' {shown} 2>/dev/null)\" = 2 ]; do sleep 0.05; done; cat {shown}")


def test_the_readme_hand_transcript_works_typed_as_shown(tmp_path):
    commands, expected = transcript()
    assert commands[0].startswith('export PATH="$PWD/bin:$PATH"'), "the transcript must put bin/ on the PATH first"
    assert not [c for c in commands if re.search(r"\s>\s*\w", c.split("#")[0])], "use -o, not >, for stage files"
    port = str(free_port())
    script = "set -eo pipefail\n" + "\n".join(started_whole(c.replace("8765", port)) for c in commands) + "\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRAL_", "OBJBATCH_"))}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=180)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the emulator, if the transcript stopped before its kill
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, output
    got = [normalized(line) for line in output.splitlines()]
    for line in expected:
        assert normalized(line) in got, f"the README shows {line!r}; typed, the transcript printed:\n{output}"


@pytest.mark.slow
def test_the_readme_session_works_typed_as_shown_in_a_fresh_clone(tmp_path):
    """The README's session (issue 18): typed in a clone as a newcomer would, after make demo."""
    commands, expected = transcript("## A session: estimate, pay within a budget")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    clone = tmp_path / "objbatch"
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    (clone / ".venv").symlink_to(ROOT / ".venv")  # built once; its stamp is newer than the copy's pyproject.toml
    port = str(free_port())
    script = "\n".join(c.replace("8765", port) for c in commands) + "\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRAL_", "OBJBATCH_", "MAKE"))}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(["bash", "-c", script], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    got = [session_normalized(line) for line in output.splitlines()]
    for line in expected:
        if line.strip() in ("", "..."):
            continue
        assert session_normalized(line) in got, f"the README shows {line!r}; typed, the session printed:\n{output}"
    assert (clone / "runs" / "report.html").exists() and (clone / "approved.csv").exists()


def test_make_works_in_a_clone_whose_path_has_a_space(tmp_path):
    # make splits paths at spaces: typed in the clone, nothing may need the clone's own path as a word
    clone = tmp_path / "my projects" / "objbatch"
    clone.mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "bin", "lib", "schemas", ".venv"):
        (clone / name).symlink_to(ROOT / name)
    done = subprocess.run(["make", "-s", "vars", "RUNS=r"], cwd=clone, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PWD": str(clone)})
    assert done.returncode == 0, done.stderr
    assert "RUNS=r\n" in done.stdout and "DB=data/library.db\n" in done.stdout
