"""Turn a resolved lab into resources with dependencies, and diff them against recorded state.

A resource is one step of a run (build an image, create a network or machine, wait until
it is reachable, configure it, ...). Its ``input_hash`` covers everything that decides its
outcome, so a re-run keeps what is converged. The diff yields one action per resource:

    create   never done            update   inputs (or a dependency) changed
    retry    last attempt failed   keep     converged, nothing to do
    replace  torn down and created again on request (``deploy up --replace``)
    delete   recorded, no longer in the lab

A change whose kind no stage can run yet (see :mod:`deploy.stages`), or whose provider kind
has no implementation here, is marked ``supported=False``: the plan shows and counts it
apart, and ``up`` refuses it before any side effect.
"""

from __future__ import annotations

import difflib
import graphlib
import hashlib
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from deploy import resources as rid
from deploy.errors import PlanError
from deploy.model.resolve import ResolvedLab
from deploy.model.resolved import ResolvedNode
from deploy.resources import Resource, ResourceId
from deploy.stages import STAGE_NAMES, rank, stage_of
from deploy.state import LabState

__all__ = [
    "CHANGES",
    "STAGES",
    "Change",
    "Plan",
    "Request",
    "Resource",
    "ResourceId",
    "build_resources",
    "diff",
    "make_plan",
]
STAGES = STAGE_NAMES
CHANGES = ("create", "update", "retry", "replace", "delete")
RECONFIGURE = "reconfigure requested"
COUNTED = ("create", "update", "retry", "replace", "keep", "delete", "unsupported")


@dataclass(frozen=True)
class Change:
    resource_id: str
    kind: str
    action: str
    reason: str = ""
    supported: bool = True


@dataclass(frozen=True)
class Request:
    """What the user asked for beyond the lab file: ``--replace`` ids, ``--reconfigure`` nodes.

    ``reconfigure`` is None when not asked; an empty set means every node with roles.
    """

    replace: frozenset[str] = frozenset()
    reconfigure: frozenset[str] | None = None


@dataclass
class Plan:
    lab: str
    resources: dict[str, Resource]
    changes: list[Change]
    _actions: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def has_changes(self) -> bool:
        return any(c.action in CHANGES for c in self.changes)

    @property
    def unsupported(self) -> list[Change]:
        """Pending changes that this version cannot run."""
        return [c for c in self.changes if not c.supported and c.action not in ("keep", "delete")]

    def action(self, resource_id: str) -> str:
        if len(self._actions) != len(self.changes):
            self._actions = {c.resource_id: c.action for c in self.changes}
        return self._actions[resource_id]

    def count(self) -> dict[str, int]:
        counts = dict.fromkeys(COUNTED, 0)
        for change in self.changes:
            pending = change.action not in ("keep", "delete")
            counts["unsupported" if pending and not change.supported else change.action] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"lab": self.lab, "counts": self.count(),
                "changes": [asdict(c) for c in self.changes],
                "resources": {k: {"kind": r.kind, "deps": list(r.deps), "hash": r.input_hash}
                              for k, r in self.resources.items()}}


# --- resources from a lab ------------------------------------------------------------------


