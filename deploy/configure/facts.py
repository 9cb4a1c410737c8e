"""Facts pyinfra does not ship, each a command plus a parser of its output."""

from __future__ import annotations

import shlex
import tomllib
from typing import Any

from pyinfra.api.facts import FactBase

_MISSING = "__labdeploy_missing__"


class LoadedKernelModule(FactBase[bool]):
    """Whether a kernel module is active (loaded or built in: /sys/module/<name> exists)."""

    def command(self, module: str) -> str:
        return f"test -d /sys/module/{shlex.quote(module)} && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"


class ActiveSwaps(FactBase[list[str]]):
    """Devices or files listed in /proc/swaps (swap in use now)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self) -> str:
        return "tail -n +2 /proc/swaps 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return [line.split()[0] for line in output if line.strip()]


class FstabSwaps(FactBase[list[str]]):
    """Active (uncommented) swap entries of /etc/fstab: their first field."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self) -> str:
        return "awk '$1 !~ /^#/ && $3 == \"swap\" {print $1}' /etc/fstab 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class TomlFile(FactBase[dict[str, Any] | None]):
    """A TOML file parsed into a dict; None when absent, {"__invalid__": reason} when unparsable."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return f"if test -e {quoted}; then cat {quoted}; else echo {_MISSING}; fi"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        if output == [_MISSING]:
            return None
        return parse_toml("\n".join(output))


class HeldPackages(FactBase[list[str]]):
    """Packages on hold in dpkg (apt-mark showhold)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self) -> str:
        return "apt-mark showhold"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class ContainerdImages(FactBase[list[str]]):
    """Image names in a containerd namespace (empty when containerd does not answer)."""

    @staticmethod
    def default() -> list[str]:
        return []

    def command(self, namespace: str) -> str:
        return f"ctr -n {shlex.quote(namespace)} image ls -q 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


class ContainerdImageDigests(FactBase[dict[str, str]]):
    """Image name -> target digest in a containerd namespace (``ctr image ls``; empty when it does not answer)."""

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def command(self, namespace: str) -> str:
        return f"ctr -n {shlex.quote(namespace)} image ls 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, str]:
        images = {}
        for line in output:
            fields = line.split()
            if len(fields) >= 3 and fields[0] != "REF" and fields[2].startswith("sha256:"):
                images[fields[0]] = fields[2]
        return images


def parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML text; a broken file becomes {"__invalid__": reason} so it compares unequal."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {"__invalid__": str(exc)}
