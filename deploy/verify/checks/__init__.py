"""Built-in checks, one module per layer; each module has ``checks(ctx) -> list[Check]``."""

from __future__ import annotations

from deploy.verify.context import Check, VerifyContext


def builtin_checks(ctx: VerifyContext) -> list[Check]:
    """Every built-in check of the layers selected in ``ctx.layers``, in layer order."""
    from deploy.verify.checks import cilium, gpu, istio, kubernetes, nodes, runtimeclass, runtimes

    modules = {
        "nodes": nodes,
        "runtimes": runtimes,
        "kubernetes": kubernetes,
        "cilium": cilium,
        "istio": istio,
        "runtimeclass": runtimeclass,
        "gpu": gpu,
    }
    found: list[Check] = []
    for layer, module in modules.items():
        if layer in ctx.layers:
            found.extend(module.checks(ctx))
    return found