def plain(obj: Any) -> Any:
    """Like ``dataclasses.asdict`` without its deep copies (inputs are only hashed and stored)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: plain(v) for k, v in obj.__dict__.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def build_resources(resolved: ResolvedLab) -> dict[str, Resource]:
    """Every resource the lab needs, keyed by id, in a deterministic order."""
    out: list[Resource] = []
    out += _bundle(resolved)
    out += _images(resolved)
    out += _networks(resolved)
    shared = _configure_shared(resolved)
    for node in sorted(resolved.nodes.values(), key=lambda n: n.name):
        out += _node_resources(resolved, node, shared)
    out += _kubernetes(resolved, out)
    out += _ansible(resolved, out)
    return {r.id: r for r in out}


def _bundle(resolved: ResolvedLab) -> list[Resource]:
    """With ``bundle: {source: build}``, one step per artifact the lab needs (built into the store)."""
    if resolved.lab.bundle.source != "build":
        return []
    from deploy.bundle.build import lab_wanted

    want = lab_wanted(resolved)
    planned = {r.key for r in want.recipes}
    steps = [Resource(ResourceId("bundle", str(r.key)), "bundle", str(r.key), None,
                      deps=tuple(ResourceId("bundle", str(k)) for k in r.requires if k in planned),
                      inputs={"recipe": r.recipe_hash()}) for r in want.recipes]
    return steps + [Resource(ResourceId("bundle", str(k)), "bundle", str(k), None, inputs={"recipe": None},
                             runnable=False) for k in want.not_buildable]


def _needs_image(resolved: ResolvedLab, node: ResolvedNode) -> bool:
    return resolved.providers[node.provider].kind != "existing"


def _images(resolved: ResolvedLab) -> list[Resource]:
    used = sorted({(n.provider, n.image) for n in resolved.nodes.values() if _needs_image(resolved, n)})
    return [Resource(rid.image(provider, image), "image", image, provider,
                     inputs={"recipe": resolved.images[image].recipe(), "provider": provider})
            for provider, image in used]


def _networks(resolved: ResolvedLab) -> list[Resource]:
    return [Resource(rid.network(net.name), "network", net.name, net.provider, inputs=plain(net))
            for net in sorted(resolved.networks.values(), key=lambda n: n.name) if net.mode != "user"]


def _node_resources(resolved: ResolvedLab, node: ResolvedNode, shared: dict[str, Any]) -> list[Resource]:
    deps = [rid.network(nic.network) for nic in node.nics if nic.mode != "user"]
    if _needs_image(resolved, node):
        deps.insert(0, rid.image(node.provider, node.image or ""))
    machine_inputs = {k: v for k, v in plain(node).items() if k not in ("roles", "labels", "ssh", "join")}
    reach = {"user": node.ssh_user, "port": node.ssh_port} if node.ssh else {"ssh": False}
    resources = [
        Resource(rid.machine(node.name), "machine", node.name, node.provider, tuple(deps), machine_inputs),
        Resource(rid.reachable(node.name), "reachable", node.name, node.provider, (rid.machine(node.name),), reach),
    ]
    if node.roles and node.ssh:
        resources.append(Resource(rid.configure(node.name), "configure", node.name, node.provider,
                                  (rid.reachable(node.name),), {"roles": list(node.roles), **shared}))
    if node.join is not None:  # a nested ESXi host joins its vCenter's cluster once it is up
        join = node.join.model_dump(mode="json")
        resources.append(Resource(ResourceId("join", node.name), "join", node.name, join["provider"] or node.provider,
                                  (rid.reachable(node.name),), join))
    return resources


def _configure_shared(resolved: ResolvedLab) -> dict[str, Any]:
    """Configure inputs every node shares: the lab's hosts (for /etc/hosts), mirrors, kubernetes."""
    lab = resolved.lab
    hosts = {n.name: [nic.ip for nic in n.nics if nic.ip] for n in resolved.nodes.values()}
    digest = hashlib.sha256(json.dumps(hosts, sort_keys=True).encode()).hexdigest()[:16]
    # without defaults: a field a later version adds (with its default) leaves converged nodes as they are
    # mirrors.charts is the host's (Helm runs there): nodes are not reconfigured when it changes
    return {"hosts": digest, "mirrors": lab.mirrors.model_dump(exclude_defaults=True, exclude={"charts"}),
            "kubernetes": lab.kubernetes.model_dump(exclude_defaults=True) if lab.kubernetes else None,
            **({"system": lab.system.model_dump()} if lab.system.model_dump(exclude_defaults=True) else {})}


