"""Kubernetes checks: /readyz, nodes Ready with their labels, kube-system healthy, DNS, pod-to-pod."""

from __future__ import annotations

from functools import partial
from typing import Any

from kubernetes.client.exceptions import ApiException

from deploy.verify.checks import connectivity, pods
from deploy.verify.context import Check, VerifyContext
from deploy.verify.retry import CheckFailure, Deadline

K8S_ROLES = ("k8s-control-plane", "k8s-worker")


def checks(ctx: VerifyContext) -> list[Check]:
    slow = Deadline(timeout=ctx.cluster.pod_timeout * 2, interval=10, attempts=2)
    return [
        Check(
            "API /readyz",
            "kubernetes",
            partial(check_readyz, ctx),
            None,
            ctx.kubectl("get --raw /readyz"),
            Deadline(timeout=60, interval=3),
        ),
        Check(
            "nodes Ready with labels",
            "kubernetes",
            partial(check_nodes, ctx),
            None,
            ctx.kubectl("get nodes --show-labels"),
            Deadline(timeout=120, interval=5),
        ),
        Check(
            "kube-system pods healthy",
            "kubernetes",
            partial(check_system_pods, ctx),
            None,
            ctx.kubectl("-n kube-system get pods -o wide"),
            Deadline(timeout=120, interval=5),
        ),
        Check(
            "DNS resolves a service",
            "kubernetes",
            partial(check_dns, ctx),
            None,
            ctx.kubectl(
                "run dnscheck --rm -it --restart=Never --image busybox:1.36 -- "
                "nslookup kubernetes.default.svc.cluster.local"
            ),
            slow,
        ),
        Check(
            "pod-to-pod across nodes",
            "kubernetes",
            partial(check_pod_to_pod, ctx),
            None,
            ctx.kubectl("get pods -o wide -l app.kubernetes.io/managed-by=labdeploy-verify"),
            slow,
        ),
        *([_network_policy(ctx)] if ctx.cluster.network_policy else []),
    ]


def _network_policy(ctx: VerifyContext) -> Check:
    from deploy.verify.checks.netpol import check_network_policy

    return Check("NetworkPolicy enforced", "kubernetes", partial(check_network_policy, ctx), None,
                 ctx.kubectl("get networkpolicy -A; kubectl -n kube-system get ds kube-network-policies"),
                 Deadline(timeout=ctx.cluster.pod_timeout * 4, interval=10, attempts=1))


def readyz(api: Any) -> tuple[int, str]:
    """Status and body of GET /readyz (an error status is returned, not raised)."""
    method, url, headers, _body, _post = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
    try:
        response = api.call_api(method, url, header_params=headers, _request_timeout=10)
    except ApiException as exc:
        return int(exc.status or 0), str(exc.body or exc.reason)
    return int(response.status), bytes(response.read() or b"").decode(errors="replace")


def check_readyz(ctx: VerifyContext) -> None:
    status, body = readyz(ctx.api())
    if status != 200 or body.strip() != "ok":
        raise CheckFailure(
            "API server /readyz",
            expected="HTTP 200 'ok'",
            seen=f"HTTP {status}: {body}",
            reproduce=ctx.kubectl("get --raw '/readyz?verbose'"),
        )


def expected_nodes(ctx: VerifyContext) -> dict[str, dict[str, str]]:
    """Node name -> labels it must carry, from the lab's Kubernetes nodes."""
    return {t.name: dict(t.labels) for t in ctx.targets if set(t.roles) & set(K8S_ROLES)}


def node_problems(nodes: list[Any], expected: dict[str, dict[str, str]]) -> list[str]:
    """Why the cluster's nodes differ from the plan, one line per node; empty when none."""
    by_name = {n.metadata.name: n for n in nodes}
    problems = [f"node {name}: not registered" for name in expected if name not in by_name]
    for name, node in by_name.items():
        if not connectivity._ready(node):
            problems.append(f"node {name}: not Ready ({_ready_message(node)})")
        labels = node.metadata.labels or {}
        for key, value in expected.get(name, {}).items():
            if labels.get(key) != value:
                problems.append(f"node {name}: label {key}={value} expected, has {labels.get(key)!r}")
    if not by_name:
        problems.append("no nodes registered")
    return problems


