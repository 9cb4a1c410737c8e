"""Cilium checks: agent and operator healthy, cross-node connectivity, ClusterIP routing with KPR."""

from __future__ import annotations

from functools import partial

from kubernetes.client.exceptions import ApiException

from deploy.verify.checks import connectivity, pods
from deploy.verify.checks.workloads import daemonset_problem, deployment_problem
from deploy.verify.context import Check, VerifyContext
from deploy.verify.retry import CheckFailure, Deadline

NS = "kube-system"


def checks(ctx: VerifyContext) -> list[Check]:
    slow = Deadline(timeout=ctx.cluster.pod_timeout * 2, interval=10, attempts=2)
    found = [
        Check(
            "agent and operator healthy",
            "cilium",
            partial(check_health, ctx),
            None,
            ctx.kubectl("-n kube-system get ds/cilium deploy/cilium-operator"),
            Deadline(timeout=120, interval=5),
        ),
        Check(
            "cross-node connectivity",
            "cilium",
            partial(check_cross_node, ctx),
            None,
            ctx.kubectl("-n kube-system exec ds/cilium -- cilium-health status"),
            slow,
        ),
    ]
    if ctx.cluster.kube_proxy_replacement:
        found.append(
            Check(
                "ClusterIP routing with kube-proxy replacement",
                "cilium",
                partial(check_kpr_service, ctx),
                None,
                ctx.kubectl("-n kube-system exec ds/cilium -- cilium-dbg service list"),
                slow,
            )
        )
    return found


def check_health(ctx: VerifyContext) -> None:
    api = ctx.api()
    problems = [p for p in (daemonset_problem(api, NS, "cilium"), deployment_problem(api, NS, "cilium-operator")) if p]
    agents = [
        p
        for p in pods.core(api).list_namespaced_pod(NS, label_selector="k8s-app=cilium").items
        if (p.metadata.labels or {}).get("k8s-app") == "cilium"
    ]
    from deploy.verify.checks.kubernetes import pod_problem

    problems += [p for p in (pod_problem(pod) for pod in agents) if p]
    if problems:
        raise CheckFailure(
            "Cilium agent and operator",
            expected="DaemonSet cilium and Deployment cilium-operator fully ready",
            seen="\n".join(problems),
            reproduce=ctx.kubectl("-n kube-system exec ds/cilium -- cilium-dbg status --verbose"),
        )


def check_cross_node(ctx: VerifyContext) -> None:
    api = ctx.api()
    a, b = connectivity.two_nodes(api)
    outcome = connectivity.run(api, ctx.cluster, connectivity.Experiment("cilium-xnode", a, b))
    connectivity.expect_success(
        outcome,
        f"Cilium pod-to-pod from {b} to {a}",
        ctx.kubectl("-n kube-system exec ds/cilium -- cilium-health status"),
    )


def kpr_problem(api: object) -> str | None:
    """Why kube-proxy replacement is not in effect: cilium-config says so, and no kube-proxy runs."""
    try:
        data = pods.core(api).read_namespaced_config_map("cilium-config", NS).data or {}
    except ApiException as exc:
        return f"ConfigMap kube-system/cilium-config: {exc.status} {exc.reason}"
    mode = data.get("kube-proxy-replacement", "")
    if mode not in ("true", "strict"):
        return f"ConfigMap kube-system/cilium-config: kube-proxy-replacement={mode!r}"
    leftovers = [
        p.metadata.name
        for p in pods.core(api).list_namespaced_pod(NS).items
        if (p.metadata.labels or {}).get("k8s-app") == "kube-proxy"
    ]
    return f"kube-proxy still runs: {', '.join(leftovers)}" if leftovers else None


def check_kpr_service(ctx: VerifyContext) -> None:
    api = ctx.api()
    problem = kpr_problem(api)
    if problem:
        raise CheckFailure(
            "Cilium kube-proxy replacement",
            expected="kube-proxy-replacement=true, no kube-proxy",
            seen=problem,
            reproduce=ctx.kubectl("-n kube-system get cm cilium-config -o yaml"),
        )
    a, b = connectivity.two_nodes(api)
    exp = connectivity.Experiment("cilium-kpr", a, b, via_service=True)
    outcome = connectivity.run(api, ctx.cluster, exp)
    connectivity.expect_success(
        outcome,
        f"request from {b} through a ClusterIP service to a pod on {a}",
        ctx.kubectl("-n kube-system exec ds/cilium -- cilium-dbg service list"),
    )
