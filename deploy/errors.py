"""The one exception tree of labdeploy.

Library code raises; only :mod:`deploy.cli` formats errors and sets exit codes::

    LabError                      exit 1   base of every error a user can cause or meet
    ├── ConfigError               exit 3   the lab file or its references are wrong
    │                                      (carries file, line, column and YAML path)
    ├── PlanError                 exit 4   the lab cannot be planned (cycle, unsupported stage)
    ├── ProviderError             exit 5   a hypervisor/provider refused or is unreachable
    ├── StageError(stage, host)   exit 6   a step of a run failed on a host
    ├── StateError                exit 7   the state store is locked or unreadable
    └── VerificationError         exit 8   post-deploy checks failed

Every error has a ``hint`` (how to fix it) that the CLI prints under the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where in a lab file a problem sits."""

    file: str
    line: int | None = None
    column: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: at {self.path}" if self.path else where


@dataclass(frozen=True)
class Problem:
    """One mistake in a lab file: message, where it is, and how to fix it."""

    message: str
    location: Location
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location.file else self.message
        return f"{text}\n    fix: {self.hint}" if self.hint else text


class LabError(Exception):
    """Base of every labdeploy error."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(LabError):
    """The lab file (or something it names) is wrong. Holds every problem found."""

    exit_code = 3

    def __init__(self, problems: list[Problem] | str, *, hint: str = "") -> None:
        if isinstance(problems, str):
            problems = [Problem(problems, Location(""), hint)]
        self.problems = problems
        if len(problems) == 1 and not problems[0].location.file:
            super().__init__(problems[0].message, hint=problems[0].hint)
            return
        head = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{head} in the lab:\n" + "\n".join(str(p) for p in problems), hint="")


class PlanError(LabError):
    """The lab cannot be turned into a plan."""

    exit_code = 4


class ProviderError(LabError):
    """A provider (libvirt, vSphere, ...) failed or cannot be reached."""

    exit_code = 5


class StageError(LabError):
    """A step of a run failed; names the stage and, where there is one, the host."""

    exit_code = 6

    def __init__(self, stage: str, message: str, *, host: str | None = None, hint: str = "",
                 left: dict[str, Any] | None = None) -> None:
        self.stage = stage
        self.host = host
        self.left = left  # what the failed step left behind, recorded as its outputs (so a removal can undo it)
        where = f"{stage}" + (f" on {host}" if host else "")
        super().__init__(message if message.startswith(where) else f"{where}: {message}", hint=hint)


class StateError(LabError):
    """The lab's state is locked by another run or cannot be read."""

    exit_code = 7


class VerificationError(LabError):
    """Post-deploy verification found failures."""

    exit_code = 8

    def __init__(self, message: str, *, failed: list[str] | None = None, hint: str = "") -> None:
        self.failed = failed or []
        super().__init__(message, hint=hint)
