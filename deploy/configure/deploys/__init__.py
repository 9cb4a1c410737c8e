"""Deploy steps: each adds pyinfra operations for one host through an ``OpSink``.

Which steps a role runs is the ``ROLES`` table of :mod:`deploy.configure.catalog` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta, add_op
from pyinfra.api.state import State

from deploy.configure.catalog import ROLE_DEPLOYS, STEP_ORDER, steps_for_roles
from deploy.configure.inventory import HostTarget
from deploy.configure.settings import ConfigureSettings

__all__ = ["ROLE_DEPLOYS", "STEP_ORDER", "OpSink", "PlannedOp", "Step", "step_function", "steps_for_roles"]


@dataclass
class PlannedOp:
    name: str
    op_hash: str
    meta: OperationMeta


@dataclass
class OpSink:
    """Collects the operations of one host, each under a name of ours (pyinfra merges names by order)."""

    state: State
    host: Host
    target: HostTarget
    ops: list[PlannedOp] = field(default_factory=list)
    current: str | None = None  # the operation being prepared (for errors raised by its facts)

    def add(self, name: str, op: Any, **kwargs: Any) -> OperationMeta:
        self.current = name
        meta: OperationMeta = add_op(self.state, op, name=name, host=self.host, **kwargs)[self.host]
        self.ops.append(PlannedOp(name, self.host.op_hash_order[-1], meta))
        self.current = None
        return meta

    def once(self, name: str, op: Any, **kwargs: Any) -> OperationMeta:
        """Add ``op`` unless an operation of this name was already added for this host."""
        for planned in self.ops:
            if planned.name == name:
                return planned.meta
        return self.add(name, op, **kwargs)

    def apt_lists(self) -> OperationMeta:
        """Fresh-enough apt lists before any install (a week: re-runs stay no-ops)."""
        from pyinfra.operations import apt

        return self.once("apt package lists", apt.update, cache_time=7 * 24 * 3600)

    def fact(self, fact_cls: Any, **kwargs: Any) -> Any:
        return self.host.get_fact(fact_cls, **kwargs)

Step = Callable[[OpSink, ConfigureSettings], None]


def _steps() -> dict[str, Step]:
    from deploy.configure.deploys import base, containerd, k8s_node, kvm_host, runtimes

    return {
        "base": base.deploy,
        "runtimes": runtimes.deploy,
        "containerd": containerd.deploy,
        "k8s_node": k8s_node.deploy,
        "kvm_host": kvm_host.deploy,
    }


def step_function(name: str) -> Step:
    return _steps()[name]
