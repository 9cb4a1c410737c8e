"""Wait for a Deployment or DaemonSet to be rolled out, as ``kubectl rollout status`` decides it.

Rolled out: the controller saw the current spec (``status.observedGeneration >=
metadata.generation``) and every desired pod is updated and ready/available. On timeout the
StageError names the object, its counts and each pod of it that is not ready, with the pod's
phase, waiting containers and its last events (reason: message) -- what ``kubectl describe``
would have shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.cluster.kube_nodes import api_read
from deploy.errors import StageError
from deploy.retry import RetryTimeout, last_value, poll

Kind = Literal["Deployment", "DaemonSet"]
LAST_EVENTS = 3


@dataclass(frozen=True)
class Counts:
    desired: int
    updated: int
    ready: int
    available: int
    current: int  # pods of any revision (old ones still terminating count here)
    generation: int
    observed: int

    @property
    def done(self) -> bool:
        return (self.observed >= self.generation and self.updated == self.desired
                and self.ready == self.desired and self.available == self.desired and self.current == self.desired)

    def __str__(self) -> str:
        return (f"desired {self.desired}, updated {self.updated}, ready {self.ready}, available {self.available}, "
                f"current {self.current}, observedGeneration {self.observed} of {self.generation}")


def counts(kind: Kind, obj: dict[str, Any]) -> Counts:
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if kind == "Deployment":
        desired = int(spec.get("replicas", 1))
        return Counts(desired, int(status.get("updatedReplicas") or 0), int(status.get("readyReplicas") or 0),
                      int(status.get("availableReplicas") or 0), int(status.get("replicas") or 0), generation, observed)
    desired = int(status.get("desiredNumberScheduled") or 0)
    return Counts(desired, int(status.get("updatedNumberScheduled") or 0), int(status.get("numberReady") or 0),
                  int(status.get("numberAvailable") or 0), int(status.get("currentNumberScheduled") or 0),
                  generation, observed)


@dataclass(frozen=True)
class Seen:
    obj: dict[str, Any] | None
    error: str | None = None


def _read(api: client.ApiClient, kind: Kind, namespace: str, name: str, stage: str) -> Seen:
    apps = client.AppsV1Api(api)
    read = apps.read_namespaced_deployment if kind == "Deployment" else apps.read_namespaced_daemon_set

    def fetch() -> Any:
        try:
            return read(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    found, error = api_read(fetch, stage)
    if error or found is None:
        return Seen(None, error or "not found")
    return Seen(api.sanitize_for_serialization(found))  # type: ignore[no-untyped-call]


def wait_rollout(  # noqa: PLR0917 -- the signature the cluster and addon stages call
    api: client.ApiClient,
    kind: Kind,
    namespace: str,
    name: str,
    timeout: float,
    interval: float = 5,
    *,
    stage: str = "cluster",
) -> Counts:
    """Wait until ``kind`` ``namespace/name`` is rolled out; its final counts."""
    if kind not in ("Deployment", "DaemonSet"):
        raise ValueError(f"wait_rollout knows Deployment and DaemonSet, not {kind!r}")
    what = f"{kind} {namespace}/{name}"
    try:
        seen = poll(lambda: _read(api, kind, namespace, name, stage),
                    lambda s: s.obj is not None and counts(kind, s.obj).done,
                    describe=f"rollout of {what}", deadline_s=timeout, interval=interval)
    except RetryTimeout as exc:
        last: Seen = last_value(exc)
        raise StageError(stage, f"{what} not rolled out after {timeout:g}s: {_why(api, kind, last)}",
                         hint=f"kubectl -n {namespace} describe {kind.lower()} {name}; "
                         f"kubectl -n {namespace} get events --sort-by=.lastTimestamp") from None
    assert seen.obj is not None
    return counts(kind, seen.obj)


def _why(api: client.ApiClient, kind: Kind, seen: Seen) -> str:
    if seen.obj is None:
        return str(seen.error)
    meta = seen.obj["metadata"]
    ns = meta.get("namespace") or "default"
    labels = ((seen.obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    pods = _pods(api, ns, labels)
    bad = [p for p in pods if not _pod_ready(p)]
    text = str(counts(kind, seen.obj))
    if not pods:
        own = _events(api, ns, kind, meta["name"])
        return f"{text}; no pods match {_selector(labels)}" + (f"; events: {own}" if own else "")
    return f"{text}; not ready: " + ", ".join(_describe_pod(api, p) for p in bad) if bad else text


def not_ready_pods(api: client.ApiClient, namespace: str) -> list[str]:
    """Each pod of ``namespace`` that is not Ready: its phase, waiting containers and last events."""
    return [_describe_pod(api, p) for p in _pods(api, namespace, {}) if not _pod_ready(p)]


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _pods(api: client.ApiClient, ns: str, labels: dict[str, str]) -> list[Any]:
    items: list[Any] = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=_selector(labels)).items
    return sorted((p for p in items if labels.items() <= (p.metadata.labels or {}).items()),
                  key=lambda p: p.metadata.name)


def _pod_ready(pod: Any) -> bool:
    conds = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def _describe_pod(api: client.ApiClient, pod: Any) -> str:
    status = pod.status
    parts = [str(status.phase if status else "Unknown")]
    for cs in (status.container_statuses if status else None) or []:
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason:
            detail = f": {waiting.message}" if waiting.message else ""
            parts.append(f"container {cs.name} waiting: {waiting.reason}{detail}")
    events = _events(api, pod.metadata.namespace, "Pod", pod.metadata.name)
    if events:
        parts.append(f"events: {events}")
    return f"{pod.metadata.name} ({'; '.join(parts)})"


def _events(api: client.ApiClient, ns: str, kind: str, name: str) -> str:
    """The last events of an object, oldest first: ``reason: message``, joined by " | "."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    try:
        items = client.CoreV1Api(api).list_namespaced_event(ns, field_selector=selector).items
    except ApiException as exc:
        return f"(events unreadable: {exc.status} {exc.reason})"
    mine: list[Any] = [e for e in items if e.involved_object.name == name and e.involved_object.kind == kind]
    mine.sort(key=_when)
    return " | ".join(f"{e.reason}: {e.message}" for e in mine[-LAST_EVENTS:])


def _when(event: Any) -> str:
    meta = event.metadata
    return str(event.last_timestamp or event.event_time or event.first_timestamp or meta.creation_timestamp or "")
