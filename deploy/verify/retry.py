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

    The last failure is re-raised with the number of attempts and the time spent added.
    Errors that are not CheckFailure (bugs, refused credentials) propagate at once.
    """
    start = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            return check()
        except CheckFailure as failure:
            spent = time.monotonic() - start
            if failure.final or _exhausted(deadline, tries, spent):
                failure.tries = f" (after {tries} attempt(s) in {spent:.1f}s)"
                failure.args = (failure.render(),)
                raise
        sleep(min(deadline.interval, max(0.0, deadline.timeout - (time.monotonic() - start))))


def _exhausted(deadline: Deadline, tries: int, spent: float) -> bool:
    if deadline.attempts is not None and tries >= deadline.attempts:
        return True
    return spent + deadline.interval > deadline.timeout
