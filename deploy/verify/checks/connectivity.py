"""Request-between-pods experiments shared by the Kubernetes, Cilium and Istio checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploy.retry import RetryTimeout, poll
from deploy.verify.checks import pods
from deploy.verify.model import ClusterExpect
from deploy.verify.retry import CheckFailure

HTTP_PORT = 8080
SERVER_MARKER = "labdeploy-pod-ok"
# busybox httpd serving a marker page and a CGI that echoes the client-certificate header Istio adds
SERVER_SCRIPT = (
    "mkdir -p /www/cgi-bin && echo " + SERVER_MARKER + " > /www/index.html && "
    "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho "
    + SERVER_MARKER
    + " xfcc=$HTTP_X_FORWARDED_CLIENT_CERT\\n' > /www/cgi-bin/echo && chmod +x /www/cgi-bin/echo && "
    f"exec httpd -f -p {HTTP_PORT} -h /www"
)


@dataclass(frozen=True)
class Experiment:
    """A server pod, optionally behind a ClusterIP Service, and one client pod that fetches it."""

    kind: str  # names the pods: pod2pod, kpr, mtls, plaintext ...
    server_node: str | None
    client_node: str | None
    via_service: bool = False
    server_labels: dict[str, str] = field(default_factory=dict)
    client_labels: dict[str, str] = field(default_factory=dict)
    client_after: str = ""  # shell run by the client after the request (e.g. stop a sidecar)
    path: str = "/"


@dataclass(frozen=True)
class Outcome:
    url: str
    client: pods.PodRun
    server: pods.PodRun

    @property
    def rc(self) -> int | None:
        return pods.exit_code(self.client.logs)


def two_nodes(api: Any) -> tuple[str, str]:
    """Two Ready, schedulable nodes, workers first; CheckSkipped when the cluster has fewer."""
    nodes = pods.core(api).list_node().items
    ready = [n for n in nodes if _ready(n) and not (n.spec and n.spec.unschedulable)]
    ready.sort(key=lambda n: "node-role.kubernetes.io/control-plane" in (n.metadata.labels or {}))
    if len(ready) < 2:
        raise pods.CheckSkipped(f"needs two Ready schedulable nodes, the cluster has {len(ready)}")
    return ready[0].metadata.name, ready[1].metadata.name


def _ready(node: Any) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def run(api: Any, cluster: ClusterExpect, exp: Experiment) -> Outcome:
    """Start the server, optionally a Service, run the client; always cleans up."""
    ns = cluster.namespace
    name = pods.unique(exp.kind)
    labels = {"app": name, **exp.server_labels}
    server = pods.pod_manifest(
        f"{name}-server",
        cluster.images.shell,
        ["sh", "-c", SERVER_SCRIPT],
        node=exp.server_node,
        labels=labels,
        port=HTTP_PORT,
        restart="Always",
    )
    created: list[tuple[str, str]] = [("Pod", f"{name}-server")]
    try:
        started = pods.start_pod(api, ns, server, cluster.pod_timeout)
        host = f"{started.ip}:{HTTP_PORT}"
        if exp.via_service:
            host = f"{_service_ip(api, ns, name, cluster.pod_timeout)}:80"
            created.append(("Service", name))
        url = f"http://{host}{exp.path}"
        command = pods.http_client_command(url, tool=cluster.images.http_tool, after=exp.client_after)
        client_pod = pods.pod_manifest(
            f"{name}-client", cluster.images.curl, command, node=exp.client_node, labels=exp.client_labels
        )
        return Outcome(url, pods.run_pod(api, ns, client_pod, cluster.pod_timeout), started)
    finally:
        for kind, obj in created:
            pods.delete(api, ns, kind, obj)


def _service_ip(api: Any, ns: str, name: str, timeout: float) -> str:
    """Create a ClusterIP Service for the server and wait until it has its address."""
    pods.create(api, ns, pods.service_manifest(name, {"app": name}, 80, HTTP_PORT))
    try:
        ip = poll(
            lambda: pods.core(api).read_namespaced_service(name, ns).spec.cluster_ip,
            lambda ip: bool(ip) and ip != "None",
            describe=f"a ClusterIP for Service {ns}/{name}",
            deadline_s=timeout,
            interval=1.0,
        )
    except RetryTimeout:
        raise CheckFailure(
            f"Service {ns}/{name}",
            expected="a ClusterIP",
            seen="none assigned",
            reproduce=f"kubectl -n {ns} get svc {name} -o yaml",
        ) from None
    return str(ip)


def expect_success(outcome: Outcome, what: str, reproduce: str, marker: str = SERVER_MARKER) -> None:
    if outcome.rc != 0 or marker not in outcome.client.logs:
        raise CheckFailure(
            what,
            node=outcome.client.node,
            expected=f"{outcome.url} answers with {marker!r} (client rc=0)",
            seen=f"client pod {outcome.client.name} phase {outcome.client.phase}, "
            f"rc={outcome.rc}: {outcome.client.logs}",
            reproduce=reproduce,
        )
