"""Everything one verify run's checks share: the lab's targets, SSH shells, the cluster client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.verify.model import ClusterExpect, VerifyEntry, VerifyTarget
from deploy.verify.remote import NodeShell, ShellPool
from deploy.verify.retry import CheckFailure, Deadline


@dataclass(frozen=True)
class Check:
    """One built-in or entry check: a callable that raises CheckFailure when the lab is wrong."""

    name: str
    layer: str
    run: Callable[[], None]
    node: str | None = None
    reproduce: str = ""
    deadline: Deadline = field(default_factory=Deadline)

    @property
    def test_id(self) -> str:
        return f"{self.layer}: {self.name}" + (f" [{self.node}]" if self.node else "")


@dataclass
class VerifyContext:
    targets: tuple[VerifyTarget, ...]
    entries: tuple[VerifyEntry, ...]
    known_hosts: Path
    kubeconfig: Path | None
    runtimes: tuple[str, ...]
    layers: frozenset[str]
    lab_file_dir: Path
    cluster: ClusterExpect = field(default_factory=ClusterExpect)
    max_wait: float | None = None  # caps every check's retry deadline (fail fast on a settled lab)
    shells: ShellPool = field(init=False)
    _api: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.shells = ShellPool(self.known_hosts)

    def shell(self, target: VerifyTarget) -> NodeShell:
        return self.shells.get(target.name, target.ssh)

    def api(self) -> Any:
        """The official kubernetes ``ApiClient`` on the lab's kubeconfig (made once)."""
        if self._api is None:
            if self.kubeconfig is None:
                raise CheckFailure(
                    "Kubernetes API client",
                    expected="a kubeconfig (the lab's or --kubeconfig)",
                    seen="none given",
                    reproduce="deploy verify LAB --kubeconfig PATH",
                )
            from kubernetes import config

            path = str(self.kubeconfig)
            self._api = config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        return self._api

    def kubectl(self, args: str) -> str:
        """The kubectl command line that reproduces a cluster check by hand."""
        where = f"--kubeconfig {self.kubeconfig} " if self.kubeconfig else ""
        return f"kubectl {where}{args}"

    def select(self, hosts: str) -> list[VerifyTarget]:
        """Targets named by a ``hosts:`` value: "all", a group name or a node name."""
        if hosts == "all":
            return list(self.targets)
        return [t for t in self.targets if hosts in (t.group, t.name)]

    def close(self) -> None:
        self.shells.close()
        if self._api is not None:
            self._api.close()
            self._api = None
