"""Every command is documented: --help works and says what it does, and the README names it."""

from __future__ import annotations

import tomllib

import pytest

from conftest import ROOT, run

SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_command_has_help_a_launcher_and_a_readme_entry(name):
    result = run(name, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"Usage: {name}")
    assert len(result.stdout.splitlines()[2].strip()) > 20  # a sentence, not an empty docstring
    assert (ROOT / "bin" / name).exists()
    assert f"`{name}`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", ["stats", "review", "select-pending", "apply-sql"])
def test_a_missing_database_is_one_clear_line(name, tmp_path):
    result = run(name, "--db", tmp_path / "missing.db", input="")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"{name}: error: database {tmp_path / 'missing.db'} does not exist; pass --db "
                                     "with the library's SQLite file (or DB= to make)")
