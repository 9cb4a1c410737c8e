"""Istio checks: control plane ready, an mTLS request between enrolled pods, STRICT refuses plaintext."""

from __future__ import annotations

from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.verify.checks import connectivity
from deploy.verify.checks.workloads import daemonset_problem, deployment_problem
from deploy.verify.context import Check, VerifyContext
from deploy.verify.retry import CheckFailure, Deadline

NS = "istio-system"
QUIT_SIDECAR = "curl -fsS -X POST http://127.0.0.1:15020/quitquitquit >/dev/null 2>&1"


def enrolled_labels(mode: str) -> dict[str, str]:
    if mode == "ambient":
        return {"istio.io/dataplane-mode": "ambient"}
    return {"sidecar.istio.io/inject": "true"}


def outside_labels(mode: str) -> dict[str, str]:
    if mode == "ambient":
        return {"istio.io/dataplane-mode": "none"}
    return {"sidecar.istio.io/inject": "false"}


def checks(ctx: VerifyContext) -> list[Check]:
    slow = Deadline(timeout=ctx.cluster.pod_timeout * 2, interval=10, attempts=2)
    found = [
        Check(
            "control plane ready",
            "istio",
            partial(check_control_plane, ctx),
            None,
            ctx.kubectl("-n istio-system get deploy,ds"),
            Deadline(timeout=120, interval=5),
        ),
        Check(
            "mTLS request between enrolled pods",
            "istio",
            partial(check_mtls, ctx),
            None,
            ctx.kubectl("get pods -o wide -l app.kubernetes.io/managed-by=labdeploy-verify"),
            slow,
        ),
    ]
    if ctx.cluster.mtls_strict:
        found.append(
            Check(
                "STRICT refuses plaintext from outside the mesh",
                "istio",
                partial(check_strict, ctx),
                None,
                ctx.kubectl("get peerauthentication -A -o yaml"),
                slow,
            )
        )
    return found


def control_plane_problems(api: Any, mode: str) -> list[str]:
    found = [deployment_problem(api, NS, "istiod")]
    if mode == "ambient":
        found += [daemonset_problem(api, NS, "ztunnel"), daemonset_problem(api, NS, "istio-cni-node")]
    return [p for p in found if p]


def check_control_plane(ctx: VerifyContext) -> None:
    problems = control_plane_problems(ctx.api(), ctx.cluster.istio_mode)
    if problems:
        raise CheckFailure(
            "Istio control plane",
            expected=f"istiod ready ({ctx.cluster.istio_mode} mode)",
            seen="\n".join(problems),
            reproduce=ctx.kubectl("-n istio-system get deploy,ds,pods"),
        )


def _experiment(ctx: VerifyContext, kind: str, client_labels: dict[str, str], after: str) -> connectivity.Outcome:
    api = ctx.api()
    mode = ctx.cluster.istio_mode
    exp = connectivity.Experiment(
        kind,
        None,
        None,
        via_service=True,
        server_labels=enrolled_labels(mode),
        client_labels=client_labels,
        client_after=after,
        path="/cgi-bin/echo",
    )
    return connectivity.run(api, ctx.cluster, exp)


def check_mtls(ctx: VerifyContext) -> None:
    mode = ctx.cluster.istio_mode
    after = QUIT_SIDECAR if mode != "ambient" else ""
    outcome = _experiment(ctx, "mtls", enrolled_labels(mode), after)
    reproduce = ctx.kubectl("get pods -o wide; istioctl x describe pod <server-pod>")
    connectivity.expect_success(outcome, "request between two enrolled pods", reproduce)
    if mode != "ambient" and "spiffe://" not in outcome.client.logs:
        raise CheckFailure(
            "Istio mTLS",
            node=outcome.client.node,
            expected="the server's sidecar saw a client certificate (X-Forwarded-Client-Cert "
            "with a spiffe:// identity)",
            seen=outcome.client.logs,
            reproduce=reproduce,
        )


def strict_policy(api: Any) -> str | None:
    """The name of a mesh-wide STRICT PeerAuthentication, or None."""
    try:
        found: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "security.istio.io", "v1", NS, "peerauthentications"
        )
    except ApiException:
        return None
    for item in found.get("items", []):
        if ((item.get("spec") or {}).get("mtls") or {}).get("mode") == "STRICT" and not (
            (item.get("spec") or {}).get("selector")
        ):
            return str(item["metadata"]["name"])
    return None


def check_strict(ctx: VerifyContext) -> None:
    policy = strict_policy(ctx.api())
    if policy is None:
        raise CheckFailure(
            "Istio PeerAuthentication",
            expected="a mesh-wide mtls.mode STRICT in istio-system",
            seen="none",
            reproduce=ctx.kubectl("get peerauthentication -A"),
        )
    outcome = _experiment(ctx, "plaintext", outside_labels(ctx.cluster.istio_mode), "")
    if outcome.rc in (None, 0):
        raise CheckFailure(
            "STRICT mTLS",
            node=outcome.client.node,
            expected=f"a plaintext request to {outcome.url} from outside the mesh is refused",
            seen=f"client rc={outcome.rc}: {outcome.client.logs}",
            reproduce=ctx.kubectl(f"get peerauthentication -n {NS} {policy} -o yaml"),
        )