def _ready_message(node: Any) -> str:
    for cond in (node.status.conditions if node.status else None) or []:
        if cond.type == "Ready":
            return f"Ready={cond.status}: {cond.reason or ''} {cond.message or ''}".strip()
    return "no Ready condition"


def check_nodes(ctx: VerifyContext) -> None:
    nodes = pods.core(ctx.api()).list_node().items
    expected = expected_nodes(ctx)
    problems = node_problems(nodes, expected)
    if problems:
        raise CheckFailure(
            "Kubernetes nodes",
            expected=f"{', '.join(expected) or 'every node'} Ready with labels",
            seen="\n".join(problems),
            reproduce=ctx.kubectl("get nodes --show-labels"),
        )


def pod_problem(pod: Any) -> str | None:
    """Why a pod is unhealthy, or None: Running with every container ready, or Succeeded."""
    phase = pod.status.phase if pod.status else None
    if phase == "Succeeded":
        return None
    statuses = (pod.status.container_statuses if pod.status else None) or []
    bad = [s for s in statuses if not s.ready]
    if phase == "Running" and statuses and not bad:
        return None
    reasons = [_container_reason(s) for s in bad] or ["no container statuses"]
    return f"pod {pod.metadata.namespace}/{pod.metadata.name}: phase {phase}; " + "; ".join(reasons)


def _container_reason(status: Any) -> str:
    state = status.state
    waiting = state.waiting if state else None
    terminated = state.terminated if state else None
    detail = (waiting.reason if waiting else None) or (terminated.reason if terminated else None) or "not ready"
    return f"{status.name} {detail} (restarts {status.restart_count or 0})"


def check_system_pods(ctx: VerifyContext) -> None:
    items = pods.core(ctx.api()).list_namespaced_pod("kube-system").items
    items = [p for p in items if p.metadata.namespace in (None, "kube-system")]
    problems = [p for p in (pod_problem(pod) for pod in items) if p]
    if problems or not items:
        raise CheckFailure(
            "kube-system pods",
            expected="every pod Running and ready (or Succeeded)",
            seen="\n".join(problems) or "no pods in kube-system",
            reproduce=ctx.kubectl("-n kube-system get pods -o wide"),
        )


def dns_pod(ctx: VerifyContext) -> dict[str, Any]:
    command = ["sh", "-c", "nslookup kubernetes.default.svc.cluster.local; echo rc=$?"]
    return pods.pod_manifest(pods.unique("dns"), ctx.cluster.images.shell, command)


def check_dns(ctx: VerifyContext) -> None:
    api = ctx.api()
    service_ip = pods.core(api).read_namespaced_service("kubernetes", "default").spec.cluster_ip
    result = pods.run_pod(api, ctx.cluster.namespace, dns_pod(ctx), ctx.cluster.pod_timeout)
    if pods.exit_code(result.logs) != 0 or service_ip not in result.logs:
        raise CheckFailure(
            "cluster DNS",
            node=result.node,
            expected=f"kubernetes.default.svc.cluster.local resolves to {service_ip}",
            seen=f"pod {result.name} phase {result.phase}: {result.logs}",
            reproduce=ctx.kubectl("-n kube-system logs -l k8s-app=kube-dns"),
        )


def check_pod_to_pod(ctx: VerifyContext) -> None:
    api = ctx.api()
    server_node, client_node = connectivity.two_nodes(api)
    outcome = connectivity.run(api, ctx.cluster, connectivity.Experiment("pod2pod", server_node, client_node))
    connectivity.expect_success(
        outcome,
        f"pod-to-pod request from {client_node} to {server_node}",
        ctx.kubectl("get pods -o wide; kubectl get events"),
    )
