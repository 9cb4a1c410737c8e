"""Nodes through the official client: wait for Ready, read pod CIDRs, drain and delete a worker.

Every wait has a deadline and, on timeout, a StageError naming each node still awaited and why
(its Ready condition's status, reason and message, or "not registered"). API errors that a
restarting or still-starting API server gives (connection refused, 5xx, 429) are waited through
and quoted if the deadline passes on them; refused credentials (401/403) end the wait at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.cluster.kube_api import request, server_message
from deploy.errors import StageError
from deploy.retry import RetryTimeout, last_value, poll

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class Snapshot:
    """One read of the nodes: by name, or the error the API server answered with."""

    nodes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def api_read(read: Callable[[], Any], stage: str) -> tuple[Any, str | None]:
    """``read()``'s value, or (None, why) for an error worth waiting through."""
    try:
        return read(), None
    except ApiException as exc:
        if exc.status in (401, 403):
            raise StageError(stage, f"the API server refused the credentials: {server_message(exc)}") from exc
        if exc.status is not None and exc.status < 500 and exc.status != 429:
            raise StageError(stage, f"the API server refused: {server_message(exc)}") from exc
        return None, server_message(exc)
    except urllib3.exceptions.HTTPError as exc:
        return None, f"the API server did not answer: {exc}"


def _list_nodes(api: client.ApiClient, stage: str) -> Snapshot:
    items, error = api_read(lambda: client.CoreV1Api(api).list_node().items, stage)
    return Snapshot(error=error) if error else Snapshot({n.metadata.name: n for n in items})


def ready_condition(node: Any) -> Any:
    return next((c for c in (node.status.conditions or []) if c.type == "Ready"), None) if node.status else None


def is_ready(node: Any) -> bool:
    cond = ready_condition(node)
    return cond is not None and cond.status == "True"


def not_ready_reason(node: Any) -> str:
    """``Ready=False: KubeletNotReady: <message>`` (or why there is no verdict yet)."""
    cond = ready_condition(node)
    if cond is None:
        return "no Ready condition yet"
    return ": ".join(str(part) for part in (f"Ready={cond.status}", cond.reason, cond.message) if part)


def node_summary(node: Any) -> dict[str, Any]:
    """What the later stages need of a node: addresses, pod CIDRs, kubelet version, labels."""
    status, spec = node.status, node.spec
    addresses = {a.type: a.address for a in (status.addresses if status else None) or []}
    info = status.node_info if status else None
    return {
        "name": node.metadata.name,
        "ready": is_ready(node),
        "podCIDR": spec.pod_cidr if spec else None,
        "podCIDRs": list((spec.pod_cidrs if spec else None) or []),
        "internalIP": addresses.get("InternalIP"),
        "hostname": addresses.get("Hostname"),
        "kubeletVersion": info.kubelet_version if info else None,
        "labels": dict(node.metadata.labels or {}),
        "unschedulable": bool(spec.unschedulable) if spec else False,
    }


def wait_nodes_ready(
    api: client.ApiClient, names: Iterable[str], timeout: float, interval: float = 5, *, stage: str = "cluster"
) -> dict[str, dict[str, Any]]:
    """Wait until every node in ``names`` is registered and Ready; their :func:`node_summary`."""
    wanted = list(dict.fromkeys(names))

    def done(snap: Snapshot) -> bool:
        return snap.error is None and all(n in snap.nodes and is_ready(snap.nodes[n]) for n in wanted)

    snap = _wait(api, done, f"nodes Ready: {', '.join(wanted)}", timeout=timeout, interval=interval, stage=stage)
    if isinstance(snap, Snapshot):
        return {n: node_summary(snap.nodes[n]) for n in wanted}
    waiting = [f"{n} ({not_ready_reason(snap.last.nodes[n]) if n in snap.last.nodes else 'not registered'})"
               for n in wanted if not (n in snap.last.nodes and is_ready(snap.last.nodes[n]))]
    raise StageError(
        stage,
        f"nodes not Ready after {timeout:g}s: " + (snap.last.error or ", ".join(waiting)),
        hint="'not registered': the node's kubelet never reached the API server (journalctl -u kubelet on "
        "it; kubeadm join's output); NotReady with 'network not ready': no CNI is installed on it yet",
    )


def node_pod_cidrs(api: client.ApiClient, *, stage: str = "cluster") -> dict[str, str]:
    """``{node: spec.podCIDR}`` of the registered nodes that have one (assigned by the controller
    manager when it allocates node CIDRs), read once."""
    snap = _list_nodes(api, stage)
    if snap.error:
        raise StageError(stage, f"reading the nodes' pod CIDRs: {snap.error}")
    return {name: node.spec.pod_cidr for name, node in snap.nodes.items() if node.spec and node.spec.pod_cidr}


