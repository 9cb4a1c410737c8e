"""A Kubernetes API on loopback for cluster-facing checks: kmock's KubernetesEmulator over real HTTP.

The emulator stores and serves objects (discovery, list, watch, get, create, patch, delete) and
runs no controllers. The tests play the parts a real cluster's components would:

* ``seed`` loads a YAML state (tests/fixtures/k8s/*.yaml) as the API server's stored objects;
* ``FakeKubelet`` (a thread talking to the API over HTTP with the official client, like a kubelet
  and the service controller do) moves pods the checks create to Running/Succeeded/Failed, gives
  them an IP and a node, serves their logs, and assigns Services a ClusterIP. What it does to a
  pod is decided by the test (``behave``), so a test states what a healthy or broken cluster
  would answer.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

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
}


def resource_of(obj: dict[str, Any]) -> str:
    """kmock's resource key (``v1/pods``, ``apps/v1/deployments``) for a manifest."""
    return f"{obj['apiVersion']}/{PLURALS[obj['kind']]}"


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

    async def _start(self) -> kmock.KubernetesEmulator:
        emulator = kmock.KubernetesEmulator()
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


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