def _kubernetes(resolved: ResolvedLab, resources: list[Resource]) -> list[Resource]:
    """``cluster:kubernetes`` bootstraps on the first control plane; each other node joins as its own
    ``member:<node>`` (a new worker joins alone; a removed one is drained and deleted before its machine
    goes); the add-ons wait for every member."""
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return []
    groups = {k8s.control_plane, *k8s.worker_groups}
    nodes = sorted(n.name for n in resolved.nodes.values() if n.group in groups)
    first = min((n for n in nodes if resolved.nodes[n].group == k8s.control_plane), default=None)
    spec = k8s.model_dump()
    runnable = True  # kubeadm for real; k3s right by construction (deploy/cluster/k3s_stage.py)
    cluster_id = ResourceId("cluster", "kubernetes")
    out = [Resource(cluster_id, "cluster", "kubernetes", None, _after_configure([first] if first else nodes, resources),
                    {k: spec[k] for k in ("distribution", "version", "control_plane", "pod_cidr", "service_cidr")}
                    | {"first": first}, runnable=runnable)]
    for name in nodes:
        if name != first:
            node = resolved.nodes[name]
            out.append(Resource(ResourceId("member", name), "member", name, node.provider,
                                (cluster_id, *_after_configure([name], resources)),
                                {"control_plane": node.group == k8s.control_plane, "labels": node.labels},
                                runnable=runnable))
    from deploy.addons.plan import resources as addon_resources

    return out + addon_resources(resolved, tuple(r.id for r in out), resources)


def _after_configure(nodes: list[str], resources: list[Resource]) -> tuple[ResourceId, ...]:
    """For each node, its configure step where it has one, else its reachable step."""
    ids = {r.id for r in resources}
    return tuple(rid.configure(n) if rid.configure(n) in ids else rid.reachable(n) for n in nodes)


def _ansible(resolved: ResolvedLab, resources: list[Resource]) -> list[Resource]:
    out = []
    for index, play in enumerate(resolved.lab.ansible):
        nodes = sorted(n.name for n in resolved.nodes_of(play.hosts))
        deps = _after_configure(nodes, resources)
        out.append(Resource(ResourceId("ansible", str(index)), "ansible", str(index), None, deps,
                            {"play": play.model_dump(), "nodes": nodes}))
    return out


def check_acyclic(resources: dict[str, Resource]) -> list[str]:
    """The resource ids in a dependency order; PlanError on a cycle or a missing dependency."""
    for resource in resources.values():
        missing = [d for d in resource.deps if d not in resources]
        if missing:
            raise PlanError(f"{resource.id} depends on {', '.join(missing)}, which the lab does not define")
    try:
        order = list(graphlib.TopologicalSorter({k: r.deps for k, r in resources.items()}).static_order())
    except graphlib.CycleError as exc:
        raise PlanError(f"dependency cycle: {' -> '.join(exc.args[1])}") from None
    for resource in resources.values():
        waits_for = stage_of(resource.kind).waits_for
        odd = [d for d in resource.deps if resources[d].kind not in waits_for]
        if odd:  # the stage registry is the one declaration of what may wait for what
            raise PlanError(f"{resource.id} depends on {', '.join(odd)}, but {resource.kind} steps wait only "
                            f"for {', '.join(waits_for) or 'nothing'} (deploy/stages.py)")
    return order


# --- diff ----------------------------------------------------------------------------------


def diff(lab: str, resources: dict[str, Resource], state: LabState, missing: Iterable[str] = (), *,
         request: Request | None = None, provider_ok: Callable[[str | None], bool] = lambda _p: True) -> Plan:
    """Compare wanted resources with the state; ``missing`` lists recorded ids found gone.

    ``provider_ok(name)`` says whether the named provider's kind can run here; ``request``
    adds the user's replacements and reconfigurations (each checked against the lab).
    """
    request = request or Request()
    order = check_acyclic(resources)
    asked = _requested(resources, request)
    gone = set(missing)
    actions: dict[str, Change] = {}
    for resource_id in order:
        resource = resources[resource_id]
        change = _change(resource, state, gone, actions)
        wanted = asked.get(resource_id)
        if wanted is not None and (wanted.action == "replace" or change.action == "keep"):
            change = wanted
        runnable = resource.runnable and stage_of(resource.kind).supported and provider_ok(resource.provider)
        if change.action != "keep" and not runnable:
            change = Change(change.resource_id, change.kind, change.action, change.reason, supported=False)
        actions[resource_id] = change
    deletes = [Change(k, rec.kind, "delete", _delete_reason(rec.kind, rec.outputs))
               for k, rec in sorted(state.resources.items()) if k not in resources]
    return Plan(lab, resources, [actions[k] for k in order] + delete_order(deletes))


