"""The ``join`` step: a nested ESXi node (role ``esxi-host``) added to a vCenter cluster, and removed again.

Once the node is reachable (VMware Tools in the nested ESXi report its address), ``run_join`` asks the
vsphere provider named by ``join.provider`` (default: the node's own) to ``AddHost_Task`` it into
``join.cluster`` with the root credentials from a secret reference. vCenter checks the host's
certificate against ``sslThumbprint``: a pinned ``join.thumbprint`` is sent as is; without one, the
SSLVerifyFault vCenter answers with carries the thumbprint it saw, which is accepted once (trust on first
use, said in the run log) and recorded in the step's outputs. A host already in the cluster is kept.

``teardown_join`` (the node leaves the lab, or the lab is destroyed) puts the host in maintenance mode
and removes it from the cluster before its VM goes, so no disconnected host is left in vCenter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pyVmomi import vim as _vim

from deploy.errors import LabError, ProviderError, StageError
from deploy.providers import vsphere_inventory as inv
from deploy.providers.vsphere_tasks import TaskFailed
from deploy.resources import Outputs, Resource

vim: Any = _vim
log = logging.getLogger(__name__)
STAGE = "hosts"


@dataclass(frozen=True)
class HostLogin:
    """How vCenter logs in to the host it adds (the password never in a repr, a log or the state)."""

    address: str
    user: str
    password: str = field(repr=False)
    thumbprint: str | None = None


def _join(resource: Resource, ctx: Any) -> Outputs:
    node = ctx.resolved.nodes[resource.name]
    join = node.join
    provider = _vsphere(ctx, resource.provider)
    address = _address(ctx, resource.name)
    try:
        added: Outputs = provider.add_host(join.cluster, HostLogin(address, join.user,
                                                                   provider.ctx.secret(join.password), join.thumbprint))
        return added
    except ProviderError as exc:
        raise StageError(STAGE, exc.message, host=resource.name, hint=exc.hint) from None


def run_join(batch: list[Resource], ctx: Any) -> dict[str, Outputs | LabError]:
    from deploy.steps import per_resource

    return per_resource(_join)(batch, ctx)


def teardown_join(provider: Any, name: str, ctx: Any) -> None:
    recorded = ctx.outputs_of(f"join:{name}")
    if recorded.get("host") and recorded.get("cluster"):
        provider.remove_host(recorded["cluster"], recorded["host"])


def _vsphere(ctx: Any, name: str | None) -> Any:
    provider = ctx.providers.get(name or "")
    if not hasattr(provider, "add_host"):
        raise StageError(STAGE, f"provider {name} cannot add ESXi hosts to a cluster",
                         hint="join.provider names a provider of kind vsphere")
    return provider


def _address(ctx: Any, node: str) -> str:
    """Where vCenter reaches the nested host: the address its machine step recorded."""
    machine = ctx.outputs_of(f"machine:{node}")
    found = next(iter((machine.get("addresses") or {}).values()), None) or (machine.get("ssh") or {}).get("host")
    if not found:
        raise StageError(STAGE, "no address recorded for the host", host=node,
                         hint="its machine step records the address VMware Tools report; run `deploy up` again")
    return str(found)


# --- what the vsphere provider does for it (VsphereProvider.add_host / remove_host) ---------------------


def cluster_named(provider: Any, name: str) -> Any:
    dc = provider._datacenter()
    clusters = inv.by_name(provider.si, dc.hostFolder, vim.ClusterComputeResource)
    return inv.pick("cluster", name, clusters, provider._where)


def add_host(provider: Any, cluster_name: str, login: HostLogin) -> Outputs:
    cluster = cluster_named(provider, cluster_name)
    done = {"host": login.address, "cluster": cluster_name}
    if _host_in(cluster, login.address) is not None:
        return done | {"thumbprint": login.thumbprint, "outcome": "kept"}
    try:
        _add(provider, cluster, login)
    except TaskFailed as exc:
        seen = getattr(exc.fault, "thumbprint", None)
        if login.thumbprint is not None or not isinstance(exc.fault, vim.fault.SSLVerifyFault) or not seen:
            raise ProviderError(exc.message, hint="check join.thumbprint, join.user and join.password") from None
        log.warning("ESXi host %s: accepting certificate thumbprint %s on first use (pin it with join.thumbprint)",
                    login.address, seen)
        login = replace(login, thumbprint=seen)
        _add(provider, cluster, login)
    return done | {"thumbprint": login.thumbprint, "outcome": "added"}


def _add(provider: Any, cluster: Any, login: HostLogin) -> None:
    spec = vim.host.ConnectSpec(hostName=login.address, userName=login.user, password=login.password,
                                sslThumbprint=login.thumbprint, force=True)
    provider._task(lambda: cluster.AddHost_Task(spec=spec, asConnected=True),
                   f"adding host {login.address} to cluster {cluster.name}")


def remove_host(provider: Any, cluster_name: str, address: str) -> None:
    """Maintenance mode, then out of the cluster's inventory; nothing when it is not (or no longer) there."""
    try:
        cluster = cluster_named(provider, cluster_name)
    except ProviderError:
        return  # the cluster is gone, and its hosts with it
    host = _host_in(cluster, address)
    if host is None:
        return
    if not host.runtime.inMaintenanceMode:
        provider._task(lambda: host.EnterMaintenanceMode_Task(timeout=0), f"maintenance mode of {address}")
    provider._task(host.Destroy_Task, f"removal of host {address} from cluster {cluster_name}")


def _host_in(cluster: Any, address: str) -> Any:
    return next((h for h in cluster.host if h.name == address), None)
