"""Runs the operation data fixtures, as pyinfra tests its own operations.

Each ``<module>.<operation>/<case>.json`` holds ``args``, the ``facts`` the host reports and
either the expected ``commands``, a ``noop_description``, or an ``exception``. Facts are keyed by
fact name (``facts.TomlFile``, ``files.File``), then by their arguments (``path=/etc/x``).
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.context import ctx_host

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*.*/*.json"))


def _fact_name(cls: Any) -> str:
    return str(cls.name).removeprefix("deploy.configure.")


def _args_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [",".join(map(str, a)) if isinstance(a, list) else str(a) for a in args]
    for key, value in sorted(kwargs.items()):
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key}={shown}")
    return ",".join(parts)


@dataclass
class FixtureHost:
    """Stands in for pyinfra's Host inside an operation: facts come from the fixture."""

    facts: dict[str, Any]
    noops: list[str] = field(default_factory=list)
    name: str = "fixture-host"

    def get_fact(self, cls: Any, *args: Any, **kwargs: Any) -> Any:
        name = _fact_name(cls)
        if name not in self.facts:
            raise AssertionError(f"fixture lacks fact {name} (args {args} {kwargs})")
        value = self.facts[name]
        if args or kwargs:
            key = _args_key(args, kwargs)
            if key not in value:
                raise AssertionError(f"fixture lacks fact {name} for {key!r}; has {sorted(value)}")
            value = value[key]
        return value

    def noop(self, description: str) -> None:
        self.noops.append(description)


def _command(cmd: Any) -> Any:
    if isinstance(cmd, str):
        return cmd.strip()
    if isinstance(cmd, StringCommand):
        return cmd.get_raw_value()
    if isinstance(cmd, FileUploadCommand):
        src = cmd.src.getvalue() if isinstance(cmd.src, StringIO) else str(cmd.src)
        return ["upload", cmd.dest, src]
    raise AssertionError(f"unexpected command type {type(cmd).__name__}: {cmd!r}")


def _operation(case: Path) -> Any:
    module_name, op_name = case.parent.name.split(".")
    module = importlib.import_module(f"deploy.configure.operations.{module_name}")
    return getattr(module, op_name)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.stem}" for c in CASES])
def test_operation_fixture(case: Path) -> None:
    data = json.loads(case.read_text())
    op = _operation(case)
    fake = FixtureHost(data.get("facts", {}))
    with ctx_host.use(fake):
        if "exception" in data:
            with pytest.raises(Exception, match=re.escape(data["exception"]["message"])) as caught:
                list(op._inner(**data.get("args", {})))
            assert type(caught.value).__name__ == data["exception"]["name"]
            assert data["exception"]["message"] in str(caught.value)
            return
        commands = [_command(c) for c in op._inner(**data.get("args", {}))]
    assert commands == data.get("commands", [])
    if "noop_description" in data:
        assert fake.noops == [data["noop_description"]]
    else:
        assert fake.noops == [], "an operation that yields commands must not also report a noop"


def test_every_custom_operation_has_a_change_and_a_noop_fixture() -> None:
    seen: dict[str, set[str]] = {}
    for case in CASES:
        data = json.loads(case.read_text())
        kind = "error" if "exception" in data else "noop" if "noop_description" in data else "change"
        seen.setdefault(case.parent.name, set()).add(kind)
    for module in ("containerd", "system"):
        mod = importlib.import_module(f"deploy.configure.operations.{module}")
        for name in dir(mod):
            if hasattr(getattr(mod, name), "_inner"):
                kinds = seen.get(f"{module}.{name}", set())
                assert {"change", "noop"} <= kinds, f"{module}.{name} needs change and noop fixtures"
