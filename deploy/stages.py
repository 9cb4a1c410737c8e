"""What each resource kind does when a run applies it, and how it is torn down.

Executors take a batch of resources of one kind and return, per resource id, its outputs
(kept in the state) or the LabError that failed it. Most kinds run one resource per call;
``configure`` runs a batch so pyinfra reaches every host in one pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.errors import LabError, ProviderError, StageError
from deploy.model.resolve import ResolvedLab
from deploy.plan import Resource
from deploy.providers.base import Provider, ProviderContext, SshEndpoint, Tags, provider_class
from deploy.state import ResourceRecord

log = logging.getLogger(__name__)
Outputs = dict[str, Any]
Executor = Callable[[list[Resource], "StepContext"], dict[str, Outputs | LabError]]
REACHABLE_TIMEOUT = 600.0  # first boots under TCG on a loaded 2-core host took up to 266 s


class ProviderPool:
    """Provider instances of a lab, created on first use and shared by all steps."""

    def __init__(self, resolved: ResolvedLab, ctx: ProviderContext) -> None:
        self.resolved = resolved
        self.ctx = ctx
        self._made: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Provider:
        with self._lock:
            if name not in self._made:
                spec = self.resolved.providers[name]
                self._made[name] = provider_class(spec.kind)(name, spec, self.ctx)
            return self._made[name]

    def close(self) -> None:
        for provider in self._made.values():
            provider.close()


@dataclass
class StepContext:
    resolved: ResolvedLab
    lab_file: Path
    state_dir: Path
    run_id: str
    tags: Tags
    providers: ProviderPool
    known_hosts: Path
    outputs_of: Callable[[str], Outputs]
    artifacts_dir: Path | None = None
    emit: Callable[[dict[str, Any]], None] = lambda _event: None


def per_resource(step: Callable[[Resource, StepContext], Outputs]) -> Executor:
    """An executor that applies ``step`` to each resource of a batch on its own."""

    def run(batch: list[Resource], ctx: StepContext) -> dict[str, Outputs | LabError]:
        results: dict[str, Outputs | LabError] = {}
        for resource in batch:
            try:
                results[resource.id] = step(resource, ctx)
            except LabError as exc:
                results[resource.id] = exc
        return results

    return run


# --- executors -----------------------------------------------------------------------------


def _image(resource: Resource, ctx: StepContext) -> Outputs:
    provider = ctx.providers.get(resource.provider or "")
    return provider.prepare_image(ctx.resolved.images[resource.name])


def _network(resource: Resource, ctx: StepContext) -> Outputs:
    provider = ctx.providers.get(resource.provider or "")
    return provider.create_network(ctx.resolved.networks[resource.name], ctx.tags)


def _machine(resource: Resource, ctx: StepContext) -> Outputs:
    provider = ctx.providers.get(resource.provider or "")
    info = provider.create_machine(ctx.resolved.nodes[resource.name], ctx.tags)
    if info.ssh is None:
        raise StageError("machines", "the provider reported no SSH endpoint", host=resource.name)
    return {"state": info.state, "ssh": info.ssh.to_outputs(),
            "ports": {str(k): v for k, v in info.ports.items()}, "addresses": info.addresses}


def _reachable(resource: Resource, ctx: StepContext) -> Outputs:
    from deploy.ssh import wait_for_ssh

    endpoint = SshEndpoint.from_outputs(ctx.outputs_of(f"machine:{resource.name}")["ssh"])
    try:
        wait_for_ssh(endpoint, known_hosts=ctx.known_hosts, alias=resource.name, timeout=REACHABLE_TIMEOUT)
    except ProviderError as exc:
        raise StageError("reachable", exc.message, host=resource.name, hint=exc.hint) from None
    return {"ssh": f"{endpoint.user}@{endpoint.host}:{endpoint.port}"}


def _configure(batch: list[Resource], ctx: StepContext) -> dict[str, Outputs | LabError]:
    """One pyinfra pass over every host of the batch, then the idempotence pass."""
    from deploy import inputs
    from deploy.configure.driver import configure

    nodes = [ctx.resolved.nodes[r.name] for r in batch]
    targets = [inputs.host_target(node, ctx.outputs_of) for node in nodes]
    try:
        known = inputs.export_known_hosts(ctx.state_dir, nodes, ctx.outputs_of)
        result = configure(targets, inputs.configure_settings(ctx.resolved), known_hosts=known, on_event=ctx.emit)
    except LabError as exc:
        return {r.id: exc for r in batch}
    outputs: dict[str, Outputs | LabError] = {}
    for resource in batch:
        host = result.hosts.get(resource.name)
        outputs[resource.id] = {"changed": host.changed if host else [], "ops": len(host.ops) if host else 0}
    return outputs


EXECUTORS: dict[str, Executor] = {
    "image": per_resource(_image),
    "network": per_resource(_network),
    "machine": per_resource(_machine),
    "reachable": per_resource(_reachable),
    "configure": _configure,
}
BATCH_KINDS: set[str] = {"configure"}


def execute(batch: list[Resource], ctx: StepContext) -> dict[str, Outputs | LabError]:
    log.info("applying %s", ", ".join(r.id for r in batch))
    return EXECUTORS[batch[0].kind](batch, ctx)


# --- teardown ------------------------------------------------------------------------------


def destroy(record: ResourceRecord, ctx: StepContext) -> None:
    """Tear down one recorded resource (kinds with nothing on a hypervisor need nothing)."""
    name = record.id.split(":", 1)[1]
    if record.provider is None or record.provider not in ctx.resolved.providers:
        return
    provider = ctx.providers.get(record.provider)
    if record.kind == "machine":
        provider.delete_machine(name)
    elif record.kind == "network":
        provider.delete_network(name)
