"""Turn a resolved lab into resources with dependencies, and diff them against recorded state.

A resource is one step of a run (build an image, create a network or machine, wait until
it is reachable, configure it, ...). Its ``input_hash`` covers everything that decides its
outcome, so a re-run keeps what is converged. The diff yields one action per resource:

    create   never done            update   inputs (or a dependency) changed
    retry    last attempt failed   keep     converged, nothing to do
    delete   recorded, no longer in the lab
"""

from __future__ import annotations

import graphlib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from deploy.errors import PlanError
from deploy.model.resolve import ResolvedLab
from deploy.model.resolved import ResolvedNode
from deploy.state import LabState

STAGES = ["images", "networks", "machines", "reachable", "configure", "cluster", "addons", "ansible", "verify"]
KIND_STAGE = {"image": "images", "network": "networks", "machine": "machines", "reachable": "reachable",
              "configure": "configure", "cluster": "cluster", "addon": "addons", "ansible": "ansible",
              "verify": "verify"}
CHANGES = ("create", "update", "retry", "delete")


@dataclass(frozen=True)
class Resource:
    id: str
    kind: str
    name: str
    provider: str | None = None
    deps: tuple[str, ...] = ()
    inputs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def stage(self) -> str:
        return KIND_STAGE[self.kind]

    @property
    def input_hash(self) -> str:
        blob = json.dumps(self.inputs, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Change:
    resource_id: str
    kind: str
    action: str
    reason: str = ""


@dataclass
class Plan:
    lab: str
    resources: dict[str, Resource]
    changes: list[Change]
    _actions: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def has_changes(self) -> bool:
        return any(c.action in CHANGES for c in self.changes)

    def action(self, resource_id: str) -> str:
        if len(self._actions) != len(self.changes):
            self._actions = {c.resource_id: c.action for c in self.changes}
        return self._actions[resource_id]

    def count(self) -> dict[str, int]:
        counts = dict.fromkeys(("create", "update", "retry", "keep", "delete"), 0)
        for change in self.changes:
            counts[change.action] += 1
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
    out += _images(resolved)
    out += _networks(resolved)
    shared = _configure_shared(resolved)
    for node in sorted(resolved.nodes.values(), key=lambda n: n.name):
        out += _node_resources(resolved, node, shared)
    out += _kubernetes(resolved, out)
    out += _ansible(resolved, out)
    return {r.id: r for r in out}


def _needs_image(resolved: ResolvedLab, node: ResolvedNode) -> bool:
    return resolved.providers[node.provider].kind != "existing"


def _images(resolved: ResolvedLab) -> list[Resource]:
    used = sorted({(n.provider, n.image) for n in resolved.nodes.values() if _needs_image(resolved, n)})
    return [Resource(f"image:{provider}/{image}", "image", image, provider,
                     inputs={"recipe": resolved.images[image].recipe(), "provider": provider})
            for provider, image in used]


def _networks(resolved: ResolvedLab) -> list[Resource]:
    return [Resource(f"network:{net.name}", "network", net.name, net.provider, inputs=plain(net))
            for net in sorted(resolved.networks.values(), key=lambda n: n.name) if net.mode != "user"]


def _node_resources(resolved: ResolvedLab, node: ResolvedNode, shared: dict[str, Any]) -> list[Resource]:
    deps = [f"network:{nic.network}" for nic in node.nics if nic.mode != "user"]
    if _needs_image(resolved, node):
        deps.insert(0, f"image:{node.provider}/{node.image}")
    machine_inputs = {k: v for k, v in plain(node).items() if k not in ("roles", "labels")}
    resources = [
        Resource(f"machine:{node.name}", "machine", node.name, node.provider, tuple(deps), machine_inputs),
        Resource(f"reachable:{node.name}", "reachable", node.name, node.provider, (f"machine:{node.name}",),
                 {"user": node.ssh_user, "port": node.ssh_port}),
    ]
    if node.roles:
        resources.append(Resource(f"configure:{node.name}", "configure", node.name, node.provider,
                                  (f"reachable:{node.name}",), {"roles": list(node.roles), **shared}))
    return resources


def _configure_shared(resolved: ResolvedLab) -> dict[str, Any]:
    """Configure inputs every node shares: the lab's hosts (for /etc/hosts), mirrors, kubernetes."""
    lab = resolved.lab
    hosts = {n.name: [nic.ip for nic in n.nics if nic.ip] for n in resolved.nodes.values()}
    digest = hashlib.sha256(json.dumps(hosts, sort_keys=True).encode()).hexdigest()[:16]
    return {"hosts": digest, "mirrors": lab.mirrors.model_dump(),
            "kubernetes": lab.kubernetes.model_dump() if lab.kubernetes else None}


def _kubernetes(resolved: ResolvedLab, resources: list[Resource]) -> list[Resource]:
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return []
    groups = {k8s.control_plane, *k8s.worker_groups}
    nodes = sorted(n.name for n in resolved.nodes.values() if n.group in groups)
    ids = {r.id for r in resources}
    deps = tuple(f"configure:{n}" if f"configure:{n}" in ids else f"reachable:{n}" for n in nodes)
    spec = k8s.model_dump()
    out = [Resource("cluster:kubernetes", "cluster", "kubernetes", None, deps,
                    {k: spec[k] for k in ("distribution", "version", "control_plane", "workers",
                                          "pod_cidr", "service_cidr")} | {"nodes": nodes})]
    addons = {"cni": spec["cni"], "mesh": spec["mesh"], "gpu": spec["gpu_operator"],
              "runtimes": spec["runtimes"] if set(spec["runtimes"]) - {"runc"} else None}
    for name, addon in addons.items():
        if addon:
            after = ("addon:cni",) if name == "mesh" and addons["cni"] else ()
            out.append(Resource(f"addon:{name}", "addon", name, None, ("cluster:kubernetes", *after),
                                {"spec": addon}))
    return out


def _ansible(resolved: ResolvedLab, resources: list[Resource]) -> list[Resource]:
    out = []
    ids = {r.id for r in resources}
    for index, play in enumerate(resolved.lab.ansible):
        nodes = sorted(n.name for n in resolved.nodes_of(play.hosts))
        deps = tuple(f"configure:{n}" if f"configure:{n}" in ids else f"reachable:{n}" for n in nodes)
        out.append(Resource(f"ansible:{index}", "ansible", str(index), None, deps,
                            {"play": play.model_dump(), "nodes": nodes}))
    return out


def check_acyclic(resources: dict[str, Resource]) -> list[str]:
    """The resource ids in a dependency order; PlanError on a cycle or a missing dependency."""
    for resource in resources.values():
        missing = [d for d in resource.deps if d not in resources]
        if missing:
            raise PlanError(f"{resource.id} depends on {', '.join(missing)}, which the lab does not define")
    try:
        return list(graphlib.TopologicalSorter({k: r.deps for k, r in resources.items()}).static_order())
    except graphlib.CycleError as exc:
        raise PlanError(f"dependency cycle: {' -> '.join(exc.args[1])}") from None


# --- diff ----------------------------------------------------------------------------------


def diff(lab: str, resources: dict[str, Resource], state: LabState,
         missing: Iterable[str] = ()) -> Plan:
    """Compare wanted resources with the state; ``missing`` lists recorded ids found gone."""
    order = check_acyclic(resources)
    gone = set(missing)
    actions: dict[str, Change] = {}
    for rid in order:
        actions[rid] = _change(resources[rid], state, gone, actions)
    deletes = [Change(rid, rec.kind, "delete", "no longer in the lab")
               for rid, rec in sorted(state.resources.items()) if rid not in resources]
    return Plan(lab, resources, [actions[rid] for rid in order] + delete_order(deletes))


def _change(resource: Resource, state: LabState, gone: set[str], done: dict[str, Change]) -> Change:
    record = state.resources.get(resource.id)

    def make(action: str, reason: str) -> Change:
        return Change(resource.id, resource.kind, action, reason)

    if record is None:
        return make("create", "new")
    if record.status in ("failed", "running", "interrupted"):
        return make("retry", f"last attempt {record.status}")
    if record.input_hash != resource.input_hash:
        return make("update", "inputs changed")
    if resource.id in gone:
        return make("create", "recorded but no longer exists")
    changed = [d for d in resource.deps if done[d].action in CHANGES]
    if changed:
        return make("update", f"{changed[0]} changes")
    return make("keep", "")


def delete_order(deletes: list[Change]) -> list[Change]:
    """Dependents first: verify, ansible, ..., networks, images."""
    rank = {kind: i for i, kind in enumerate(KIND_STAGE)}
    return sorted(deletes, key=lambda c: (-rank.get(c.kind, 0), c.resource_id))


def make_plan(resolved: ResolvedLab, state: LabState, missing: Iterable[str] = ()) -> Plan:
    return diff(resolved.name, build_resources(resolved), state, missing)
