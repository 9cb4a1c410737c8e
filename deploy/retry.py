"""The one retry/poll helper: try again until a deadline, then say what was awaited.

    retry(fn, deadline_s=30, interval=0.5, retry_on=(NotYet,), describe="sshd on n1") -> T
    poll(read, until=ready, deadline_s=60, interval=backoff(0.2, 1.5, 2.0), describe="pod") -> T

Rules (the same for every caller):

- ``fn`` is called at once; when it raises one of ``retry_on`` (and ``give_up`` does not claim
  the error), it is called again after ``interval`` seconds, until the deadline passes or
  ``attempts`` calls were made. Any other exception propagates at once, as does a claimed one.
- A sleep never passes the deadline: the last wait is cut to the time left, and the last try
  starts at the deadline. Once the deadline has passed, no new try starts.
- When retrying ends unsuccessfully, :class:`RetryTimeout` is raised from the last error; it
  carries that error, the number of tries and the time spent, so the caller can turn it into
  its own message (a ProviderError, a CheckFailure ...).

``deadline`` may be given instead of ``deadline_s`` when the caller needs the same deadline
inside ``fn`` (e.g. to bound a socket timeout by the time left).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from deploy.errors import LabError

T = TypeVar("T")
Interval = float | Callable[[int], float]  # seconds, or seconds as a function of the tries made


@dataclass(frozen=True)
class Deadline:
    """A point in monotonic time, made from a duration."""

    seconds: float
    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(seconds, clock() + seconds, clock)

    def left(self) -> float:
        """Seconds until the deadline (negative once it passed)."""
        return self.at - self.clock()

    @property
    def passed(self) -> bool:
        return self.left() <= 0


class RetryTimeout(LabError):
    """Retrying ended without success; ``last`` is the last error (the cause of this one)."""

    def __init__(self, describe: str, last: BaseException, *, tries: int, elapsed: float, deadline_s: float) -> None:
        why = f"after {tries} attempt(s)" if elapsed < deadline_s else f"after {deadline_s:g}s ({tries} attempt(s))"
        super().__init__(f"timed out waiting for {describe} {why}; last error: {last}")
        self.describe = describe
        self.last = last
        self.tries = tries
        self.elapsed = elapsed
        self.deadline_s = deadline_s


class _Unmet(Exception, Generic[T]):
    """``poll``'s value did not satisfy ``until`` yet."""

    def __init__(self, value: T) -> None:
        super().__init__(f"not yet: {value!r}")
        self.value = value


def backoff(first: float, factor: float, cap: float) -> Callable[[int], float]:
    """Exponential intervals: ``first`` after the first try, times ``factor`` each try, at most ``cap``."""
    return lambda tries: min(cap, first * factor ** max(tries - 1, 0))


def retry(
    fn: Callable[[], T],
    *,
    describe: str,
    deadline_s: float | None = None,
    deadline: Deadline | None = None,
    interval: Interval = 1.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    give_up: Callable[[BaseException], bool] = lambda _exc: False,
    attempts: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``'s first successful result; :class:`RetryTimeout` when the deadline or attempts run out."""
    until = _deadline(deadline_s, deadline)
    start = until.clock()
    tries = 0
    while True:
        tries += 1
        try:
            return fn()
        except retry_on as exc:
            if give_up(exc):
                raise
            if (attempts is not None and tries >= attempts) or until.passed:
                elapsed = until.clock() - start
                raise RetryTimeout(describe, exc, tries=tries, elapsed=elapsed, deadline_s=until.seconds) from exc
        wait = interval(tries) if callable(interval) else interval
        sleep(max(0.0, min(wait, until.left())))


def poll(
    read: Callable[[], T],
    until: Callable[[T], bool],
    *,
    describe: str,
    deadline_s: float | None = None,
    deadline: Deadline | None = None,
    interval: Interval = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``read`` until ``until(value)`` holds; return that value.

    On timeout, :class:`RetryTimeout`'s ``last`` is a ``_Unmet`` whose ``value`` is the last value
    read (use :func:`last_value`). Exceptions of ``read`` propagate at once.
    """

    def check() -> T:
        value = read()
        if not until(value):
            raise _Unmet(value)
        return value

    return retry(
        check,
        describe=describe,
        deadline_s=deadline_s,
        deadline=deadline,
        interval=interval,
        retry_on=(_Unmet,),
        sleep=sleep,
    )


def last_value(timeout: RetryTimeout) -> Any:
    """The last value :func:`poll` read before it timed out."""
    last = timeout.last
    if not isinstance(last, _Unmet):
        raise TypeError("not a poll timeout") from timeout
    return last.value


def _deadline(seconds: float | None, deadline: Deadline | None) -> Deadline:
    if (seconds is None) == (deadline is None):
        raise TypeError("give exactly one of deadline_s and deadline")
    return deadline if deadline is not None else Deadline.after(float(seconds or 0.0))
