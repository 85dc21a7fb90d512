"""make bench: figures, not assertions (machines here are shared and noisy; ratios are measured in one run).

1. make batch beside the floor (tests/bench_floor.py: one process doing the same local work, no checks, no
   ledger) on 1,200 and 10,000 files, the emulator answering instantly: seconds, ratio, peak RSS of each.
2. The lag between the service finishing a 723-request job (paced to take about a minute) and the
   database holding its results, with make batch's default settings.
3. make batch on a 100,000-file library (small files): seconds and peak RSS.
4. Convergence at the real failure rates: failed files after each of three rounds, over a few seeds.
5. Opening the database (every command does it first): the first open of a library, which applies every
   migration, then the median open of the migrated library as a writer and as a reader.

    python tests/bench.py [--only floor,lag,scale,convergence,open] [--pairs 3] [--sizes 1200,10000]
                          [--against CHECKOUT ...]   (make bench runs it with none)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Emulator, rows  # noqa: E402
from mistral_emulator.sample_library import build  # noqa: E402

INSTANT = json.dumps({"queue_seconds": 0, "seconds_per_request": 0, "min_run_seconds": 0, "max_run_seconds": 0})
# Runs a command and reports the peak RSS of the largest process in its tree (RUSAGE_CHILDREN of a wrapper
# that has no other children), so the emulator's memory never counts.
MEASURE = ("import json, resource, subprocess, sys, time\n"
           "start = time.monotonic(); code = subprocess.run(sys.argv[2:]).returncode\n"
           "open(sys.argv[1], 'w').write(json.dumps([time.monotonic() - start, "
           "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, code]))")


def measured(cmd: list[str], env: dict, work: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB of the largest process) of one command tree; its output is discarded."""
    figures = work / "figures.json"
    subprocess.run([sys.executable, "-c", MEASURE, str(figures), *map(str, cmd)], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    seconds, rss, code = json.loads(figures.read_text())
    assert code == 0, f"{cmd[:3]} failed ({code})"
    return seconds, rss


def library(work: Path, count: int, small: bool = False) -> Path:
    folder = work / f"lib{count}"
    if not (folder / "pristine.db").exists():
        build(folder / "library", folder / "pristine.db", count=count, seed=5, small=small)
    return folder


def copy_of(folder: Path, name: str) -> Path:
    db = folder / f"{name}.db"
    shutil.copy(folder / "pristine.db", db)
    return db


def bench_floor(work: Path, pairs: int = 3, sizes: tuple[int, ...] = (1_200, 10_000),
                against: tuple[Path, ...] = ()) -> None:
    """Each size: `pairs` rounds of the floor, of make batch and of make batch in each checkout `against`
    (another commit's worktree, its own .venv), rotating which goes first, on fresh copies of one library
    and one emulator; the median of each side (the emulator's own time varies run to run). Every ratio is
    measured in this one run, side by side."""
    for count in sizes:
        folder = library(work, count)
        emu = Emulator(folder / f"emu-{time.monotonic_ns()}", ["--pace", INSTANT])
        env = {**emu.env, "PATH": f"{BIN}:{os.environ['PATH']}"}
        sides: dict[str, list[tuple[float, float]]] = {"floor": [], "ours": [], **{str(a): [] for a in against}}
        try:
            for pair in range(pairs):
                names = list(sides)
                for name in names[pair % len(names):] + names[:pair % len(names)]:
                    db = copy_of(folder, f"side{names.index(name)}-{pair}")
                    cmd = [sys.executable, ROOT / "tests" / "bench_floor.py", db] if name == "floor" else \
                        ["make", "--no-print-directory", "-C", ROOT if name == "ours" else name, "batch", f"DB={db}",
                         f"RUNS={folder / 'runs'}", f"NAME=bench{names.index(name)}-{pair}"]
                    sides[name].append(measured(cmd, env, work))
        finally:
            emu.stop()
            shutil.rmtree(folder / "runs", ignore_errors=True)
        floors, ours = sides["floor"], sides["ours"]
        floor, ours_ = _median(floors), _median(ours)
        print(f"{count:>6,} files: floor {floor[0]:6.2f}s {floor[1]:5.0f} MB | make batch {ours_[0]:6.2f}s "
              f"{ours_[1]:5.0f} MB | ratio {ours_[0] / floor[0]:.2f} (median of {pairs}; each ratio: "
              + ", ".join(f"{o[0] / f[0]:.2f}" for f, o in zip(floors, ours, strict=True)) + ")", flush=True)
        for other in against:
            theirs = sides[str(other)]
            median = _median(theirs)
            print(f"{count:>6,} files: make batch here {ours_[0]:6.2f}s | in {other} {median[0]:6.2f}s "
                  f"{median[1]:5.0f} MB | here / there {ours_[0] / median[0]:.3f} (median of {pairs}; each: "
                  + ", ".join(f"{o[0] / t[0]:.3f}" for t, o in zip(theirs, ours, strict=True)) + ")", flush=True)


def _median(figures: list[tuple[float, float]]) -> tuple[float, float]:
    return sorted(s for s, _ in figures)[len(figures) // 2], max(r for _, r in figures)


def bench_lag(work: Path) -> None:
    """A 723-request job paced to about a minute, make batch with its defaults (POLL=30)."""
    folder = library(work, 723)
    pace = json.dumps({"queue_seconds": 15, "seconds_per_request": 45 / 723, "min_run_seconds": 1,
                       "max_run_seconds": 300})
    emu = Emulator(folder / "emu-lag", ["--pace", pace])
    db = copy_of(folder, "lag")
    try:
        env = {**emu.env, "PATH": f"{BIN}:{os.environ['PATH']}"}
        seconds, _ = measured(["make", "--no-print-directory", "-C", ROOT, "batch", f"DB={db}",
                               f"RUNS={folder / 'runs-lag'}", "NAME=lag"], env, work)
    finally:
        emu.stop()
    state = json.loads((folder / "emu-lag" / "state.json").read_text())
    job = next(iter(state["jobs"].values()))
    ended = job["timeline"]["end"]
    with sqlite3.connect(db) as conn:
        applied = conn.execute("SELECT finished_at FROM objbatch_runs WHERE run_name = 'lag'").fetchone()[0]
        polls = conn.execute("SELECT COUNT(*) FROM objbatch_jobs").fetchone()[0]
    applied_at = datetime.strptime(applied, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
    print(f"lag: a {job['total_requests']}-request job the service ran for {ended - job['timeline']['created']:.0f}s; "
          f"its results were in the database {applied_at - ended:.1f}s after it finished "
          f"(make batch {seconds:.0f}s end to end, {state['record']['polls'][job['id']]} status requests, "
          f"{polls} job)", flush=True)


def bench_scale(work: Path) -> None:
    """make batch on 10,000 and 100,000 small files: time per thousand files should not grow (no stage
    worse than linear), peak RSS should stay flat, and the jobs split at the service's limits."""
    per_thousand = {}
    for count in (10_000, 100_000):
        folder = library(work, count, small=True)
        emu = Emulator(folder / "emu-scale", ["--pace", INSTANT])
        try:
            env = {**emu.env, "PATH": f"{BIN}:{os.environ['PATH']}"}
            seconds, rss = measured(["make", "--no-print-directory", "-C", ROOT, "batch",
                                     f"DB={copy_of(folder, 'scale')}", f"RUNS={folder / 'runs'}", "NAME=scale"], env, work)
            jobs = len(emu.record()["jobs_created"])
        finally:
            emu.stop()
            shutil.rmtree(folder, ignore_errors=True)
        per_thousand[count] = seconds / count * 1000
        print(f"{count:>7,} small files: make batch {seconds:6.1f}s ({per_thousand[count]:.2f}s a thousand), "
              f"peak {rss:.0f} MB, {jobs} job(s)", flush=True)
    print(f"scale: time per file at 100,000 / at 10,000 = {per_thousand[100_000] / per_thousand[10_000]:.2f}")


def bench_convergence(work: Path, seeds: range) -> None:
    home = Path(tempfile.gettempdir()) / "objbatch-bench-convergence"
    converged = 0
    for seed in seeds:
        shutil.rmtree(home, ignore_errors=True)
        build(home / "library", work / f"c{seed}.db", count=300, seed=seed)
        emu = Emulator(work / f"emu{seed}", ["--seed", str(seed), "--faults", "real"])
        failed = []
        try:
            for round_ in range(3):
                subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "batch", f"DB={work / f'c{seed}.db'}",
                                f"RUNS={work / f'runs{seed}'}", f"NAME=r{round_}", "POLL=0.1"],
                               env={**emu.env, "OBJBATCH_MIN_POLL": "0.1"}, check=True, capture_output=True)
                failed.append(sum(1 for r in rows(work / f"c{seed}.db").values()
                                  if r["ai_metadata_status"] == "failed_validation"))
        finally:
            emu.stop()
        converged += failed[-1] == 0
        print(f"convergence seed {seed}: failed after rounds 1-3: {failed}", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    print(f"convergence: {converged}/{len(seeds)} seeds left no failed file after three rounds (301 files each)")


def bench_open(work: Path, opens: int = 300) -> None:
    from objbatch import ledger

    db = copy_of(library(work, 1_200), "open")
    start = time.perf_counter()
    ledger.connect(db).close()
    print(f"open: the first open of a 1,200-file library (every migration) {1000 * (time.perf_counter() - start):.1f} ms",
          flush=True)
    for role, read_only in (("writer", False), ("reader", True)):
        times = []
        for _ in range(opens):
            start = time.perf_counter()
            ledger.connect(db, identity=not read_only, read_only=read_only).close()
            times.append(time.perf_counter() - start)
        print(f"open: a migrated library as a {role}: median {1000 * sorted(times)[opens // 2]:.2f} ms "
              f"(of {opens})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="floor,lag,scale,convergence,open")
    parser.add_argument("--pairs", type=int, default=3, help="floor: rounds of each side (the median is shown)")
    parser.add_argument("--sizes", default="1200,10000", help="floor: library sizes, comma-separated")
    parser.add_argument("--against", action="append", type=Path, default=[], metavar="CHECKOUT",
                        help="floor: also run make batch in this checkout (e.g. a git worktree of another commit, "
                             "its .venv built: make -C CHECKOUT venv) and print here / there; repeatable")
    options = parser.parse_args()
    chosen = options.only.split(",")
    for other in options.against:
        if not (other / "Makefile").is_file() or not (other / ".venv" / ".installed").is_file():
            parser.error(f"--against {other}: not a checkout with a built .venv (make -C {other} venv builds it)")
    work = Path(tempfile.mkdtemp(prefix="objbatch-bench-"))
    os.environ.setdefault("XDG_STATE_HOME", str(work / "state"))
    os.environ.pop("OBJBATCH_MIN_POLL", None)  # the defaults: the service's 2 s floor between status requests
    try:
        floor = functools.partial(bench_floor, pairs=options.pairs, against=tuple(a.resolve() for a in options.against),
                                  sizes=tuple(int(n) for n in options.sizes.split(",")))
        for name, run in (("floor", floor), ("lag", bench_lag), ("scale", bench_scale),
                          ("convergence", lambda w: bench_convergence(w, range(1, 4))), ("open", bench_open)):
            if name in chosen:
                run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
