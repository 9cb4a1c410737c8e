"""The lab's ``verify:`` shell entries as checks: run a command on the chosen nodes, compare its result."""

from __future__ import annotations

import re
from functools import partial

from deploy.verify.context import Check, VerifyContext
from deploy.verify.model import VerifyEntry, VerifyTarget
from deploy.verify.retry import CheckFailure, Deadline

INTERVAL = 2.0


def expectation(entry: VerifyEntry) -> str:
    """What the entry expects, in words."""
    parts = []
    if entry.expect is not None:
        parts.append(f"output containing {entry.expect!r}")
    if entry.expect_regex is not None:
        parts.append(f"output matching /{entry.expect_regex}/")
    if entry.expect_rc is not None or not parts:
        parts.append(f"exit code {entry.expect_rc if entry.expect_rc is not None else 0}")
    return " and ".join(parts)


def entry_problem(entry: VerifyEntry, rc: int, stdout: str) -> str | None:
    """Why a command's result misses the entry's expectations, or None when it meets them all."""
    wants_rc = (
        entry.expect_rc
        if entry.expect_rc is not None
        else (0 if entry.expect is None and entry.expect_regex is None else None)
    )
    if wants_rc is not None and rc != wants_rc:
        return f"exit code {rc}"
    if entry.expect is not None and entry.expect not in stdout:
        return f"output without {entry.expect!r}"
    if entry.expect_regex is not None and not re.search(entry.expect_regex, stdout, re.MULTILINE):
        return f"output not matching /{entry.expect_regex}/"
    return None


def deadline(entry: VerifyEntry) -> Deadline:
    attempts = max(1, entry.retries + 1)
    return Deadline(timeout=attempts * (entry.timeout + INTERVAL), interval=INTERVAL, attempts=attempts)


def checks(ctx: VerifyContext) -> list[Check]:
    found: list[Check] = []
    for entry in ctx.entries:
        if entry.run is None:
            continue
        targets = ctx.select(entry.hosts)
        if not targets:
            found.append(Check(entry.name, "user", partial(_no_hosts, ctx, entry), deadline=Deadline(attempts=1)))
        for t in targets:
            found.append(
                Check(
                    entry.name,
                    "user",
                    partial(run_entry, ctx, entry, t),
                    t.name,
                    ctx.shell(t).reproduce(entry.run),
                    deadline(entry),
                )
            )
    return found


def _no_hosts(ctx: VerifyContext, entry: VerifyEntry) -> None:
    names = sorted({t.name for t in ctx.targets} | {t.group for t in ctx.targets if t.group})
    raise CheckFailure(
        f"verify entry {entry.name!r}",
        expected=f"hosts: all, or one of {', '.join(names)}",
        seen=f"hosts: {entry.hosts!r} matches no node",
    )


def run_entry(ctx: VerifyContext, entry: VerifyEntry, t: VerifyTarget) -> None:
    assert entry.run is not None
    shell = ctx.shell(t)
    result = shell.run(entry.run, timeout=entry.timeout)
    problem = entry_problem(entry, result.rc, result.stdout)
    if problem:
        raise CheckFailure(
            f"verify entry {entry.name!r}",
            node=t.name,
            expected=expectation(entry),
            seen=f"{problem}; rc {result.rc}; stdout: {result.stdout.strip()!r}; stderr: {result.stderr.strip()!r}",
            reproduce=shell.reproduce(entry.run),
        )
