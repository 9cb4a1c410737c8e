"""deploy.retry: deadlines hold, the last error is carried, no sleep passes the deadline."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from deploy.errors import LabError
from deploy.retry import Deadline, RetryTimeout, backoff, last_value, poll, retry


class FakeTime:
    """A clock that only sleeping advances (each call of ``fn`` may also spend time)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class NotYet(Exception):
    pass


def failing(t: FakeTime, cost: float = 0.0) -> tuple[list[float], Callable[[], None]]:
    calls: list[float] = []

    def fn() -> None:
        calls.append(t.now)
        t.now += cost
        raise NotYet(f"try {len(calls)}")

    return calls, fn


def test_retries_until_the_deadline_and_carries_the_last_error() -> None:
    t = FakeTime()
    calls, fn = failing(t)
    with pytest.raises(RetryTimeout) as info:
        retry(fn, describe="sshd on n1", deadline=Deadline.after(2.0, t.clock), interval=0.5,
              retry_on=(NotYet,), sleep=t.sleep)
    assert [c - 100 for c in calls] == [0, 0.5, 1.0, 1.5, 2.0]  # the last try starts at the deadline
    assert str(info.value.last) == "try 5"
    assert info.value.__cause__ is info.value.last
    assert info.value.tries == 5
    assert "timed out waiting for sshd on n1 after 2s (5 attempt(s)); last error: try 5" in info.value.message
    assert isinstance(info.value, LabError)


def test_no_sleep_passes_the_deadline() -> None:
    t = FakeTime()
    calls, fn = failing(t, cost=0.3)
    with pytest.raises(RetryTimeout):
        retry(fn, describe="x", deadline=Deadline.after(2.0, t.clock), interval=1.0,
              retry_on=(NotYet,), sleep=t.sleep)
    assert t.sleeps == pytest.approx([1.0, 0.4])  # 0.3 spent, 1.0 slept, 0.3 spent, only 0.4 left
    assert t.now - 100 == pytest.approx(2.3)  # the last try (0.3) started at the deadline
    assert len(calls) == 3


def test_success_returns_at_once_and_other_errors_are_not_retried() -> None:
    t = FakeTime()
    outcomes: list[str | Exception] = [NotYet("a"), NotYet("b"), "done"]

    def flaky() -> str:
        value = outcomes.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    assert retry(flaky, describe="x", deadline_s=60, interval=1, retry_on=(NotYet,), sleep=t.sleep) == "done"
    assert t.sleeps == [1, 1]

    def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        retry(buggy, describe="x", deadline_s=60, retry_on=(NotYet,), sleep=t.sleep)
    assert t.sleeps == [1, 1]


def test_give_up_raises_the_error_itself_and_attempts_cap_the_tries() -> None:
    t = FakeTime()
    calls, fn = failing(t)
    with pytest.raises(NotYet, match="try 1"):
        retry(fn, describe="x", deadline_s=60, retry_on=(NotYet,), give_up=lambda _e: True,
              sleep=t.sleep)
    calls.clear()
    with pytest.raises(RetryTimeout) as info:
        retry(fn, describe="x", deadline=Deadline.after(60, t.clock), attempts=3, interval=2,
              retry_on=(NotYet,), sleep=t.sleep)
    assert len(calls) == 3
    assert "after 3 attempt(s)" in info.value.message
    assert info.value.elapsed == pytest.approx(4.0)


def test_poll_returns_the_value_that_holds_and_reports_the_last_one() -> None:
    t = FakeTime()
    phases = iter(["Pending", "Pending", "Running"])
    got = poll(lambda: next(phases), lambda p: p == "Running", describe="pod", deadline_s=10, sleep=t.sleep)
    assert got == "Running"
    with pytest.raises(RetryTimeout) as info:
        poll(lambda: "Pending", lambda p: p == "Running", describe="pod",
             deadline=Deadline.after(1.0, t.clock), interval=0.4, sleep=t.sleep)
    assert last_value(info.value) == "Pending"
    assert t.sleeps[-3:] == pytest.approx([0.4, 0.4, 0.2])


def test_backoff_grows_to_its_cap() -> None:
    step = backoff(0.2, 1.5, 2.0)
    assert [step(n) for n in range(1, 9)] == pytest.approx([0.2, 0.3, 0.45, 0.675, 1.0125, 1.51875, 2.0, 2.0])


def test_exactly_one_deadline_is_required() -> None:
    with pytest.raises(TypeError):
        retry(lambda: 1, describe="x")
    with pytest.raises(TypeError):
        retry(lambda: 1, describe="x", deadline_s=1, deadline=Deadline.after(1))
