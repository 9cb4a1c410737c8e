"""Node checks: SSH with the recorded host key, hostname and /etc/hosts as planned, clock in sync."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from deploy.verify.context import Check, VerifyContext
from deploy.verify.model import VerifyTarget
from deploy.verify.retry import CheckFailure, Deadline

MAX_CLOCK_OFFSET = 5.0  # seconds


def checks(ctx: VerifyContext) -> list[Check]:
    found: list[Check] = []
    for t in ctx.targets:
        shell = ctx.shell(t)
        found += _node_checks(ctx, t, shell)
    return found


def _node_checks(ctx: VerifyContext, t: VerifyTarget, shell: Any) -> list[Check]:
    """The checks of one node; hostname and /etc/hosts only where the lab manages them."""
    found = [
        Check(
            "ssh with recorded host key",
            "nodes",
            partial(check_ssh, ctx, t),
            t.name,
            shell.reproduce("true"),
            Deadline(timeout=30, interval=3),
        ),
    ]
    if t.hostname:
        found.append(
            Check(
                "hostname",
                "nodes",
                partial(check_hostname, ctx, t),
                t.name,
                shell.reproduce("hostname"),
                Deadline(timeout=10, interval=2),
            )
        )
    if t.hosts_entries:
        found.append(
            Check(
                "/etc/hosts",
                "nodes",
                partial(check_hosts, ctx, t),
                t.name,
                shell.reproduce("cat /etc/hosts"),
                Deadline(timeout=10, interval=2),
            )
        )
    found.append(
        Check(
            "clock in sync",
            "nodes",
            partial(check_clock, ctx, t),
            t.name,
            shell.reproduce("date +%s.%N"),
            Deadline(timeout=60, interval=5),
        )
    )
    return found


def check_ssh(ctx: VerifyContext, t: VerifyTarget) -> None:
    shell = ctx.shell(t)
    result = shell.run("echo labdeploy-ssh-ok")
    if result.rc != 0 or "labdeploy-ssh-ok" not in result.stdout:
        raise CheckFailure(
            "SSH command",
            node=t.name,
            expected="'echo' prints labdeploy-ssh-ok, rc 0",
            seen=f"rc {result.rc}: {result.stdout}{result.stderr}",
            reproduce=shell.reproduce("echo labdeploy-ssh-ok"),
        )


def check_hostname(ctx: VerifyContext, t: VerifyTarget) -> None:
    shell = ctx.shell(t)
    seen = shell.run("hostname").stdout.strip()
    if seen != t.hostname:
        raise CheckFailure(
            "hostname",
            node=t.name,
            expected=t.hostname,
            seen=seen or "(empty)",
            reproduce=shell.reproduce("hostname"),
        )


def parse_hosts(text: str) -> dict[str, set[str]]:
    """/etc/hosts content as name -> addresses."""
    names: dict[str, set[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            names.setdefault(name, set()).add(fields[0])
    return names


def missing_hosts_entries(text: str, wanted: tuple[tuple[str, str], ...]) -> list[str]:
    """The wanted (address, name) pairs that /etc/hosts ``text`` lacks, as 'address name'."""
    names = parse_hosts(text)
    return [f"{addr} {name}" for addr, name in wanted if addr not in names.get(name, set())]


def check_hosts(ctx: VerifyContext, t: VerifyTarget) -> None:
    shell = ctx.shell(t)
    text = shell.run("cat /etc/hosts").stdout
    missing = missing_hosts_entries(text, t.hosts_entries)
    if missing:
        raise CheckFailure(
            "/etc/hosts entries",
            node=t.name,
            expected="lines mapping " + ", ".join(missing),
            seen=text,
            reproduce=shell.reproduce("cat /etc/hosts"),
        )


def check_clock(ctx: VerifyContext, t: VerifyTarget) -> None:
    """The node's clock is within MAX_CLOCK_OFFSET of the host's (works without NTP access)."""
    shell = ctx.shell(t)
    before = time.time()
    out = shell.run("date +%s.%N").stdout.strip()
    after = time.time()
    try:
        offset = float(out) - (before + after) / 2
    except ValueError:
        raise CheckFailure(
            "clock",
            node=t.name,
            expected="`date +%s.%N` prints epoch seconds",
            seen=out,
            reproduce=shell.reproduce("date +%s.%N"),
        ) from None
    if abs(offset) > MAX_CLOCK_OFFSET + (after - before) / 2:
        raise CheckFailure(
            "clock in sync",
            node=t.name,
            expected=f"within {MAX_CLOCK_OFFSET:.0f}s of the host's clock",
            seen=f"{offset:+.1f}s off (is chrony/systemd-timesyncd running?)",
            reproduce=shell.reproduce("date -u; timedatectl status"),
        )
