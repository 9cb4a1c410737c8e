"""What each resource kind does when a run applies it, and how it is torn down.

The kinds themselves are declared in :mod:`deploy.stages`; this module holds the executors
and teardowns those declarations name. An executor takes a batch of resources of one kind
and returns, per resource id, its outputs (kept in the state) or the LabError that failed
it. Most kinds run one resource per call; ``configure`` runs a batch so pyinfra reaches
every host in one pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy import resources as rid
from deploy.errors import LabError, ProviderError, StageError
from deploy.model.resolve import ResolvedLab
from deploy.providers.base import MachineInfo, ProviderContext, SomeProvider, Tags
from deploy.providers.registry import provider_class
from deploy.resources import Outputs, Resource
from deploy.stages import stage_of
from deploy.state import ResourceRecord

log = logging.getLogger(__name__)
Executor = Callable[[list[Resource], "StepContext"], dict[str, Outputs | LabError]]
REACHABLE_TIMEOUT = 600.0  # first boots under TCG on a loaded 2-core host took up to 266 s


class ProviderPool:
    """Provider instances of a lab, created on first use and shared by all steps."""

    def __init__(self, resolved: ResolvedLab, ctx: ProviderContext) -> None:
        self.resolved = resolved
        self.ctx = ctx
        self._made: dict[str, SomeProvider] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> SomeProvider:
        with self._lock:
            if name not in self._made:
                spec = self.resolved.providers[name]
                cls = provider_class(spec.kind)
                typed = spec if isinstance(spec, cls.spec_model) else cls.spec_model.model_validate(spec.model_dump())
                self._made[name] = cls(name, typed, self.ctx)
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
    destroying: bool = False  # `deploy destroy`: the whole lab goes, so teardowns skip what only a shrink needs
    _recipes: dict[str, Any] | None = field(default=None, repr=False)  # the lab's bundle recipes by key, once a run

    def bundle_recipe(self, key: str) -> Any:
        """The recipe of bundle artifact ``key`` (the lab's catalog is walked once per run, not once per step)."""
        if self._recipes is None:
            from deploy.bundle.build import lab_wanted

            self._recipes = {str(r.key): r for r in lab_wanted(self.resolved).recipes}
        return self._recipes.get(key)


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


def _provider(resource: Resource, ctx: StepContext) -> SomeProvider:
    return ctx.providers.get(resource.provider or "")


def _image(resource: Resource, ctx: StepContext) -> Outputs:
    return _provider(resource, ctx).prepare_image(ctx.resolved.images[resource.name])


def _network(resource: Resource, ctx: StepContext) -> Outputs:
    return _provider(resource, ctx).create_network(ctx.resolved.networks[resource.name], ctx.tags)


def _machine(resource: Resource, ctx: StepContext) -> Outputs:
    node = ctx.resolved.nodes[resource.name]
    info = _provider(resource, ctx).create_machine(node, ctx.tags)
    outputs: Outputs = {"state": info.state, "ports": {str(k): v for k, v in info.ports.items()},
                        "addresses": info.addresses}
    if info.ssh is not None:
        return outputs | {"ssh": info.ssh.to_outputs()}
    if not node.ssh:
        return outputs  # nothing logs in to it
    raise StageError("machines", "the provider reported no SSH endpoint", host=resource.name,
                     hint="give the node a network the host can reach (mode user or bridge), "
                          "or set ssh: false on a node nothing logs in to")


def _reachable(resource: Resource, ctx: StepContext) -> Outputs:
    """The provider's own wait: it sees a machine that died while booting, not only a silent port."""
    provider = _provider(resource, ctx)
    info = provider.status(resource.name)
    if not ctx.resolved.nodes[resource.name].ssh:
        return _up_without_ssh(provider.name, info)
    if info.ssh is None:
        raise StageError("reachable", f"provider {provider.name} reports machine {resource.name} {info.state} "
                         "with no SSH endpoint", host=resource.name, hint="`deploy status` shows its state")
    try:
        provider.wait_reachable(info, ctx.known_hosts, REACHABLE_TIMEOUT)
    except ProviderError as exc:
        raise StageError("reachable", exc.message, host=resource.name, hint=exc.hint) from None
    return {"ssh": f"{info.ssh.user}@{info.ssh.host}:{info.ssh.port}"}


def _up_without_ssh(provider: str, info: MachineInfo) -> Outputs:
    """A node nothing logs in to is reachable once its provider reports it running (with its addresses)."""
    if info.state != "running":
        raise StageError("reachable", f"provider {provider} reports machine {info.name} {info.state}",
                         host=info.name, hint="`deploy status` shows its state; `deploy up` again starts it")
    return {"state": info.state, "addresses": info.addresses}


def _configure(batch: list[Resource], ctx: StepContext) -> dict[str, Outputs | LabError]:
    """One pyinfra pass over every host of the batch, then the idempotence pass on those that changed."""
    from deploy import inputs
    from deploy.configure.driver import configure

    nodes = [ctx.resolved.nodes[r.name] for r in batch]
    targets = [inputs.host_target(node, ctx.outputs_of) for node in nodes]
    try:
        known = inputs.export_known_hosts(ctx.state_dir, nodes, ctx.outputs_of)
        settings = inputs.bundle_files(ctx.resolved, inputs.configure_settings(ctx.resolved))
        result = configure(targets, settings, known_hosts=known, on_event=ctx.emit)
    except LabError as exc:
        return {r.id: exc for r in batch}
    outputs: dict[str, Outputs | LabError] = {}
    for resource in batch:  # a host that failed fails alone; the others of the batch keep their outcome
        host = result.hosts.get(resource.name)
        if host is not None and host.error is not None:
            outputs[resource.id] = host.error
            continue
        outputs[resource.id] = {"changed": host.changed if host else [], "ops": len(host.ops) if host else 0}
    return outputs


def _bundle(resource: Resource, ctx: StepContext) -> Outputs:
    """Ensure one artifact in the bundle store (built here when it is missing or its recipe changed)."""
    from deploy.bundle.store import BundleStore

    recipe = ctx.bundle_recipe(resource.name)
    if recipe is None:
        raise StageError("bundle", f"no recipe builds {resource.name}")
    artifact, outcome = BundleStore().ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    ctx.emit({"event": "progress", "message": f"bundle: {outcome} {resource.name}"})
    return {"sha256": artifact.sha256, "size": artifact.size, "outcome": outcome}


run_bundle = per_resource(_bundle)
run_image = per_resource(_image)
run_network = per_resource(_network)
run_machine = per_resource(_machine)
run_reachable = per_resource(_reachable)
run_configure: Executor = _configure


def execute(batch: list[Resource], ctx: StepContext) -> dict[str, Outputs | LabError]:
    """Run one batch; outputs that would carry a resolved secret are kept only masked."""
    from deploy.secrets import contains_secret, redact

    log.info("applying %s", ", ".join(r.id for r in batch))
    executor: Executor = stage_of(batch[0].kind).executor()
    results = executor(batch, ctx)
    for key, outputs in results.items():
        if not isinstance(outputs, LabError) and contains_secret(outputs):
            log.warning("%s: the provider returned a secret value in its outputs; only a masked copy is kept", key)
            results[key] = redact(outputs)
    return results


# --- teardown ------------------------------------------------------------------------------


def teardown_machine(provider: SomeProvider, name: str, ctx: StepContext) -> None:
    from deploy.ssh.hostkeys import HostKeyStore

    provider.delete_machine(name)
    HostKeyStore(ctx.known_hosts).forget(name)  # a re-created machine has new host keys


def teardown_network(provider: SomeProvider, name: str, _ctx: StepContext) -> None:
    provider.delete_network(name)


def destroy(record: ResourceRecord, ctx: StepContext) -> None:
    """Tear down one recorded resource through its stage's declared teardown (if it has one)."""
    teardown = stage_of(record.kind).teardown_fn()
    if teardown is None or (record.provider is not None and record.provider not in ctx.resolved.providers):
        return
    provider = ctx.providers.get(record.provider) if record.provider is not None else None  # add-ons have none
    teardown(provider, rid.ResourceId.parse(record.id).name, ctx)


DESTROY_PARALLEL = 16  # teardowns of one kind at once (they wait on hypervisor tasks, not on the CPU)


def destroy_in_order(records: list[ResourceRecord], ctx: StepContext, done: Callable[[ResourceRecord], None],
                     parallel: int | None = None) -> None:
    """Tear ``records`` down, dependents first (the stage order reversed), those of one kind in parallel.

    ``done`` is called (from one thread at a time) as each one is gone; after a kind whose teardown
    failed for some record, the first error is raised and no later kind is touched.
    """
    from deploy.stages import rank

    lock = threading.Lock()
    for _kind_rank, group in _by_rank(records, rank):
        errors = _destroy_group(group, ctx, done, lock, parallel or DESTROY_PARALLEL)
        if errors:
            raise errors[0]


def _destroy_group(group: list[ResourceRecord], ctx: StepContext, done: Callable[[ResourceRecord], None],
                   lock: threading.Lock, parallel: int) -> list[Exception]:
    from concurrent.futures import ThreadPoolExecutor

    errors: list[Exception] = []

    def one(record: ResourceRecord) -> None:
        try:
            destroy(record, ctx)
        except Exception as exc:  # collected: the caller raises the first one once the kind is done
            with lock:
                errors.append(exc)
            return
        with lock:
            done(record)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(group)))) as pool:
        list(pool.map(one, group))
    return errors


def _by_rank(records: list[ResourceRecord], rank: Callable[[str], int]) -> list[tuple[int, list[ResourceRecord]]]:
    groups: dict[int, list[ResourceRecord]] = {}
    for record in sorted(records, key=lambda r: (-rank(r.kind), r.id)):
        groups.setdefault(rank(record.kind), []).append(record)
    return sorted(groups.items(), key=lambda item: -item[0])
