"""Polling: how a run's jobs are watched until every one is terminal. The schedule adapts to the job: it
learns the rate at which requests complete, predicts when the job will end, and polls more often as that
moment approaches and right after it, less often while the job is queued or far from done. The poll
setting is the longest interval; the shortest is 2 s (the service rate-limits reads), which
OBJBATCH_MIN_POLL lowers for the local emulator and the tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from . import client, config
from .client import RUNNING
from .common import NotFinished, Progress


def min_poll() -> float:
    """Seconds between status requests, at least (per job: the service rate-limits reads)."""
    return config.wait_seconds("OBJBATCH_MIN_POLL")


@dataclass
class Schedule:
    """When to look again. `ceiling` is --poll, `floor` the shortest interval. The rate is measured from the
    first look at which requests were completing; the end is predicted from it."""

    ceiling: float
    floor: float
    started: float
    first: tuple[float, int] | None = None   # (time, completed) when progress was first seen
    last: tuple[float, int, int] = (0.0, 0, 0)  # (time, completed, total) of the latest look

    def observe(self, now: float, completed: int, total: int) -> None:
        if self.first is None and completed > 0:
            self.first = (now, completed)
        self.last = (now, completed, total)

    def rate(self) -> float | None:
        """Requests completed a second, over the time the job has been making progress."""
        if self.first is None:
            return None
        span = self.last[0] - self.first[0]
        return (self.last[1] - self.first[1]) / span if span > 0 and self.last[1] > self.first[1] else None

    def eta(self) -> float | None:
        """Seconds from the latest look to the predicted end."""
        rate = self.rate()
        return (self.last[2] - self.last[1]) / rate if rate else None

    def interval(self, now: float) -> float:
        eta = self.eta()
        if eta is None:  # queued, or no rate yet: look often at first, then less (the job may be quick)
            wanted = (now - self.started) / 4
        else:
            ends = self.last[0] + eta
            # before the predicted end: half the time left; after it, a little more each time
            wanted = (ends - now) / 2 if now < ends else (now - ends) / 2
        return min(max(wanted, self.floor), max(self.ceiling, self.floor))


def progress_line(jobs: list[dict[str, Any]], elapsed: float, schedule: Schedule | None = None) -> str:
    total = sum(j["total_requests"] for j in jobs)
    done = sum(j["completed_requests"] for j in jobs)
    ok = sum(j["succeeded_requests"] for j in jobs)
    failed = sum(j["failed_requests"] for j in jobs)
    statuses = ",".join(sorted({j["status"] for j in jobs}))
    percent = f" ({100 * done // total}%)" if total else ""
    line = f"batch-wait: {statuses} {done}/{total}{percent} done, {ok} succeeded, {failed} failed"
    rate = schedule.rate() if schedule else None
    if rate:
        line += f", {rate:,.1f}/s"
    line += f", {_clock(elapsed)} elapsed"
    eta = schedule.eta() if schedule else None
    if eta is not None and any(j["status"] in RUNNING for j in jobs):
        line += f", ETA {_clock(eta)}"
    return line


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def wait(service: client.Service, job_ids: list[str], poll: float, timeout: float,
         on_poll: Callable[[list[dict[str, Any]]], None] = lambda jobs: None,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         on_finished: Callable[[dict[str, Any]], None] = lambda job: None,
         known: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Poll until all jobs are terminal (on the adaptive schedule); NotFinished after `timeout` seconds.
    `on_finished` is called once for each job as soon as it is seen terminal. The `known` jobs (ended, their
    results kept) are taken as they are, without asking the service."""
    known = known or {}
    started = clock()
    seen_finished: set[str] = set()
    schedule = Schedule(ceiling=poll, floor=min_poll(), started=started)
    progress = Progress()
    while True:
        jobs = [known[job_id] if job_id in known else service.get_job(job_id) for job_id in job_ids]
        now = clock()
        on_poll(jobs)
        for job in jobs:
            if job["status"] not in RUNNING and job["id"] not in seen_finished:
                seen_finished.add(job["id"])
                on_finished(job)
        schedule.observe(now, sum(j["completed_requests"] for j in jobs), sum(j["total_requests"] for j in jobs))
        line = progress_line(jobs, now - started, schedule)
        progress.update(line, line.split(",", 1)[0] + str([j["completed_requests"] for j in jobs]))
        running = [j for j in jobs if j["status"] in RUNNING]
        if not running:
            progress.done()
            return jobs
        pause = schedule.interval(now)
        if now - started + pause > timeout:
            progress.done()
            raise NotFinished(
                f"job {', '.join(j['id'] for j in running)} is still {running[0]['status']} "
                f"({sum(j['completed_requests'] for j in running)}/{sum(j['total_requests'] for j in running)}) "
                f"after {_clock(now - started)}; nothing is lost: rerun the same command (or make batch) later to "
                "collect it", label="still running")
        sleep(pause)
