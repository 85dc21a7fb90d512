"""Commands' shared behaviour: a missing database, progress lines, readers that write nothing. (Every command's
--help and --version are checked once, in test_conventions.py.)"""

from __future__ import annotations

import pytest

from conftest import invoke, run


@pytest.mark.parametrize("name", ["stats", "review", "select-pending", "apply-sql"])
def test_a_missing_database_is_one_clear_line(name, tmp_path):
    result = invoke(name, "--db", tmp_path / "missing.db", input="")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"{name}: error: database {tmp_path / 'missing.db'} does not exist; pass --db "
                                     "with the library's SQLite file (or DB= to make)")


class Terminal:
    """A stream that says it is a terminal, recording what was written."""

    def __init__(self, tty: bool):
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_is_one_live_line_on_a_terminal_and_a_line_per_change_otherwise():
    from objbatch.common import Progress

    for tty in (True, False):
        stream = Terminal(tty)
        progress = Progress(stream)
        for line, key in [("QUEUED 0/3", "a"), ("QUEUED 0/3", "a"), ("RUNNING 1/3", "b"), ("SUCCESS 3/3", "c")]:
            progress.update(line, key)
        progress.done()
        if tty:
            assert stream.text.count("\r\033[K") == 4 and stream.text.endswith("SUCCESS 3/3\n")
        else:
            assert stream.text == "QUEUED 0/3\nRUNNING 1/3\nSUCCESS 3/3\n"


def test_readers_leave_a_database_objbatch_never_touched_as_it_is(library, tmp_path):
    _, db = library
    before = db.read_bytes()
    name = next(p.name for p in (tmp_path / "library").rglob("*.txt"))
    for args in (("stats", "--db", db), ("review", "--db", db, "--skipped"), ("export-metadata", "--db", db, "--csv"),
                 ("show", "--db", db, name), ("batch-run", "--estimate", f"DB={db}", f"RUNS={tmp_path / 'runs'}")):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        assert db.read_bytes() == before, f"{args[0]} wrote to the database"
    assert "make batch would start a new run with" in result.stdout and not (tmp_path / "runs").exists()
    assert run("select-pending", "--db", db, "--max", "1").returncode == 0  # a stage sets the database up
    assert db.read_bytes() != before
