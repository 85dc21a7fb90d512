"""The seeded simulation (tests/simulate.py, make simulate): a quick sanity check of the simulator itself in
the fast suite, a fixed set of seeds in the slow one."""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import simulate  # tests/ is not a package: found through sys.path


@pytest.fixture(scope="module")
def emulator():
    emu = simulate.Emulator()
    yield emu
    emu.close()


def events(result: dict) -> list[str]:
    """The events, default run names (made from the clock) left out."""
    return [re.sub(r"(run|cron)-\d{8}-\d{6}-[0-9a-f]{4}", "RUN", e) for e in result["events"]]


def test_a_short_sequence_runs_clean_and_replays_the_same_events(emulator, tmp_path):
    first = simulate.run_one(5, 5, emulator, tmp_path)
    assert first["violation"] is None, simulate.report(first, 5)
    again = simulate.run_one(5, 5, emulator, tmp_path)
    assert events(again) == events(first)
    assert len(first["events"]) >= 5


def test_the_checks_see_a_claim_left_by_a_finished_run_and_an_attempt_that_never_ran(emulator, tmp_path):
    sequence = simulate.Sequence(11, 0, emulator, tmp_path)
    sequence.run()  # no random events: only the settling, which leaves everything clean
    sequence.step(0, sequence.ev_batch)  # a run (whatever its settings), checked clean
    conn = sqlite3.connect(sequence.db)
    with conn:
        conn.execute("INSERT INTO objbatch_runs (run_name, state, created_at) VALUES ('x', 'applied', 'now')")
        conn.execute("INSERT INTO objbatch_claims (run_name, file_path, state, claimed_at) "
                     "VALUES ('x', 'some/file.txt', 'claimed', 'now')")
    with pytest.raises(simulate.Violation, match="still claimed by finished run x"):
        sequence.check(None)
    with conn:
        conn.execute("DELETE FROM objbatch_claims WHERE run_name = 'x'")
        conn.execute("INSERT INTO objbatch_files (file_path, attempts) VALUES ('some/file.txt', 1) "
                     "ON CONFLICT(file_path) DO UPDATE SET attempts = attempts + 1")
    conn.close()
    with pytest.raises(simulate.Violation, match="attempts grew by 1 but only 0"):
        sequence.check(None)


def test_a_key_in_an_output_and_a_write_outside_runs_are_violations(emulator, tmp_path):
    sequence = simulate.Sequence(12, 0, emulator, tmp_path)
    sequence.outputs = [simulate.Output(["stats"], 0, f"key {simulate.KEY}\n", "")]
    with pytest.raises(simulate.Violation, match="API key appears in the output of stats"):
        sequence.check(None)
    sequence.outputs = []
    (sequence.dir / "stray").write_text("x")
    with pytest.raises(simulate.Violation, match="written outside RUNS and the database: \\['stray'\\]"):
        sequence.check(None)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3, 5, 9, 11])
def test_fixed_seeds_break_no_invariant(emulator, tmp_path, seed):
    result = simulate.run_one(seed, 24, emulator, tmp_path)
    assert result["violation"] is None, simulate.report(result, 24)
