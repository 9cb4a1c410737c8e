"""A Kubernetes API on loopback for cluster-facing checks: kmock's KubernetesEmulator over real HTTP.

The emulator stores and serves objects (discovery, list, watch, get, create, patch, delete) and
runs no controllers. The tests play the parts a real cluster's components would:

* ``seed`` loads a YAML state (tests/fixtures/k8s/*.yaml) as the API server's stored objects;
* ``FakeKubelet`` (a thread talking to the API over HTTP with the official client, like a kubelet
  and the service controller do) moves pods the checks create to Running/Succeeded/Failed, gives
  them an IP and a node, serves their logs, and assigns Services a ClusterIP. What it does to a
  pod is decided by the test (``behave``), so a test states what a healthy or broken cluster
  would answer.

Four small additions stand in for API-server behaviour kmock lacks (each only as far as the
cluster helpers' tests need it, and no further):

* server-side apply (:class:`ApplyingEmulator`): a PATCH with ``application/apply-patch+yaml``
  creates a missing object and merges into an existing one, and ``metadata.resourceVersion`` is
  bumped only when the stored object changed -- a real API server's answer to a create, a change
  and a no-op apply. Field ownership, conflicts and list merging by key are not emulated;
* discovery of the built-in kinds (``declare_builtin``), so clients resolve kind -> plural and
  scope from ``/api/v1`` and ``/apis/<group>/<version>`` as against a real server;
* Namespace objects by name (:func:`_as_namespace_object`): kmock reads ``/api/v1/namespaces/<name>``
  as a namespace prefix, not as the Namespace object ``<name>``; the emulator gets, patches, applies
  and deletes that object there instead (no finalization: a deleted namespace is gone at once, and
  the objects in it stay stored);
* the Eviction subresource: ``POST .../pods/<name>/eviction`` deletes the pod at once (a real
  server deletes it gracefully and the kubelet removes it), or answers 429 as a
  PodDisruptionBudget would for the pods in ``refuse_eviction``.

"""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import kmock
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k8s"
CLUSTER_SCOPED = {"Node", "RuntimeClass", "Namespace"}
PLURALS = {
    "Node": "nodes",
    "Pod": "pods",
    "Service": "services",
    "ConfigMap": "configmaps",
    "DaemonSet": "daemonsets",
    "Deployment": "deployments",
    "RuntimeClass": "runtimeclasses",
    "PeerAuthentication": "peerauthentications",
    "Namespace": "namespaces",
    "Event": "events",
}
APPLY = "application/apply-patch+yaml"
# What a real API server's discovery lists for the kinds the cluster helpers touch: plural -> (kind, namespaced).
BUILTIN = {
    "v1/nodes": ("Node", False),
    "v1/namespaces": ("Namespace", False),
    "v1/pods": ("Pod", True),
    "v1/services": ("Service", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/serviceaccounts": ("ServiceAccount", True),
    "v1/events": ("Event", True),
    "apps/v1/deployments": ("Deployment", True),
    "apps/v1/daemonsets": ("DaemonSet", True),
    "node.k8s.io/v1/runtimeclasses": ("RuntimeClass", False),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False),
}


def resource_of(obj: dict[str, Any]) -> str:
    """kmock's resource key (``v1/pods``, ``apps/v1/deployments``) for a manifest."""
    return f"{obj['apiVersion']}/{PLURALS[obj['kind']]}"


