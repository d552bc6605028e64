"""This process's limit counters (the embedded store, and Redis's stand-in during an outage), on a fake
clock: the windows are exact, a refusal counts nothing, a reservation settles to what was used."""

from __future__ import annotations

import pytest

from chatllm.kernel.access import TokenLimits
from chatllm.kernel.state.windows import DailyCounter, WindowCounters


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_sixty_seconds_ever_hold_more_than_rpm_admissions() -> None:
    clock = Clock()
    counters = WindowCounters(60.0, clock)
    limits = TokenLimits(rpm=3)
    admitted = []
    for step in range(600):  # a request every half second for five minutes
        clock.now = 1000.0 + step * 0.5
        if counters.admit(f"t{step}", "a", limits) is None:
            admitted.append(clock.now)
            counters.settle(f"t{step}", "a", 0)
    for index, at in enumerate(admitted):
        assert sum(1 for other in admitted[index:] if other < at + 60.0) <= 3
    assert len(admitted) == 15  # 3 per 60 s, for 300 s


def test_a_refusal_says_when_the_window_frees_up_and_counts_nothing() -> None:
    clock = Clock()
    counters = WindowCounters(60.0, clock)
    limits = TokenLimits(rpm=2, streams=5)
    assert counters.admit("t1", "a", limits) is None
    clock.now += 20
    assert counters.admit("t2", "a", limits) is None
    refusal = counters.admit("t3", "a", limits)
    assert refusal is not None and refusal.limit == "rpm" and refusal.retry_after == pytest.approx(40.0)
    assert counters.streams("a") == 2
    clock.now += 40.0
    assert counters.admit("t4", "a", limits) is None


def test_tokens_per_minute_wait_for_enough_reservations_to_expire() -> None:
    clock = Clock()
    counters = WindowCounters(60.0, clock)
    limits = TokenLimits(tpm=100)
    for step, tokens in enumerate((40, 30, 30)):
        clock.now = 1000.0 + step * 10
        assert counters.admit(f"t{step}", "a", limits) is None
        assert counters.reserve(f"t{step}", "a", limits, tokens) is None
    clock.now = 1030.0
    refusal = counters.admit("t9", "a", limits)
    assert refusal is not None and refusal.limit == "tpm" and refusal.retry_after == pytest.approx(30.0)
    counters.settle("t1", "a", 5)  # it used 5 of its 30: 75 used, room for 25
    assert counters.admit("t9", "a", limits) is None
    refusal = counters.reserve("t9", "a", limits, 50)
    # 40 (t0, expires at 1060) must go for 50 to fit: 35 left + 50 <= 100
    assert refusal is not None and refusal.retry_after == pytest.approx(30.0) and refusal.asked == 50
    assert counters.reserve("t9", "a", limits, 25) is None


def test_the_daily_counter_reserves_and_settles() -> None:
    daily = DailyCounter()
    assert daily.reserve("a", "2026-12-07", 80, 100) is None
    daily.settle("a", "2026-12-07", 80, 30)
    assert daily.reserve("a", "2026-12-07", 80, 100) == 30  # 30 + 80 > 100: refused, nothing reserved
    assert daily.reserve("a", "2026-12-07", 70, 100) is None
    assert daily.used("a", "2026-12-07") == 100 and daily.used("a", "2026-12-08") == 0
