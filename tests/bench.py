"""make bench: figures, not assertions (machines here are shared and noisy; ratios are measured in one run).

1. build-jsonl memory: peak RSS for 10x more files must stay flat (it streams).
2. The whole make batch on a 1,000-file sample library against the emulator: seconds per stage.
3. Convergence at the real failure rates: failed files after each of three rounds, over several seeds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Emulator, rows  # noqa: E402
from objbatch.sample_library import build  # noqa: E402


def peak_rss_mb(cmd: list[str], stdin: Path) -> tuple[float, float]:
    started = time.monotonic()
    with open(stdin) as source:
        proc = subprocess.Popen(cmd, stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0, cmd
    return usage.ru_maxrss / 1024, time.monotonic() - started


def bench_build_memory(work: Path) -> None:
    figures = {}
    for count in (200, 2000):
        lib = work / f"mem{count}"
        build(lib / "library", lib / "lib.db", count=count, seed=1)
        subprocess.run([BIN / "select-pending", "--db", lib / "lib.db", "-o", lib / "select.jsonl"], check=True,
                       capture_output=True)
        figures[count] = peak_rss_mb([str(BIN / "build-jsonl"), "--manifest", str(lib / "m.jsonl")],
                                     lib / "select.jsonl")
    (small_rss, small_t), (big_rss, big_t) = figures[200], figures[2000]
    print(f"build-jsonl: 200 files {small_rss:.1f} MB peak, {small_t:.2f}s; 2,000 files {big_rss:.1f} MB peak, "
          f"{big_t:.2f}s; memory ratio {big_rss / small_rss:.2f} for 10x the files")


def bench_fetch_memory(work: Path) -> None:
    from conftest import request_lines

    emu = Emulator(work / "fetch-emulator", [])
    figures = {}
    try:
        for count in (300, 3000):
            (work / f"req{count}.jsonl").write_text(request_lines(count, prefix=f"n{count}-"))
            record = work / f"job{count}.json"
            with open(work / f"req{count}.jsonl") as source, open(record, "w") as out:
                subprocess.run([BIN / "batch-submit", "--run-name", f"m{count}", "--inline-max-requests", "0"],
                               stdin=source, stdout=out, stderr=subprocess.DEVNULL, env=emu.env, check=True)
            subprocess.run([BIN / "batch-wait", "--poll", "0.2", record], env=emu.env, check=True,
                           capture_output=True)
            started = time.monotonic()
            proc = subprocess.Popen([BIN / "batch-fetch", "--raw-dir", work / f"raw{count}", "-o",
                                     work / f"res{count}.jsonl", record], env=emu.env, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            assert status == 0
            figures[count] = (usage.ru_maxrss / 1024, time.monotonic() - started,
                              sum(f.stat().st_size for f in (work / f"raw{count}").iterdir()) / 1e6)
    finally:
        emu.stop()
    (small, small_t, small_mb), (big, big_t, big_mb) = figures[300], figures[3000]
    print(f"batch-fetch: 300 results ({small_mb:.1f} MB) {small:.1f} MB peak, {small_t:.2f}s; 3,000 results "
          f"({big_mb:.1f} MB) {big:.1f} MB peak, {big_t:.2f}s; memory ratio {big / small:.2f} for 10x the results")


def bench_pipeline(work: Path) -> None:
    lib = work / "pipe"
    build(lib / "library", lib / "lib.db", count=1000, seed=2)
    emu = Emulator(lib / "emulator", [])
    try:
        env = {**emu.env, "PATH": f"{BIN}:{os.environ['PATH']}"}
        stages = ["select.jsonl", "requests.jsonl", "job.json", "wait.jsonl", "results.jsonl", "decisions.jsonl",
                  "applied.json"]
        timings = []
        for stage in stages:
            started = time.monotonic()
            subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), f"{lib}/runs/b/{stage}",
                            f"DB={lib / 'lib.db'}", f"RUNS={lib / 'runs'}", "NAME=b", "POLL=0.2"], env=env,
                           check=True, capture_output=True)
            timings.append((stage.split(".")[0], time.monotonic() - started))
    finally:
        emu.stop()
    total = sum(t for _, t in timings)
    print(f"make batch, 1,007 files (emulator job time included): {total:.1f}s; "
          + ", ".join(f"{name} {t:.2f}s" for name, t in timings))


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
                                f"RUNS={work / f'runs{seed}'}", f"NAME=r{round_}", "POLL=0.1"], env=emu.env,
                               check=True, capture_output=True)
                failed.append(sum(1 for r in rows(work / f"c{seed}.db").values()
                                  if r["ai_metadata_status"] == "failed_validation"))
        finally:
            emu.stop()
        converged += failed[-1] == 0
        print(f"convergence seed {seed}: failed after rounds 1-3: {failed}")
    shutil.rmtree(home, ignore_errors=True)
    print(f"convergence: {converged}/{len(seeds)} seeds left no failed file after three rounds (301 files each)")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="objbatch-bench-"))
    os.environ.setdefault("XDG_STATE_HOME", str(work / "state"))
    try:
        bench_build_memory(work)
        bench_fetch_memory(work)
        bench_pipeline(work)
        bench_convergence(work, range(1, 6))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
