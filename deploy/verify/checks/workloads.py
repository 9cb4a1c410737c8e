"""Readiness of DaemonSets and Deployments, as the Cilium/Istio/GPU checks need it."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


def _apps(api: Any) -> Any:
    return client.AppsV1Api(api)


def daemonset_problem(api: Any, namespace: str, name: str) -> str | None:
    """Why DaemonSet ``namespace/name`` is not fully ready, or None."""
    try:
        ds = _apps(api).read_namespaced_daemon_set(name, namespace)
    except ApiException as exc:
        return f"DaemonSet {namespace}/{name}: {exc.status} {exc.reason}"
    status = ds.status
    want = status.desired_number_scheduled or 0 if status else 0
    ready = status.number_ready or 0 if status else 0
    if want == 0 or ready < want:
        return f"DaemonSet {namespace}/{name}: {ready}/{want} pods ready"
    return None


def deployment_problem(api: Any, namespace: str, name: str) -> str | None:
    """Why Deployment ``namespace/name`` has fewer ready replicas than wanted, or None."""
    try:
        dep = _apps(api).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        return f"Deployment {namespace}/{name}: {exc.status} {exc.reason}"
    want = dep.spec.replicas if dep.spec and dep.spec.replicas is not None else 1
    ready = (dep.status.ready_replicas or 0) if dep.status else 0
    if want == 0 or ready < want:
        return f"Deployment {namespace}/{name}: {ready}/{want} replicas ready"
    return None
