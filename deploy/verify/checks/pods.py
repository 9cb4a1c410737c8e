"""Run a short-lived pod through the official client: submit, wait for its phase, read logs, clean up.

Waiting polls the pod with a deadline (it works the same on every API server, including ones
whose watch streams ignore ``timeoutSeconds``). Manifests are plain dicts built by small pure
functions so tests can validate them against the Kubernetes OpenAPI schemas.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.retry import RetryTimeout, backoff, last_value, poll
from deploy.verify.retry import CheckFailure

PREFIX = "labdeploy-verify"
DONE = ("Succeeded", "Failed")
RC_LINE = re.compile(r"^rc=(\d+)\s*$", re.MULTILINE)
POLL_INTERVAL = backoff(0.2, 1.5, 2.0)  # quick for pods that finish at once, at most every 2 s


class CheckSkipped(Exception):
    """The cluster cannot run this check (e.g. one node only); it is reported as skipped."""


@dataclass(frozen=True)
class PodRun:
    name: str
    phase: str
    logs: str
    node: str | None
    ip: str | None = None


def unique(kind: str) -> str:
    return f"{PREFIX}-{kind}-{os.getpid() % 10000}-{uuid.uuid4().hex[:6]}"


def core(api: Any) -> Any:
    """CoreV1Api on ``api``, typed loosely: checks read optional fields defensively anyway."""
    return client.CoreV1Api(api)


def pod_manifest(
    name: str,
    image: str,
    command: list[str],
    *,
    node: str | None = None,
    runtime_class: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    port: int | None = None,
    restart: str = "Never",
) -> dict[str, Any]:
    """A one-container pod, pinned to ``node`` when given (an empty ``command`` keeps the image's entrypoint)."""
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        **({"command": command} if command else {}),
        "imagePullPolicy": "IfNotPresent",
    }
    if limits:
        container["resources"] = {"limits": dict(limits)}
    if port:
        container["ports"] = [{"containerPort": port, "protocol": "TCP"}]
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "containers": [container],
        "terminationGracePeriodSeconds": 1,
    }
    if node:
        spec["nodeName"] = node
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": PREFIX, **(labels or {})},
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def service_manifest(name: str, selector: dict[str, str], port: int, target: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": PREFIX}},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def http_client_command(url: str, *, tool: str = "wget", after: str = "") -> list[str]:
    """A shell that fetches ``url`` once and always prints ``rc=N`` last (read by :func:`exit_code`)."""
    fetch = {"wget": f"wget -q -T 5 -O- {url}", "curl": f"curl -sS -m 5 {url}"}.get(tool) or _nc_get(url)
    tail = f"; {after}" if after else ""
    return ["sh", "-c", f"{fetch}; echo rc=$?{tail}; exit 0"]


def _nc_get(url: str) -> str:
    """HTTP/1.0 GET through ``nc`` (a static busybox's wget crashes in glibc's resolver; nc takes an IP)."""
    rest = url.split("://", 1)[-1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    request = f"GET /{path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"
    return f"printf '{request}' | nc -w 5 {host} {port or 80}"


def exit_code(logs: str) -> int | None:
    """The last ``rc=N`` line a client pod printed, or None when it printed none."""
    found = RC_LINE.findall(logs)
    return int(found[-1]) if found else None


def create(api: Any, namespace: str, manifest: dict[str, Any]) -> None:
    kind = manifest["kind"]
    try:
        if kind == "Pod":
            core(api).create_namespaced_pod(namespace, manifest)
        else:
            core(api).create_namespaced_service(namespace, manifest)
    except ApiException as exc:
        raise CheckFailure(
            f"creating {kind} {namespace}/{manifest['metadata']['name']}",
            expected="the API server accepts it",
            seen=f"{exc.status} {exc.reason}: {exc.body}",
            reproduce=f"kubectl -n {namespace} get events",
        ) from None


def delete(api: Any, namespace: str, kind: str, name: str) -> None:
    try:
        if kind == "Pod":
            core(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        else:
            core(api).delete_namespaced_service(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def wait_phase(api: Any, namespace: str, name: str, phases: tuple[str, ...], timeout: float) -> Any:
    """Poll the pod until its phase is one of ``phases``; CheckFailure names the last phase seen."""

    def reached(pod: Any) -> bool:
        phase = _phase(pod)
        return phase in phases or (phase in DONE and "Running" in phases)

    try:
        return poll(
            lambda: core(api).read_namespaced_pod(name, namespace),
            reached,
            describe=f"pod {namespace}/{name} in phase {' or '.join(phases)}",
            deadline_s=timeout,
            interval=POLL_INTERVAL,
        )
    except RetryTimeout as timed_out:
        pod = last_value(timed_out)
        raise CheckFailure(
            f"pod {namespace}/{name}",
            expected=f"phase {' or '.join(phases)} within {timeout:.0f}s",
            seen=f"phase {_phase(pod)}; {_waiting_reason(pod)}",
            reproduce=f"kubectl -n {namespace} describe pod {name}",
        ) from None


def _phase(pod: Any) -> str:
    return (pod.status.phase if pod.status else None) or "Pending"


def _waiting_reason(pod: Any) -> str:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    for status in statuses:
        waiting = status.state.waiting if status.state else None
        if waiting:
            return f"container {status.name} waiting: {waiting.reason} {waiting.message or ''}".strip()
    return "no container status yet"


def logs(api: Any, namespace: str, name: str) -> str:
    try:
        return str(core(api).read_namespaced_pod_log(name, namespace, container="main"))
    except ApiException as exc:
        return f"(logs unavailable: {exc.status} {exc.reason})"


def run_pod(api: Any, namespace: str, manifest: dict[str, Any], timeout: float) -> PodRun:
    """Run a pod to completion and return its phase and logs; the pod is always deleted."""
    name = manifest["metadata"]["name"]
    create(api, namespace, manifest)
    try:
        pod = wait_phase(api, namespace, name, DONE, timeout)
        return PodRun(name, pod.status.phase, logs(api, namespace, name), pod.spec.node_name, pod.status.pod_ip)
    finally:
        delete(api, namespace, "Pod", name)


def start_pod(api: Any, namespace: str, manifest: dict[str, Any], timeout: float) -> PodRun:
    """Start a long-running pod and wait until it runs with an IP; the caller deletes it."""
    name = manifest["metadata"]["name"]
    create(api, namespace, manifest)
    pod = wait_phase(api, namespace, name, ("Running",), timeout)
    if pod.status.phase != "Running" or not pod.status.pod_ip:
        raise CheckFailure(
            f"server pod {namespace}/{name}",
            expected="Running with a pod IP",
            seen=f"phase {pod.status.phase}, IP {pod.status.pod_ip}; logs: {logs(api, namespace, name)}",
            reproduce=f"kubectl -n {namespace} describe pod {name}",
        )
    return PodRun(name, "Running", "", pod.spec.node_name, pod.status.pod_ip)