@attrs.define(kw_only=True)
class ApplyingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus server-side apply and resourceVersions for what apply writes."""

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: Any) -> Any:
        request = self._namespace_object(request)
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        if request.resource is not None and request.method == "PATCH" and request.name and content_type == APPLY:
            async with self._lock:
                await self._apply(request)
        return await super()._handle(request)  # kmock's own PATCH merges the same body again: a no-op

    def _namespace_object(self, request: Any) -> Any:
        """The request as :func:`_as_namespace_object` reads it, also in the log of requests (kmock
        matches its reactions to the requests it logged, by identity)."""
        read = _as_namespace_object(request)
        if read is not request:
            self._requests[next(i for i, r in enumerate(self._requests) if r is request)] = read
        return read

    async def _apply(self, request: Any) -> None:
        key = (request.resource, request.namespace, request.name)
        objects = self._objects
        if key not in objects or objects[key].deleted:
            body = copy.deepcopy(dict(request.data))
            body.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
            if key in objects:
                objects[key].create(body)
            else:
                objects[key] = body
            await self._buses[request.resource].put({"type": "ADDED", "object": objects[key].raw})
            return
        before = copy.deepcopy(objects[key].raw)
        objects[key].patch(request.data)
        if objects[key].raw != before:
            objects[key].patch({"metadata": {"resourceVersion": str(next(self._versions))}})


NAMESPACE_ACTIONS = {"GET": kmock.action.FETCH, "PATCH": kmock.action.UPDATE, "DELETE": kmock.action.DELETE}


def _as_namespace_object(request: Any) -> Any:
    """``/api/v1/namespaces/<name>`` (which kmock parses as the prefix of namespace ``<name>``) as the
    request for the Namespace object ``<name>``, as a real API server reads it."""
    parts = request.url.path.strip("/").split("/")
    if len(parts) != 4 or parts[:3] != ["api", "v1", "namespaces"] or request.method.value not in NAMESPACE_ACTIONS:
        return request
    return attrs.evolve(request, resource=kmock.resource("", "v1", "namespaces"), namespace=None, name=parts[3],
                        action=NAMESPACE_ACTIONS[request.method.value])


class KubeServer:
    """A KubernetesEmulator with an aiohttp server on 127.0.0.1, run in its own event-loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="kmock")
        self._thread.start()
        self.emulator = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.readyz: tuple[int, bytes] = (200, b"ok")
        self.logs: dict[tuple[str, str], str] = {}
        self.emulator["get /readyz"] << (lambda: kmock.Response(status=self.readyz[0], payload=self.readyz[1]))
        self.emulator["get", kmock.subresource("log")] << self._serve_log
        self.refuse_eviction: set[tuple[str, str]] = set()
        self.emulator["post", kmock.subresource("eviction")] << self._evict

    async def _start(self) -> kmock.KubernetesEmulator:
        emulator = ApplyingEmulator()
        await emulator.__aenter__()
        self._server = kmock.Server(emulator)
        await self._server.__aenter__()
        return emulator

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the emulator's loop (its state is not thread-safe) and return its result."""
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:  # handed back to the calling thread
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(10)

    def _serve_log(self, request: kmock.Request) -> kmock.Response:
        text = self.logs.get((request.namespace or "", request.name or ""), "")
        return kmock.Response(headers={"Content-Type": "text/plain"}, payload=text.encode())

    def _evict(self, request: kmock.Request) -> kmock.Response:
        ns, name = request.namespace or "", request.name or ""
        if (ns, name) in self.refuse_eviction:
            return _status(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
        key = (request.resource, ns, name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return _status(404, "NotFound", f'pods "{name}" not found')
        self.emulator.objects[key].delete()
        return _status(201, "", "")

    def declare_builtin(self) -> None:
        """Serve discovery for the built-in kinds in :data:`BUILTIN` (a real server always does)."""

        def declare() -> None:
            for key, (kind, namespaced) in BUILTIN.items():
                self.emulator.resources[key] = self.emulator.ResourceInfo(kind=kind, namespaced=namespaced)

        self.call(declare)

    def stored(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The stored object (as the API server holds it), None when absent or deleted."""

        def find() -> dict[str, Any] | None:
            for (res, ns, obj_name), obj in self.emulator.objects.items():
                if res.plural == PLURALS[kind] and obj_name == name and ns == namespace and not obj.deleted:
                    return copy.deepcopy(dict(obj.raw))
            return None

        result: dict[str, Any] | None = self.call(find)
        return result

    def requests(self, method: str, plural: str) -> list[Any]:
        """Every request the server got with ``method`` on resource ``plural``, in order."""
        return [
            r
            for r in self.call(lambda: list(self.emulator))
            if r.method == method and r.resource is not None and r.resource.plural == plural
        ]

    @property
    def url(self) -> str:
        return str(self._server.url).rstrip("/")

    def seed(self, *objects: dict[str, Any]) -> None:
        """Store objects as if they existed in the cluster (runs on the emulator's loop)."""

        def put() -> None:
            for obj in objects:
                ns = None if obj["kind"] in CLUSTER_SCOPED else obj["metadata"].get("namespace", "default")
                self.emulator.objects[resource_of(obj), ns, obj["metadata"]["name"]] = obj

        self.call(put)

    def seed_file(self, name: str) -> None:
        with (FIXTURES / name).open() as handle:
            self.seed(*[doc for doc in yaml.safe_load_all(handle) if doc])

    def created(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind`` the client created (POST bodies, in order)."""
        plural = PLURALS[kind]
        return [
            dict(r.data)
            for r in self.call(lambda: list(self.emulator))
            if r.method == "POST" and r.resource is not None and r.resource.plural == plural
        ]

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "kmock",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "kmock", "user": {"token": "kmock"}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                }
            )
        )
        path.chmod(0o600)
        return path

    def api_client(self, directory: Path) -> Any:
        return config.new_client_from_config(config_file=str(self.kubeconfig(directory)))

    def close(self) -> None:
        async def stop() -> None:
            await self._server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class PodFate:
    """What the fake kubelet makes of a pod: final phase, its logs, and where it runs."""

    phase: str = "Succeeded"
    logs: str = ""
    node: str | None = None


Behave = Callable[[dict[str, Any]], PodFate]


@dataclass
class FakeKubelet:
    """Drives created pods and services through the API like kubelet + service controller would."""

    server: KubeServer
    api: Any
    behave: Behave
    nodes: tuple[str, ...] = ("worker-1", "worker-2")
    seen: set[tuple[str, str]] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ips: Iterator[int] = field(default_factory=lambda: itertools.count(10))

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fake-kubelet")
        self._thread.start()

    def _stored(self, plural: str) -> list[tuple[str, str]]:
        """(namespace, name) of live stored objects; kmock lists do not fill metadata.namespace."""

        def keys() -> list[tuple[str, str]]:
            return [
                (ns or "", name)
                for (res, ns, name), obj in self.server.emulator.objects.items()
                if res.plural == plural and not obj.deleted
            ]

        return list(self.server.call(keys))

    def _loop(self) -> None:
        core = client.CoreV1Api(self.api)
        while not self._stop.wait(0.1):
            for ns, name in self._stored("pods"):
                if (ns, name) not in self.seen:
                    _gone_is_fine(partial(self._read_and_advance, core, ns, name))
            for ns, name in self._stored("services"):
                _gone_is_fine(partial(self._assign_ip, core, ns, name))

    def _read_and_advance(self, core: Any, ns: str, name: str) -> None:
        self._advance(core, ns, core.read_namespaced_pod(name, ns))

    def _assign_ip(self, core: Any, ns: str, name: str) -> None:
        if not core.read_namespaced_service(name, ns).spec.cluster_ip:
            core.patch_namespaced_service(name, ns, {"spec": {"clusterIP": f"10.96.0.{next(self._ips)}"}})

    def _advance(self, core: Any, ns: str, pod: Any) -> None:
        key = (ns, pod.metadata.name)
        labels = pod.metadata.labels or {}
        if labels.get("app.kubernetes.io/managed-by") != "labdeploy-verify":
            return
        self.seen.add(key)
        fate = self.behave(self.api.sanitize_for_serialization(pod))
        node = pod.spec.node_name or fate.node or self.nodes[0]
        ip = f"10.0.{self.nodes.index(node) if node in self.nodes else 9}.{next(self._ips)}"
        self.server.logs[key] = fate.logs
        core.patch_namespaced_pod_status(
            pod.metadata.name,
            ns,
            {"spec": {"nodeName": node}, "status": {"phase": fate.phase, "podIP": ip, "hostIP": "192.0.2.1"}},
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _gone_is_fine(step: Callable[[], None]) -> None:
    """Run one step on an object; the check may delete it meanwhile, as on a real cluster."""
    try:
        step()
    except ApiException as exc:
        if exc.status != 404:
            raise


def _status(code: int, reason: str, message: str) -> kmock.Response:
    body = {"apiVersion": "v1", "kind": "Status", "code": code, "reason": reason, "message": message,
            "status": "Success" if code < 300 else "Failure"}
    return kmock.Response(status=code, payload=body)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