def _requested(resources: dict[str, Resource], request: Request) -> dict[str, Change]:
    """The changes the user asked for; PlanError names an unknown resource or node."""
    out: dict[str, Change] = {}
    for text in sorted(request.replace):
        target = _replace_target(text, resources)
        out[target] = Change(target, resources[target].kind, "replace", "replacement requested")
    if request.reconfigure is not None:
        for target in _reconfigure_targets(request.reconfigure, resources):
            out.setdefault(target, Change(target, "configure", "update", RECONFIGURE))
    return out


def _replace_target(text: str, resources: dict[str, Resource]) -> str:
    """``machine:web-1``, or a bare node name meaning its machine."""
    target = text if ":" in text else str(rid.machine(text))
    if target in resources:
        return target
    near = difflib.get_close_matches(target, list(resources), n=1)
    guess = f"did you mean {near[0]!r}? " if near else ""
    raise PlanError(f"--replace {text}: the lab has no resource {target}",
                    hint=f"{guess}`deploy plan` lists the resource ids (kind:name); a node name means its machine")


def _reconfigure_targets(nodes: Collection[str], resources: dict[str, Resource]) -> list[str]:
    configurable = {r.name: k for k, r in resources.items() if r.kind == "configure"}
    if not configurable:
        raise PlanError("--reconfigure: no node of this lab has roles to configure")
    unknown = sorted(set(nodes) - set(configurable))
    if unknown:
        raise PlanError(f"--reconfigure: {', '.join(unknown)} is not a node with roles in this lab",
                        hint=f"nodes with roles: {', '.join(sorted(configurable))}")
    return [configurable[n] for n in sorted(nodes or configurable)]


def _change(resource: Resource, state: LabState, gone: set[str], done: dict[str, Change]) -> Change:
    record = state.resources.get(resource.id)

    def make(action: str, reason: str) -> Change:
        return Change(resource.id, resource.kind, action, reason)

    if record is None:
        return make("create", "new")
    if record.status in ("failed", "running", "interrupted"):
        return make("retry", f"last attempt {record.status}")
    if record.input_hash != resource.input_hash:
        return make("update", _update_reason(resource, record.outputs))
    if resource.id in gone:
        return make("create", "recorded but no longer exists")
    changed = [d for d in resource.deps if done[d].action in CHANGES and done[d].reason != RECONFIGURE
               and not _order_only(resource, d)]
    if changed:  # a re-run of configure on request re-converges hosts; it does not redo what follows
        return make("update", f"{changed[0]} changes")
    return make("keep", "")


def _order_only(resource: Resource, dep: ResourceId) -> bool:
    from deploy.addons.plan import order_only

    return order_only(resource, dep)


def _update_reason(resource: Resource, recorded: dict[str, Any]) -> str:
    from deploy.addons.plan import update_reason

    return update_reason(resource, recorded)


def _delete_reason(kind: str, recorded: dict[str, Any]) -> str:
    if kind == "addon":
        from deploy.addons.plan import delete_reason

        return delete_reason(recorded)
    return "no longer in the lab"


def delete_order(deletes: list[Change]) -> list[Change]:
    """Dependents first: ansible, addons, ..., networks, images (the stage order reversed)."""
    return sorted(deletes, key=lambda c: (-rank(c.kind), c.resource_id))


def make_plan(resolved: ResolvedLab, state: LabState, missing: Iterable[str] = (), *, request: Request | None = None,
              provider_ok: Callable[[str | None], bool] = lambda _p: True) -> Plan:
    return diff(resolved.name, build_resources(resolved), state, missing, request=request, provider_ok=provider_ok)
