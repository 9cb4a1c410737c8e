"""The stage registry: one declaration per resource kind, read by plan, run and destroy.

A :class:`Stage` says what a kind of resource is and how the engine treats it:

    kind        the resource kind (``machine``)              name       the stage it belongs to
    run         "module:attribute" of its executor, or None while no stage can run it yet
    batched     one executor call for every ready resource of the kind (configure: one pyinfra pass)
    teardown    "module:attribute" removing one recorded resource (None: nothing on a hypervisor)
    waits_for   the kinds its resources may depend on (the plan checks every dependency against it)

The order of :data:`STAGES` is the order of a run; deletions go the other way. Executors are
named, not imported, so that the planner reads the registry without loading providers or
pyinfra; :meth:`Stage.executor` imports on first use. Adding a kind is one entry here plus its
executor (see ``deploy/steps.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deploy.errors import PlanError


@dataclass(frozen=True)
class Stage:
    kind: str
    name: str
    run: str | None = None
    batched: bool = False
    teardown: str | None = None
    waits_for: tuple[str, ...] = ()

    @property
    def supported(self) -> bool:
        return self.run is not None

    def executor(self) -> Callable[..., Any]:
        if self.run is None:
            raise PlanError(f"no stage can run {self.kind} steps yet")
        return _load(self.run)

    def teardown_fn(self) -> Callable[..., Any] | None:
        return _load(self.teardown) if self.teardown else None


STAGES: tuple[Stage, ...] = (
    Stage("bundle", "bundle", run="deploy.steps:run_bundle", waits_for=("bundle",)),  # images wait for binaries
    Stage("image", "images", run="deploy.steps:run_image"),
    Stage("network", "networks", run="deploy.steps:run_network", teardown="deploy.steps:teardown_network"),
    Stage("machine", "machines", run="deploy.steps:run_machine", teardown="deploy.steps:teardown_machine",
          waits_for=("image", "network")),
    Stage("reachable", "reachable", run="deploy.steps:run_reachable", waits_for=("machine",)),
    Stage("join", "hosts", run="deploy.providers.vsphere_hosts:run_join",
          teardown="deploy.providers.vsphere_hosts:teardown_join", waits_for=("reachable",)),
    Stage("configure", "configure", run="deploy.steps:run_configure", batched=True, waits_for=("reachable",)),
    Stage("cluster", "cluster", run="deploy.cluster.stage:run_cluster_step", waits_for=("configure", "reachable")),
    Stage("member", "cluster", run="deploy.cluster.join:run_member_step",
          teardown="deploy.cluster.join:teardown_member", waits_for=("cluster", "configure", "reachable")),
    Stage("addon", "addons", run="deploy.cluster.addons:run_addon_step", teardown="deploy.addons.step:teardown_addon",
          waits_for=("cluster", "member", "addon", "bundle")),  # bundle: the helm the Helm releases run
    Stage("ansible", "ansible", waits_for=("configure", "reachable")),
)
_BY_KIND = {stage.kind: stage for stage in STAGES}
STAGE_NAMES: tuple[str, ...] = (*dict.fromkeys(s.name for s in STAGES), "verify")


def stage_of(kind: str) -> Stage:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise PlanError(f"unknown resource kind {kind!r}; known kinds: {', '.join(_BY_KIND)}") from None


def rank(kind: str) -> int:
    """Position of ``kind`` in a run (unknown kinds first, so they are deleted last)."""
    return next((i for i, s in enumerate(STAGES) if s.kind == kind), -1)


def _load(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return fn
