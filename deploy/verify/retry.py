"""Checks that retry until a deadline, and the failure every check raises.

A :class:`CheckFailure` is an ``AssertionError`` so pytest reports it as a test failure (not an
error); its text always says what was expected, what was seen, on which node, and the command
that reproduces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from deploy.retry import RetryTimeout
from deploy.retry import retry as _retry

T = TypeVar("T")


class CheckFailure(AssertionError):
    """A check saw something other than what it expected."""

    def __init__(
        self,
        what: str,
        *,
        expected: str,
        seen: str,
        node: str | None = None,
        reproduce: str = "",
        final: bool = False,
    ) -> None:
        self.what = what
        self.expected = expected
        self.seen = seen
        self.node = node
        self.reproduce = reproduce
        self.tries = ""
        self.final = final  # retrying cannot help (e.g. a changed host key)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.what + (f" on {self.node}" if self.node else "") + self.tries]
        lines.append(f"  expected: {self.expected}")
        lines.append(f"  seen:     {_clip(self.seen)}")
        if self.reproduce:
            lines.append(f"  reproduce: {self.reproduce}")
        return "\n".join(lines)


def _clip(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f" ... ({len(text) - limit} more chars)"


@dataclass(frozen=True)
class Deadline:
    """How long a check may keep retrying, and how long it waits between tries."""

    timeout: float = 60.0
    interval: float = 2.0
    attempts: int | None = None  # stop after this many tries even before the timeout


def retry(check: Callable[[], T], deadline: Deadline, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``check`` until it returns without a CheckFailure or the deadline passes.

    The last failure is re-raised with the number of attempts and the time spent added; a
    ``final`` failure is not retried. Errors that are not CheckFailure (bugs, refused
    credentials) propagate at once. The loop is :func:`deploy.retry.retry`.
    """
    start = time.monotonic()
    tries = 0

    def attempt() -> T:
        nonlocal tries
        tries += 1
        return check()

    try:
        return _retry(
            attempt,
            describe="a check",
            deadline_s=deadline.timeout,
            interval=deadline.interval,
            attempts=deadline.attempts,
            retry_on=(CheckFailure,),
            give_up=lambda exc: isinstance(exc, CheckFailure) and exc.final,
            sleep=sleep,
        )
    except RetryTimeout as timeout:
        failure = timeout.last
        if not isinstance(failure, CheckFailure):
            raise
        _annotate(failure, tries, time.monotonic() - start)
        raise failure from None
    except CheckFailure as failure:  # final: retrying cannot help
        _annotate(failure, tries, time.monotonic() - start)
        raise


def _annotate(failure: CheckFailure, tries: int, spent: float) -> None:
    failure.tries = f" (after {tries} attempt(s) in {spent:.1f}s)"
    failure.args = (failure.render(),)
