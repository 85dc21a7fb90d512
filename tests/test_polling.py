"""batch-wait's adaptive polling on a fake clock: the rules of the schedule, the lag after a job ends, and the
progress line with its ETA. A fake job source stands in for the service here: this is the schedule's logic,
not the HTTP path (the emulator tests cover that). No timing assertion: time is simulated."""

from __future__ import annotations

import pytest

from objbatch.common import NotFinished
from objbatch.polling import Schedule, progress_line, wait


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class Job:
    """A job that is queued for `queued` seconds, then completes `rate` requests a second."""

    def __init__(self, clock: Clock, total: int, queued: float, rate: float):
        self.clock, self.total, self.rate = clock, total, rate
        self.starts = clock.now + queued
        self.ends = self.starts + total / rate
        self.looks: list[float] = []

    def get_job(self, job_id: str) -> dict:
        self.looks.append(self.clock.now)
        done = min(self.total, max(0, int((self.clock.now - self.starts) * self.rate)))
        status = "QUEUED" if self.clock.now < self.starts else "RUNNING" if done < self.total else "SUCCESS"
        return {"id": job_id, "status": status, "total_requests": self.total, "completed_requests": done,
                "succeeded_requests": done, "failed_requests": 0}


def run_job(monkeypatch, total, queued, rate, poll=30.0, floor=2.0, timeout=1e9):
    monkeypatch.setenv("OBJBATCH_MIN_POLL", str(floor))
    clock = Clock()
    job = Job(clock, total, queued, rate)
    jobs = wait(job, ["j"], poll, timeout, clock=clock, sleep=clock.sleep)
    gaps = [b - a for a, b in zip(job.looks, job.looks[1:], strict=False)]
    return job, jobs, gaps


@pytest.mark.parametrize("total, queued, rate", [(723, 20, 723 / 66), (21, 30, 21 / 150), (20_000, 25, 6.0),
                                                  (5, 0, 100.0)])
def test_never_faster_than_the_floor_nor_slower_than_poll_and_close_after_the_end(monkeypatch, total, queued, rate):
    job, jobs, gaps = run_job(monkeypatch, total, queued, rate)
    assert jobs[0]["status"] == "SUCCESS"
    assert all(2.0 <= gap <= 30.0 for gap in gaps), gaps
    assert job.looks[-1] - job.ends <= 10  # results are collected within 10 s of the job's end


def test_the_interval_tightens_towards_the_predicted_end(monkeypatch):
    job, _, gaps = run_job(monkeypatch, total=3600, queued=10, rate=2.0)  # a 30-minute job
    running = [(t, g) for t, g in zip(job.looks, gaps, strict=False) if job.starts < t < job.ends]
    far = [g for t, g in running if job.ends - t > 120 and t > job.starts + 60]  # the rate is known by then
    near = [g for t, g in running if job.ends - t < 30]
    assert far and near and max(near) < min(far)
    assert min(far) == 30.0  # POLL is the ceiling while the end is far


def test_poll_is_the_ceiling_and_the_floor_wins_over_a_smaller_poll(monkeypatch):
    _, _, gaps = run_job(monkeypatch, total=600, queued=5, rate=1.0, poll=10)
    assert max(gaps) == 10
    _, _, gaps = run_job(monkeypatch, total=50, queued=5, rate=5.0, poll=0.1, floor=2.0)
    assert min(gaps) == 2.0  # POLL below the service's floor never polls faster than the floor


def test_a_queued_job_is_looked_at_often_first_then_less(monkeypatch):
    job, _, gaps = run_job(monkeypatch, total=10, queued=600, rate=10.0)
    queued = [g for t, g in zip(job.looks, gaps, strict=False) if t < job.starts]
    assert queued[0] == 2.0 and queued[-1] == 30.0 and queued == sorted(queued)


def test_timeout_stops_waiting_with_75_and_says_still_running(monkeypatch):
    with pytest.raises(NotFinished) as stopped:
        run_job(monkeypatch, total=100, queued=1000, rate=1.0, timeout=60)
    assert stopped.value.code == 75 and stopped.value.label == "still running"
    assert "is still QUEUED (0/100) after" in str(stopped.value)


def test_the_eta_line_for_a_job_whose_rate_is_known():
    schedule = Schedule(ceiling=30, floor=2, started=0)
    job = {"id": "j", "status": "RUNNING", "total_requests": 1000, "succeeded_requests": 0, "failed_requests": 0}
    for now, done in [(0, 0), (10, 100), (20, 200)]:
        schedule.observe(now, done, 1000)
    assert schedule.rate() == pytest.approx(10.0) and schedule.eta() == pytest.approx(80.0)
    line = progress_line([{**job, "completed_requests": 200, "succeeded_requests": 198, "failed_requests": 2}], 20,
                         schedule)
    assert line == "batch-wait: RUNNING 200/1000 (20%) done, 198 succeeded, 2 failed, 10.0/s, 0:20 elapsed, ETA 1:20"
    assert schedule.interval(20) == 30  # 80 s to go: half of it, capped at POLL
    assert schedule.interval(90) == 5  # 10 s to go: half of it
    assert schedule.interval(99.5) == 2  # the floor
    assert schedule.interval(110) == 5  # past the predicted end: a little more each time
    done = progress_line([{**job, "status": "SUCCESS", "completed_requests": 1000, "succeeded_requests": 1000}],
                         95, schedule)
    assert "ETA" not in done and "1000/1000 (100%)" in done
