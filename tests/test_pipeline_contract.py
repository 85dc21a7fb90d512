"""The pipeline contract between make and batch-run (lib/objbatch/pipeline.py): every line make -n prints for
a stage target is a stage command with options it declares, values arrive exactly as given, and anything
else is refused in one line. The run's lease holds across processes, not because stages share one."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import ROOT, TEST_KEY, jobs, jsonl, run
from objbatch import ledger, pipeline, runs
from objbatch.common import EXIT_USAGE, Failure
from objbatch.make_vars import make_env

TARGETS = ("select.jsonl", "requests.jsonl", "job.json", "wait.jsonl", "results.jsonl", "decisions.jsonl",
           "applied.json")
ODD = "it's \"odd\" ;|&<>*?~#!{a,b}\\ `x` ( ) 0 -- -n"  # everything a shell would act on, but '$' (make refuses it)


def dry_run(target: str, *assignments: str, flags: tuple[str, ...] = ()) -> str:
    proc = subprocess.run(["make", "-n", "-s", "--no-print-directory", "-C", str(ROOT), *flags, target,
                           *assignments], capture_output=True, text=True, env=make_env())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def settings(tmp_path, odd: bool) -> dict[str, str]:
    every = {"DB": str(tmp_path / f"db {ODD}.db"), "RUNS": str(tmp_path / "runs"), "NAME": "a.b_c-1"}
    if odd:
        every.update({"LIBRARY_ROOT": str(tmp_path / f"root {ODD}"), "MAX": ODD, "MODEL": f"model {ODD}",
                      "ALLOW_UNPRICED": "1", "BUDGET": ODD, "POLL": ODD, "TIMEOUT": ODD, "TIMEOUT_HOURS": ODD,
                      "REASONING_EFFORT": ODD, "MAX_ATTEMPTS": ODD, "RETRY_EXHAUSTED": "1", "THRESHOLD": ODD,
                      "MAX_IN_FLIGHT": ODD})
    return every


@pytest.mark.parametrize("odd", [False, True], ids=["defaults", "odd values"])
@pytest.mark.parametrize("target", TARGETS)
def test_every_recipe_line_of_every_stage_target_is_a_known_command_with_known_options(tmp_path, target, odd):
    given = settings(tmp_path, odd)
    text = dry_run(f"{given['RUNS']}/{given['NAME']}/{target}", *(f"{k}={v}" for k, v in given.items()))
    stages = [pipeline.check(argv) for argv in pipeline.commands(text)]
    names = [stage.name for stage in stages]
    chain = ["mkdir", *pipeline.STAGES[:TARGETS.index(target) + 1]]
    assert names == chain  # the whole chain up to the target, in order, nothing else
    for stage in stages[1:]:
        values = stage.argv[1:]
        if "--db" in values:
            assert values[values.index("--db") + 1] == given["DB"]  # every value arrives exactly as given
        for option in ("--model", "--threshold", "--budget", "--max", "--reasoning-effort", "--library-root",
                       "--max-in-flight"):
            if option in values and odd:
                assert values[values.index(option) + 1] in (ODD, given["MODEL"], given["LIBRARY_ROOT"])


def test_the_venvs_own_recipe_is_refused_by_the_contract_and_batch_run_brings_the_venv_up_to_date_first(tmp_path):
    """A stale .venv stamp (pyproject.toml touched) made make -n print the venv's recipe, which batch-run ran
    without a shell: "test: extra argument '||'". It is shell syntax the contract refuses in one line; due()
    runs make venv for real first, as make batch does, so make -n no longer prints it."""
    stale = dry_run(f"{tmp_path}/x/select.jsonl", "NAME=x", f"RUNS={tmp_path}", flags=("-W", "pyproject.toml"))
    assert "||" in stale
    with pytest.raises(Failure) as refused:
        pipeline.commands(stale)
    assert "\n" not in str(refused.value) and "shell syntax ('|')" in str(refused.value)
    assert pipeline.up_to_date("venv")
    assert [s.name for s in pipeline.due(f"{tmp_path}/x/select.jsonl", ["NAME=x", f"RUNS={tmp_path}"])] == ["mkdir", "select-pending"]


@pytest.mark.parametrize("line, says", [
    ("OBJBATCH_MIN_POLL=1 .venv/bin/stats --db x\n", "a command batch-run does not run"),
    (".venv/bin/stats --db x\n", "a command batch-run does not run"),
    ("rm -rf 'x'\n", "a command batch-run does not run"),
    ("mkdir -p 'x'\n", "a command batch-run does not run"),
    (".venv/bin/validate --db x > y\n", "shell syntax ('>')"),
    (".venv/bin/validate --db \"x\"\n", "shell syntax ('\"')"),
    (".venv/bin/validate --db $HOME\n", "shell syntax ('$')"),
    (".venv/bin/validate --db x; .venv/bin/apply-sql\n", "shell syntax (';')"),
    (".venv/bin/validate --db *.db\n", "shell syntax ('*')"),
    (".venv/bin/validate --db ~/x.db\n", "shell syntax ('~')"),
])
def test_anything_else_is_refused_in_one_line_not_guessed(line, says):
    with pytest.raises(Failure) as refused:
        [pipeline.check(argv) for argv in pipeline.commands(line)]
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_an_option_the_stage_does_not_declare_is_refused_as_a_disagreement():
    with pytest.raises(Failure) as refused:
        pipeline.check([".venv/bin/validate", "--no-such-option", "x"])
    assert refused.value.code == EXIT_USAGE
    assert str(refused.value) == ("make printed validate with no such option '--no-such-option'; the Makefile's "
                                  "stage recipe and the command disagree")
    with pytest.raises(Failure, match="extra arguments 'b'"):
        pipeline.check([".venv/bin/apply-sql", "a", "b"])


def test_words_are_read_as_a_shell_reads_them():
    text = ".venv/bin/validate --db 'it'\\''s' ''  a\\ b\\\n  --run 'x\ny'\n\nmkdir -p -m 700 'r'\n"
    assert pipeline.commands(text) == [[".venv/bin/validate", "--db", "it's", "", "a b", "--run", "x\ny"],
                                       ["mkdir", "-p", "-m", "700", "r"]]


@pytest.fixture
def built(library, tmp_path):
    """A run `r` claimed and built by hand, ready for batch-submit --db."""
    _, db = library
    steps = [("select-pending", "--db", db, "--claim", "r", "--model", "mistral-small-latest", "-o",
              tmp_path / "select.jsonl"),
             ("build-jsonl", "--db", db, "--run", "r", "--model", "mistral-small-latest", "--manifest",
              tmp_path / "manifest.jsonl", "-o", tmp_path / "requests.jsonl", tmp_path / "select.jsonl")]
    for step in steps:
        done = run(*step)
        assert done.returncode == 0, done.stderr
    return db, ["--db", db, "--run-name", "r", "--model", "mistral-small-latest", "--manifest",
                tmp_path / "manifest.jsonl", "-o", tmp_path / "job.json", tmp_path / "requests.jsonl"]


def test_a_stage_run_as_its_own_process_works_under_the_lease_its_parent_holds(built, emulator):
    """The lease used to pass to the stages only because they shared batch-run's process (an in-process set
    of held leases): batch-submit run as a process of its own under batch-run's lease was refused."""
    db, submit = built
    with ledger.opened(str(db)) as conn, runs.lease(conn, "r", wait=False) as got:
        assert got
        child = run("batch-submit", *submit, env={**emulator.env, "MISTRAL_API_KEY": TEST_KEY})
        assert child.returncode == 0, child.stderr
    assert len(jobs(emulator)) == 1 and jsonl((db.parent / "job.json").read_text())[0]["run_name"] == "r"
    assert not runs_leases(db)  # given back by its holder, not by the stage


def test_two_independent_processes_still_exclude_each_other(built, emulator):
    db, submit = built
    with ledger.opened(str(db)) as conn, runs.lease(conn, "r", wait=False) as got:
        assert got
        stranger = {k: v for k, v in emulator.env.items() if k != runs.LEASE_ENV}
        refused = run("batch-submit", *submit, env=stranger)
        assert refused.returncode == 1
        assert "run r is being worked on by another process" in refused.stderr
        forged = run("batch-submit", *submit, env={**stranger, runs.LEASE_ENV: '{"owner": "elsewhere:1", '
                                                   f'"db": "{conn.path}", "run": "r"}}'})
        assert forged.returncode == 1  # a lease named in the environment counts only while its holder has it
    assert not jobs(emulator)
    with ledger.opened(str(db)) as conn, runs.lease(conn, "r", wait=False) as got:
        assert got
    assert os.environ.get(runs.LEASE_ENV) is None


def runs_leases(db) -> list:
    with ledger.opened(str(db)) as conn:
        return conn.execute("SELECT * FROM objbatch_leases").fetchall()
