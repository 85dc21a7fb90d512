"""A run's states are a vocabulary held to one table (docs/design.md), changed by one module (runs.py)."""

from __future__ import annotations

import re
import sqlite3

import pytest

from conftest import ROOT
from objbatch import runs
from objbatch.ledger import opened, transaction

OWNED = ("objbatch_runs", "objbatch_claims", "objbatch_parts", "objbatch_jobs", "objbatch_leases")


def design_table(title: str = "### Run states") -> dict[str, tuple[set[str], str]]:
    """A transition table of docs/design.md: name -> (from states, to state)."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split(title, 1)[1].split("\n#", 1)[0]
    table = {}
    for match in re.finditer(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", section, re.M):
        table[match.group(1)] = ({s.strip() for s in match.group(2).split(",")}, match.group(3).strip())
    return table


def test_every_transition_the_code_can_make_is_in_the_design_table_and_back():
    declared = {name: (set(sources), target) for name, (sources, target) in runs.TRANSITIONS.items()}
    assert declared and declared == design_table()
    states = {str(s) for s in runs.RunState} | {"(none)", runs.GONE}
    assert all(sources | {target} <= states for sources, target in declared.values())


def test_a_claim_changes_state_only_as_the_design_claim_table_says():
    declared = {name: (set(sources), target) for name, (sources, target) in runs.CLAIM_TRANSITIONS.items()}
    assert declared == design_table("### Claim states")
    assert all(sources | {target} <= {str(s) for s in runs.ClaimState} | {"(none)", runs.GONE}
               for sources, target in declared.values())
    text = (ROOT / "lib" / "objbatch" / "runs.py").read_text()
    release = text.split("def _release", 1)[1].split("\ndef ", 1)[0]
    assert len(re.findall(r"UPDATE objbatch_claims SET state", text)) == 1 and "SET state" in release


def test_no_module_but_runs_writes_the_run_ledger():
    """The run, claim, part, job and lease tables are written by runs.py alone, and a run's state only
    through a declared transition (_move, create, forget)."""
    writes = re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(" + "|".join(OWNED) + r")\b", re.I)
    for module in sorted((ROOT / "lib" / "objbatch").rglob("*.py")):
        text = module.read_text()
        if module.name == "runs.py":
            state_writes = re.findall(r"UPDATE objbatch_runs SET state", text)
            assert len(state_writes) == 1, "a run's state is written only by runs._move"
            continue
        found = [m.group(0) for m in writes.finditer(text)]
        assert not found, f"{module.name} writes the run ledger ({found[0]}): do it through runs.py"


def test_no_state_literal_is_compared_outside_the_vocabulary():
    """Code compares a run's state or a file's status with the enum, not with a string."""
    literal = re.compile(r"\.state\s*(==|!=)\s*[\"']|\.state\s+(not\s+)?in\s*\(\s*[\"']"
                         r"|(?<!\[\")\bstatus\s*(==|!=)\s*[\"']|ai_metadata_status\"\]\s*(==|!=)\s*[\"']")
    for module in sorted((ROOT / "lib" / "objbatch").rglob("*.py")):
        assert not literal.search(module.read_text()), module.name


@pytest.fixture
def ledger_db(library):
    _, db = library
    with opened(db) as conn:
        paths = [r[0] for r in conn.execute("SELECT file_path FROM files LIMIT 3")]
        with transaction(conn):
            runs.create(conn, "r", "mistral-small-latest", paths)
    return db


def test_an_illegal_transition_is_refused_in_one_line_and_changes_nothing(ledger_db):
    with opened(ledger_db) as conn:
        for attempt in (lambda: runs.finish_cancelled(conn, "r", {}), lambda: runs.mark_submitted(conn, "r"),
                        lambda: runs.unfreeze(conn, "r"), lambda: runs.begin_cancel(conn, "r"),
                        lambda: runs.create(conn, "r", None, [])):
            with pytest.raises(runs.IllegalTransition) as refused:
                with transaction(conn):
                    attempt()
            assert "\n" not in str(refused.value) and "run r" in str(refused.value)
        assert runs.get(conn, "r").state is runs.RunState.CLAIMED
        with transaction(conn):
            assert runs.finish_applied(conn, "r", {}) == 3
        with pytest.raises(runs.IllegalTransition, match="run r is applied: cancel unsent only starts from"):
            runs.cancel_unsent(conn, "r", {})
        with pytest.raises(runs.IllegalTransition):
            runs.forget(conn, "r")
        assert runs.get(conn, "r").state == "applied"  # stored as the same string as before the enums


def test_states_are_stored_as_the_strings_older_databases_hold(ledger_db):
    conn = sqlite3.connect(ledger_db)
    try:
        assert conn.execute("SELECT state FROM objbatch_runs").fetchall() == [("claimed",)]
        assert {s for (s,) in conn.execute("SELECT state FROM objbatch_claims")} == {"claimed"}
    finally:
        conn.close()


def test_a_file_an_older_version_skipped_as_missing_is_retried_by_its_migrated_kind(library):
    """Older versions left only a message: the database is migrated on open (skip_kind from that message,
    once), and the selection decides by the kind, never by the message."""
    from conftest import query, run

    _, db = library
    path = query(db, "SELECT file_path FROM files WHERE file_path LIKE '%.txt' ORDER BY file_path LIMIT 1")[0][0]
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE files SET ai_metadata_status = 'skipped', error_message = 'file not found on disk "
                     "(deleted, moved or on an unmounted disk)' WHERE file_path = ?", (path,))
    conn.close()
    selected = run("select-pending", "--db", db)
    assert selected.returncode == 0, selected.stderr
    assert path in selected.stdout
    assert query(db, "SELECT skip_kind FROM objbatch_files WHERE file_path = ?", path) == [("missing",)]
    assert query(db, "SELECT value FROM objbatch_meta WHERE key = 'schema_version'") == [("2",)]


def test_a_state_this_version_does_not_know_is_one_line_not_a_traceback(ledger_db):
    from conftest import run

    conn = sqlite3.connect(ledger_db)
    with conn:
        conn.execute("UPDATE objbatch_runs SET state = 'paused'")
    conn.close()
    refused = run("batch-cancel", "--db", ledger_db, "--run", "r")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "state 'paused', which this version of objbatch does not know" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
