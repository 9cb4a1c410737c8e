"""The configure stage: drives pyinfra in-process over the lab's hosts, then gates on idempotence.

    configure(targets, settings, known_hosts=...) -> ConfigureResult

A pass connects to every host (strict host-key checking against the lab's known_hosts),
prepares each host's deploy steps from its roles (``ROLE_DEPLOYS``), runs them, and reports
per operation whether it changed the host. With ``idempotence_check`` a second pass runs and
must change nothing, as molecule's idempotence step demands; otherwise StageError lists every
host and operation that changed again. A first pass that changed nothing is its own proof of
convergence, so a no-op re-run of a converged lab costs one pass, not two.
"""

from __future__ import annotations

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
    """Per host, the operations of the (first) pass; ``recheck`` holds the idempotence pass.

    When the first pass changed nothing, ``recheck`` is that same pass (no second one runs).
    """

    hosts: dict[str, HostResult]
    recheck: dict[str, HostResult] | None
    seconds: float

    @property
    def changed(self) -> dict[str, list[str]]:
        return {name: res.changed for name, res in self.hosts.items() if res.changed}


def configure(
    targets: list[HostTarget],
    settings: ConfigureSettings,
    *,
    known_hosts: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    idempotence_check: bool = True,
    parallel: int | None = None,
) -> ConfigureResult:
    """Configure every target with a built-in role; raises ConfigError or StageError."""
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
    recheck = None
    if idempotence_check and not any(res.changed for res in first.values()):
        recheck = first  # nothing changed: this pass already was the idempotence check
    elif idempotence_check:
        recheck = run_pass(chosen, settings, pass_no=2, **common)
        _emit_summary(emit, 2, recheck)
        _gate(recheck)
    return ConfigureResult(first, recheck, round(time.monotonic() - start, 3))


def _emit_summary(emit: Callable[[dict[str, Any]], None], pass_no: int, results: dict[str, HostResult]) -> None:
    changed = {name: res.changed for name, res in results.items()}
    emit(
        {
            "event": "pass",
            "pass": pass_no,
            "changed": sum(len(v) for v in changed.values()),
            "ops": sum(len(r.ops) for r in results.values()),
            "hosts": sorted(results),
        }
    )


def _gate(recheck: dict[str, HostResult]) -> None:
    offending = {name: res.changed for name, res in recheck.items() if res.changed}
    if not offending:
        return
    lines = [f"{name}: {', '.join(ops)}" for name, ops in sorted(offending.items())]
    raise StageError(
        "configure",
        "idempotence check failed: a second pass changed again\n" + "\n".join(lines),
        host=sorted(offending)[0],
        hint="each listed operation must compare the host's facts with the wanted state before acting",
    )
