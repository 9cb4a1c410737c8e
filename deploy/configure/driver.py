"""The configure stage: drives pyinfra in-process over the lab's hosts, then gates on idempotence.

    configure(targets, settings, known_hosts=...) -> ConfigureResult
    result.hosts[name].error      # StageError | None: why that host failed
    result.check()                # raise one StageError if any host failed

A pass connects to every host (strict host-key checking against the lab's known_hosts),
prepares each host's deploy steps from its roles (``ROLE_DEPLOYS``), runs them, and reports
per operation whether it changed the host. A host that cannot be reached, or whose operation
fails, fails alone: its HostResult carries the StageError, the other hosts go on. Only a
batch-wide failure (invalid settings: ConfigError) raises. With ``idempotence_check`` a second
pass runs on every host that changed and succeeded, and must change nothing, as molecule's
idempotence step demands; a host that changed again fails with the operations that did. A
host whose first pass changed nothing is its own proof of convergence, so a no-op re-run of
a converged lab costs one pass, not two.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.configure.deploys import ROLE_DEPLOYS, steps_for_roles
from deploy.configure.inventory import HostTarget
from deploy.configure.passes import HostResult, OpResult, run_pass
from deploy.configure.settings import ConfigureSettings, validate_settings
from deploy.errors import ConfigError, Location, Problem, StageError

__all__ = ["ROLE_DEPLOYS", "ConfigureResult", "HostResult", "HostTarget", "OpResult", "configure"]


@dataclass(frozen=True)
class ConfigureResult:
    """Per host, the operations of the (first) pass and the host's outcome (``error``).

    ``recheck`` holds each host's idempotence pass; a host whose first pass changed nothing
    (or failed) keeps its first pass there, and when no host changed ``recheck`` is ``hosts``.
    ``hosts[name].error`` is the host's failure in either pass or at the idempotence gate.
    """

    hosts: dict[str, HostResult]
    recheck: dict[str, HostResult] | None
    seconds: float

    @property
    def changed(self) -> dict[str, list[str]]:
        return {name: res.changed for name, res in self.hosts.items() if res.changed}

    @property
    def failed(self) -> dict[str, StageError]:
        """The StageError of every host that failed (either pass, or the idempotence gate)."""
        return {name: res.error for name, res in self.hosts.items() if res.error is not None}

    def check(self) -> ConfigureResult:
        """This result when every host succeeded; else one StageError naming every failed host."""
        failed = self.failed
        if not failed:
            return self
        if len(failed) == 1:
            raise next(iter(failed.values()))
        first = min(failed)
        raise StageError(
            "configure",
            f"{len(failed)} hosts failed:\n" + "\n".join(failed[name].message for name in sorted(failed)),
            host=first,
            hint=failed[first].hint,
        )


def configure(
    targets: list[HostTarget],
    settings: ConfigureSettings,
    *,
    known_hosts: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    idempotence_check: bool = True,
    parallel: int | None = None,
) -> ConfigureResult:
    """Configure every target with a built-in role; per-host failures are in the result.

    Raises ConfigError for settings no host can be configured with.
    """
    problems = validate_settings(settings, {t.name: t.roles for t in targets})
    if problems:
        raise ConfigError([Problem(p, Location("lab"), "") for p in problems])
    emit = on_event or (lambda _event: None)
    chosen = [t for t in targets if steps_for_roles(t.roles)]
    start = time.monotonic()
    if not chosen:
        return ConfigureResult({}, None, 0.0)
    common: dict[str, Any] = {"known_hosts": known_hosts, "emit": emit, "parallel": parallel}
    first = run_pass(chosen, settings, pass_no=1, **common)
    _emit_summary(emit, 1, first)
    if not idempotence_check:
        return ConfigureResult(first, None, round(time.monotonic() - start, 3))
    again = [t for t in chosen if first[t.name].ok and first[t.name].changed]
    if not again:
        # nothing changed: this pass already was the idempotence check
        return ConfigureResult(first, first, round(time.monotonic() - start, 3))
    second = run_pass(again, settings, pass_no=2, **common)
    _emit_summary(emit, 2, second)
    recheck = {name: second.get(name, res) for name, res in first.items()}
    hosts = {name: _outcome(res, second.get(name)) for name, res in first.items()}
    return ConfigureResult(hosts, recheck, round(time.monotonic() - start, 3))


def _emit_summary(emit: Callable[[dict[str, Any]], None], pass_no: int, results: dict[str, HostResult]) -> None:
    changed = {name: res.changed for name, res in results.items()}
    emit(
        {
            "event": "pass",
            "pass": pass_no,
            "changed": sum(len(v) for v in changed.values()),
            "ops": sum(len(r.ops) for r in results.values()),
            "hosts": sorted(results),
            "failed": sorted(name for name, res in results.items() if res.error is not None),
        }
    )


def _outcome(first: HostResult, second: HostResult | None) -> HostResult:
    """The host's first-pass result carrying its failure in the idempotence pass, if any."""
    if second is None or first.error is not None:
        return first
    error = second.error or _gate(second)
    return dataclasses.replace(first, error=error) if error else first


def _gate(recheck: HostResult) -> StageError | None:
    if not recheck.changed:
        return None
    return StageError(
        "configure",
        f"idempotence check failed: a second pass changed again\n{recheck.name}: {', '.join(recheck.changed)}",
        host=recheck.name,
        hint="each listed operation must compare the host's facts with the wanted state before acting",
    )
