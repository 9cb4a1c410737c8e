"""The lab's Kubernetes nodes as the cluster stage sees them: who is what, where, and a shell on each.

    cluster_of(resolved, tcg)   kubeadm's Cluster from the lab's ``kubernetes:`` section
    members(resolved)           every node of the cluster with its kubeadm Node, control planes first
    NodeShell                   deadline-bounded commands over SSH, failures as StageError (output masked)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.cluster.kubeadm import Cluster, Node, Taint, with_vip
from deploy.cluster.runtimeclasses import node_labels
from deploy.errors import LabError, StageError
from deploy.model.resolve import ResolvedLab
from deploy.model.resolved import ResolvedNode
from deploy.providers.base import SshEndpoint
from deploy.secrets import REDACTOR
from deploy.ssh.transport import CommandResult, run_command

API_PORT = 6443


def kubernetes_version(minor: str) -> str:
    """The patch release the bundle's catalog pins for a lab's minor (``1.36`` -> ``v1.36.3``)."""
    from deploy.bundle.catalog import VERSIONS

    if minor.count(".") == 2:
        return minor if minor.startswith("v") else f"v{minor}"
    pinned = VERSIONS.get(minor)
    if pinned is None:
        raise StageError("cluster", f"no Kubernetes release is pinned for {minor}",
                         hint=f"use one of {', '.join(VERSIONS)}")
    return str(pinned.kubernetes)


def handled_runtimes(resolved: ResolvedLab) -> tuple[str, ...]:
    """The lab's runtimes whose containerd handler the nodes really get (runc always; wasmedge only with
    the bundle's crun or a runwasi shim): the ones that get a node label and a RuntimeClass."""
    from deploy import inputs
    from deploy.cluster.runtimeclasses import handler_of
    from deploy.configure.catalog import handlers_for

    settings = inputs.bundle_files(resolved, inputs.configure_settings(resolved))
    handlers = {h.name for h in handlers_for(settings.runtimes, settings.checksums())}
    return tuple(name for name in dict.fromkeys(("runc", *settings.runtimes)) if handler_of(name) in handlers)


@dataclass(frozen=True)
class Member:
    node: ResolvedNode
    kubeadm: Node
    control_plane: bool


def _address(node: ResolvedNode) -> str:
    from deploy.inputs import lab_address

    address = lab_address(node)
    if address is None:
        raise StageError("cluster", f"node {node.name} has no address on a lab network (nat or isolated)",
                         host=node.name, hint="give the cluster's nodes a lab network: kubeadm advertises on it")
    return address


def members(resolved: ResolvedLab, runtimes: tuple[str, ...] = ()) -> list[Member]:
    """Control planes first (the first one runs kubeadm init), then workers, in name order; every node is
    labelled for ``runtimes`` (:func:`handled_runtimes`)."""
    k8s = resolved.lab.kubernetes
    assert k8s is not None
    workers = set(k8s.worker_groups)
    has_workers = any(n.group in workers for n in resolved.nodes.values())
    labels = node_labels(runtimes)
    out = []
    for node in sorted(resolved.nodes.values(), key=lambda n: (n.group != k8s.control_plane, n.name)):
        if node.group != k8s.control_plane and node.group not in workers:
            continue
        control = node.group == k8s.control_plane
        taints: tuple[Taint, ...] | None = None if (has_workers or not control) else ()  # a lone node takes pods
        out.append(Member(node, Node(node.name, _address(node), {**labels, **node.labels}, taints), control))
    return out


def cluster_of(resolved: ResolvedLab, *, tcg: bool) -> Cluster:
    k8s = resolved.lab.kubernetes
    assert k8s is not None
    first = members(resolved)[0]
    cilium = k8s.cni.cilium if k8s.cni else None
    cluster = Cluster(
        name=resolved.name, version=kubernetes_version(k8s.version),
        endpoint=f"{first.kubeadm.address}:{API_PORT}",
        pod_cidr=k8s.pod_cidr, service_cidr=k8s.service_cidr,
        cert_sans=("127.0.0.1", "localhost", first.node.name, first.kubeadm.address),
        kube_proxy=not (cilium and cilium.kube_proxy_replacement), tcg=tcg)
    return with_vip(cluster, k8s.vip, API_PORT) if k8s.vip else cluster


@dataclass
class NodeShell:
    """Commands on one node; a non-zero exit is a StageError quoting the (masked) end of its output."""

    name: str
    endpoint: SshEndpoint
    known_hosts: Path
    log: Callable[[str], None] = lambda _m: None

    def run(self, command: str, *, timeout: float = 120, stdin: str | None = None, what: str | None = None,
            hint: str | None = None) -> CommandResult:
        try:
            result = run_command(self.endpoint, command, known_hosts=self.known_hosts, alias=self.name,
                                 timeout=timeout, stdin=stdin.encode() if stdin is not None else None)
        except LabError as exc:
            raise StageError("cluster", f"{what or command}: {exc.message}", host=self.name, hint=exc.hint) from None
        if not result.ok:
            tail = REDACTOR.redact_text("\n".join((result.stdout + result.stderr).strip().splitlines()[-15:]))
            raise StageError("cluster", f"{what or command} failed with exit status {result.rc}:\n{tail}",
                             host=self.name, hint=hint or "")
        return result

    def check(self, command: str) -> bool:
        """Whether ``command`` exits 0 (a test, never an error)."""
        try:
            return run_command(self.endpoint, command, known_hosts=self.known_hosts, alias=self.name,
                               timeout=60).ok
        except LabError as exc:
            raise StageError("cluster", f"`{command}`: {exc.message}", host=self.name, hint=exc.hint) from None


def shell_for(member: Member, outputs_of: Callable[[str], dict[str, Any]], known_hosts: Path,
              log: Callable[[str], None]) -> NodeShell:
    endpoint = SshEndpoint.from_outputs(outputs_of(f"machine:{member.node.name}")["ssh"])
    return NodeShell(member.node.name, endpoint, known_hosts, log)
