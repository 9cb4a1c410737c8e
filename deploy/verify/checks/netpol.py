"""NetworkPolicy enforced: a connection that succeeded is blocked by a deny policy and opened by an allow rule.

One server pod (busybox httpd) stays up through three client runs from another node (or the same one
on a one-node cluster):

    1. no policy                      the client gets the page (else the check says nothing of policy)
    2. deny all ingress to the server  the client must fail, retried until the enforcer has the policy
    3. allow ingress from the client's label   the client gets the page again

The policy is ``labdeploy-verify-*`` in the check namespace; the pods and the policy are always deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.retry import RetryTimeout, last_value, poll
from deploy.verify.checks import connectivity, pods
from deploy.verify.context import VerifyContext
from deploy.verify.retry import CheckFailure

SETTLE_S = 90.0  # how long the enforcer may take to program a policy change (each try is one client pod)


def policy(name: str, server: dict[str, str], allow_from: dict[str, str] | None) -> dict[str, Any]:
    """Ingress to pods labelled ``server``: none at all, or only from pods labelled ``allow_from``."""
    ingress = [{"from": [{"podSelector": {"matchLabels": allow_from}}]}] if allow_from else []
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": pods.PREFIX}},
            "spec": {"podSelector": {"matchLabels": server}, "policyTypes": ["Ingress"], "ingress": ingress}}


def check_network_policy(ctx: VerifyContext) -> None:
    api, ns, cluster = ctx.api(), ctx.cluster.namespace, ctx.cluster
    server_node: str | None = None
    client_node: str | None = None
    with contextlib.suppress(pods.CheckSkipped):  # one node: server and client share it, as the policy does not
        server_node, client_node = connectivity.two_nodes(api)
    name = pods.unique("netpol")
    server_labels, client_labels = {"app": name}, {"app": f"{name}-client"}
    manifest = pods.pod_manifest(f"{name}-server", cluster.images.shell, ["sh", "-c", connectivity.SERVER_SCRIPT],
                                 node=server_node, labels=server_labels, port=connectivity.HTTP_PORT,
                                 restart="Always")
    net: Any = client.NetworkingV1Api(api)
    try:
        started = pods.start_pod(api, ns, manifest, cluster.pod_timeout)
        url = f"http://{started.ip}:{connectivity.HTTP_PORT}/"

        def fetch() -> pods.PodRun:
            command = pods.http_client_command(url, tool=cluster.images.http_tool)
            pod = pods.pod_manifest(f"{pods.unique('netpol')}-client", cluster.images.curl, command,
                                    node=client_node, labels=client_labels)
            return pods.run_pod(api, ns, pod, cluster.pod_timeout)

        _expect(fetch, True, "before any policy", url, ctx)
        net.create_namespaced_network_policy(ns, policy(name, server_labels, None))
        _expect(fetch, False, f"with NetworkPolicy {name} denying all ingress", url, ctx)
        net.replace_namespaced_network_policy(name, ns, policy(name, server_labels, client_labels))
        _expect(fetch, True, f"with NetworkPolicy {name} allowing ingress from {client_labels}", url, ctx)
    finally:
        _delete_policy(net, ns, name)
        pods.delete(api, ns, "Pod", f"{name}-server")


def _answered(run: pods.PodRun) -> bool:
    return pods.exit_code(run.logs) == 0 and connectivity.SERVER_MARKER in run.logs


def _expect(fetch: Callable[[], pods.PodRun], answered: bool, when: str, url: str, ctx: VerifyContext) -> None:
    """Run the client until its outcome is ``answered`` (the enforcer programs policies asynchronously)."""
    try:
        poll(fetch, lambda run: _answered(run) == answered, describe=f"the client {when}",
             deadline_s=SETTLE_S, interval=2.0)
    except RetryTimeout as exc:
        last = last_value(exc)
        seen = last if isinstance(last, pods.PodRun) else None
        raise CheckFailure(
            f"NetworkPolicy enforcement ({when})",
            node=seen.node if seen else None,
            expected=f"{url} {'answers' if answered else 'does not answer'} {when}",
            seen=f"client {seen.name} rc={pods.exit_code(seen.logs)}: {seen.logs}" if seen else str(exc),
            reproduce=ctx.kubectl("get networkpolicy,pods -o wide; "
                                  "kubectl -n kube-system logs ds/kube-network-policies"),
        ) from None


def _delete_policy(net: Any, ns: str, name: str) -> None:
    try:
        net.delete_namespaced_network_policy(name, ns)
    except ApiException as exc:
        if exc.status != 404:
            raise
