"""verify: entries: expect / expect_regex / expect_rc and retries."""

from __future__ import annotations

import pytest

from deploy.verify.entries import deadline, entry_problem, expectation
from deploy.verify.model import VerifyEntry
from deploy.verify.retry import CheckFailure, Deadline, retry


def entry(**kw: object) -> VerifyEntry:
    return VerifyEntry(name="e", run="true", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "rc", "out", "problem"),
    [
        ({}, 0, "", None),
        ({}, 1, "", "exit code 1"),
        ({"expect": "ok"}, 0, "readyz ok\n", None),
        ({"expect": "ok"}, 0, "not ready\n", "output without 'ok'"),
        ({"expect": "ok"}, 7, "ok", None),  # expect alone does not judge the exit code
        ({"expect": "ok", "expect_rc": 0}, 7, "ok", "exit code 7"),
        ({"expect_regex": r"^Ready\s+\d+$"}, 0, "x\nReady 3\n", None),
        ({"expect_regex": r"^Ready\s+\d+$"}, 0, "Ready three", "output not matching /^Ready\\s+\\d+$/"),
        ({"expect_rc": 3}, 3, "", None),
        ({"expect_rc": 3}, 0, "", "exit code 0"),
    ],
)
def test_entry_problem(kw: dict[str, object], rc: int, out: str, problem: str | None) -> None:
    assert entry_problem(entry(**kw), rc, out) == problem


def test_expectation_reads_like_a_sentence() -> None:
    assert expectation(entry()) == "exit code 0"
    assert expectation(entry(expect="ok", expect_rc=2)) == "output containing 'ok' and exit code 2"


def test_retries_become_attempts() -> None:
    d = deadline(entry(retries=2, timeout=5))
    assert d.attempts == 3
    assert d.timeout >= 15


def test_retry_until_success_then_stops() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise CheckFailure("flaky", expected="ok", seen="not yet")
        return "done"

    assert retry(flaky, Deadline(timeout=60, interval=1, attempts=5), sleep=slept.append) == "done"
    assert len(calls) == 3
    assert slept == [1, 1]


def test_retry_gives_up_after_attempts_and_says_so() -> None:
    def never() -> None:
        raise CheckFailure("api", expected="ok", seen="down", node="cp-1", reproduce="kubectl get --raw /readyz")

    with pytest.raises(CheckFailure) as failure:
        retry(never, Deadline(timeout=60, interval=0.5, attempts=2), sleep=lambda _s: None)
    text = str(failure.value)
    assert "api on cp-1 (after 2 attempt(s)" in text
    assert "expected: ok" in text
    assert "seen:     down" in text
    assert "reproduce: kubectl get --raw /readyz" in text


def test_retry_lets_bugs_through_at_once() -> None:
    calls: list[int] = []

    def buggy() -> None:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        retry(buggy, Deadline(timeout=60, interval=0.1, attempts=5), sleep=lambda _s: None)
    assert calls == [1]