def wait_pod_cidrs(
    api: client.ApiClient, names: Iterable[str], timeout: float, interval: float = 2, *, stage: str = "cluster"
) -> dict[str, str]:
    """Wait until each node in ``names`` has a podCIDR (a CNI needs them before nodes go Ready)."""
    wanted = list(dict.fromkeys(names))

    def done(snap: Snapshot) -> bool:
        return snap.error is None and all(n in snap.nodes and snap.nodes[n].spec.pod_cidr for n in wanted)

    snap = _wait(api, done, f"pod CIDRs of {', '.join(wanted)}", timeout=timeout, interval=interval, stage=stage)
    if isinstance(snap, Snapshot):
        return {n: snap.nodes[n].spec.pod_cidr for n in wanted}
    missing = [f"{n} ({'no spec.podCIDR' if n in snap.last.nodes else 'not registered'})"
               for n in wanted if not (n in snap.last.nodes and snap.last.nodes[n].spec.pod_cidr)]
    raise StageError(
        stage,
        f"nodes without a pod CIDR after {timeout:g}s: " + (snap.last.error or ", ".join(missing)),
        hint="the controller manager assigns pod CIDRs only with --allocate-node-cidrs and a cluster CIDR "
        "(kubeadm: networking.podSubnet)",
    )


@dataclass(frozen=True)
class _TimedOut:
    last: Snapshot


def _wait(
    api: client.ApiClient,
    done: Callable[[Snapshot], bool],
    describe: str,
    *,
    timeout: float,
    interval: float,
    stage: str,
) -> Snapshot | _TimedOut:
    try:
        return poll(lambda: _list_nodes(api, stage), done, describe=describe, deadline_s=timeout, interval=interval)
    except RetryTimeout as exc:
        return _TimedOut(last_value(exc))


def delete_node(api: client.ApiClient, name: str, *, stage: str = "cluster") -> bool:
    """Delete the Node object; False when it was not registered (already gone)."""
    try:
        client.CoreV1Api(api).delete_node(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise StageError(stage, f"deleting node {name}: {server_message(exc)}", host=name) from exc
    return True


def evictable(pod: Any) -> bool:
    """kubectl drain's choice: not a mirror (static) pod, not owned by a DaemonSet."""
    if MIRROR_ANNOTATION in (pod.metadata.annotations or {}):
        return False
    return not any(ref.kind == "DaemonSet" for ref in pod.metadata.owner_references or [])


def drain(
    api: client.ApiClient, node: str, timeout: float, interval: float = 2, *, stage: str = "cluster"
) -> list[str]:
    """Cordon ``node``, evict its pods (Eviction API, so PodDisruptionBudgets hold) and wait until
    they are gone; the ``namespace/name`` of the pods evicted. A node not registered drains to []."""
    core = client.CoreV1Api(api)
    try:
        core.patch_node(node, {"spec": {"unschedulable": True}})
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise StageError(stage, f"cordoning {node}: {server_message(exc)}", host=node) from exc
    try:
        listed: list[Any] = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    except ApiException as exc:
        raise StageError(stage, f"listing the pods on {node}: {server_message(exc)}", host=node) from exc
    pods = [p for p in listed if p.spec.node_name == node and evictable(p)]
    state = {(str(p.metadata.namespace), str(p.metadata.name)): _Evicting(str(p.metadata.uid)) for p in pods}
    try:
        poll(lambda: _evict_round(api, state, stage), lambda left: not left,
             describe=f"drain of {node}", deadline_s=timeout, interval=interval)
    except RetryTimeout:
        left = [f"{ns}/{name} ({ev.why})" for (ns, name), ev in state.items() if not ev.gone]
        raise StageError(
            stage,
            f"drain of {node} not finished after {timeout:g}s: pods left: {', '.join(left)}",
            host=node,
            hint="a PodDisruptionBudget refuses the eviction (429) or a pod does not terminate: "
            "kubectl -n NS describe pod NAME; kubectl get pdb -A",
        ) from None
    return sorted(f"{ns}/{name}" for ns, name in state)


@dataclass
class _Evicting:
    uid: str
    evicted: bool = False
    gone: bool = False
    why: str = "not evicted yet"


def _evict_round(api: client.ApiClient, state: dict[tuple[str, str], _Evicting], stage: str) -> list[str]:
    """Ask to evict every pod not yet evicted, then see which are gone; the ones left."""
    core = client.CoreV1Api(api)
    for (ns, name), ev in state.items():
        if not ev.evicted:
            _evict(api, ns, name, ev, stage)
        if ev.evicted and not ev.gone:
            try:
                current: Any = core.read_namespaced_pod(name, ns)
                ev.gone = current.metadata.uid != ev.uid
            except ApiException as exc:
                if exc.status != 404:
                    raise StageError(stage, f"reading pod {ns}/{name}: {server_message(exc)}") from exc
                ev.gone = True
    return [f"{ns}/{name}" for (ns, name), ev in state.items() if not ev.gone]


def _evict(api: client.ApiClient, ns: str, name: str, ev: _Evicting, stage: str) -> None:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    try:
        request(api, "POST", f"/api/v1/namespaces/{ns}/pods/{name}/eviction", body=body)
    except ApiException as exc:
        if exc.status == 404:
            ev.evicted = ev.gone = True
        elif exc.status == 429 or (exc.status or 0) >= 500:
            ev.why = f"eviction refused: {server_message(exc)}"
        else:
            raise StageError(stage, f"evicting pod {ns}/{name}: {server_message(exc)}") from exc
        return
    ev.evicted, ev.why = True, "evicted, still terminating"
