"""GPU checks: nvidia.com/gpu allocatable on GPU nodes, a CUDA vector-add pod, MIG as the strategy says."""

from __future__ import annotations

from functools import partial
from typing import Any

from deploy.verify.checks import pods
from deploy.verify.context import Check, VerifyContext
from deploy.verify.retry import CheckFailure, Deadline

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
PRESENT_LABEL = "nvidia.com/gpu.present"
STRATEGY_LABEL = "nvidia.com/mig.strategy"


def checks(ctx: VerifyContext) -> list[Check]:
    found = [
        Check(
            "nvidia.com/gpu allocatable",
            "gpu",
            partial(check_allocatable, ctx),
            None,
            ctx.kubectl("get nodes -o custom-columns=NAME:.metadata.name,GPU:.status.allocatable"),
            Deadline(timeout=300, interval=10),
        ),
        Check(
            "CUDA vector-add pod",
            "gpu",
            partial(check_vector_add, ctx),
            None,
            ctx.kubectl("-n gpu-operator get pods"),
            Deadline(timeout=ctx.cluster.pod_timeout * 2, interval=10, attempts=2),
        ),
    ]
    if ctx.cluster.mig_strategy:
        found.append(
            Check(
                f"MIG devices match strategy {ctx.cluster.mig_strategy}",
                "gpu",
                partial(check_mig, ctx),
                None,
                ctx.kubectl("get nodes --show-labels"),
                Deadline(timeout=300, interval=10),
            )
        )
    return found


def gpu_nodes(ctx: VerifyContext, nodes: list[Any]) -> list[Any]:
    """Nodes that should have GPUs: the lab's GPU nodes, else those labelled nvidia.com/gpu.present."""
    planned = {t.name for t in ctx.targets if t.gpus > 0}
    if planned:
        return [n for n in nodes if n.metadata.name in planned]
    return [n for n in nodes if (n.metadata.labels or {}).get(PRESENT_LABEL) == "true"]


def allocatable(node: Any) -> dict[str, str]:
    return dict((node.status.allocatable if node.status else None) or {})


def check_allocatable(ctx: VerifyContext) -> None:
    nodes = gpu_nodes(ctx, pods.core(ctx.api()).list_node().items)
    problems = [
        f"node {n.metadata.name}: {GPU} allocatable {allocatable(n).get(GPU, '0')}"
        for n in nodes
        if int(allocatable(n).get(GPU, "0")) < 1
    ]
    if problems or not nodes:
        raise CheckFailure(
            "GPU allocatable",
            expected=f"{GPU} >= 1 on every GPU node",
            seen="\n".join(problems) or "no GPU nodes found",
            reproduce=ctx.kubectl("-n gpu-operator get pods; kubectl describe node | grep -A8 Allocatable"),
        )


def vector_add_pod(ctx: VerifyContext) -> dict[str, Any]:
    return pods.pod_manifest(
        pods.unique("cuda"), ctx.cluster.images.cuda, ["/cuda-samples/vectorAdd"], limits={GPU: "1"}
    )


def check_vector_add(ctx: VerifyContext) -> None:
    result = pods.run_pod(ctx.api(), ctx.cluster.namespace, vector_add_pod(ctx), ctx.cluster.pod_timeout)
    if result.phase != "Succeeded" or "Test PASSED" not in result.logs:
        raise CheckFailure(
            "CUDA vector-add",
            node=result.node,
            expected="phase Succeeded and 'Test PASSED'",
            seen=f"pod {result.name} phase {result.phase}: {result.logs}",
            reproduce=ctx.kubectl("-n gpu-operator logs -l app=nvidia-device-plugin-daemonset"),
        )


def mig_problem(node: Any, strategy: str) -> str | None:
    """Why ``node``'s advertised devices do not match the MIG strategy, or None."""
    labels = node.metadata.labels or {}
    resources = allocatable(node)
    migs = sorted(k for k in resources if k.startswith(MIG_PREFIX))
    name = node.metadata.name
    if strategy != "none" and labels.get(STRATEGY_LABEL) != strategy:
        return f"node {name}: label {STRATEGY_LABEL}={labels.get(STRATEGY_LABEL)!r}, expected {strategy!r}"
    if strategy == "mixed" and not migs:
        return f"node {name}: no {MIG_PREFIX}* resources under the mixed strategy"
    if strategy in ("single", "none") and migs:
        return f"node {name}: {', '.join(migs)} advertised under the {strategy} strategy"
    if strategy == "single" and int(resources.get(GPU, "0")) < 1:
        return f"node {name}: no {GPU} (MIG slices) advertised under the single strategy"
    return None


def check_mig(ctx: VerifyContext) -> None:
    strategy = ctx.cluster.mig_strategy or "none"
    nodes = gpu_nodes(ctx, pods.core(ctx.api()).list_node().items)
    problems = [p for p in (mig_problem(n, strategy) for n in nodes) if p]
    if problems or not nodes:
        raise CheckFailure(
            "MIG devices",
            expected=f"devices advertised per the {strategy} strategy",
            seen="\n".join(problems) or "no GPU nodes found",
            reproduce=ctx.kubectl("get nodes --show-labels | grep mig"),
        )
