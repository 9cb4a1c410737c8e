"""RuntimeClass checks: one pod per runtime proves its sandbox.

gVisor reports the gVisor kernel, Kata runs a guest kernel other than the node's, Wasm prints its
module's output, runc/crun run a plain container.

Before a VM-based runtime's pod (Kata) the nodes its RuntimeClass schedules onto (its
``scheduling.nodeSelector``, read from the API; every Kubernetes node when it has none) are probed
over SSH (:mod:`deploy.verify.vmsandbox`): a node without usable KVM fails the check at once with
"this host cannot run VM sandboxes: ...", instead of a pod that never starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.configure.catalog import RUNTIMES
from deploy.verify import vmsandbox
from deploy.verify.checks import pods
from deploy.verify.checks.kubernetes import K8S_ROLES
from deploy.verify.context import Check, VerifyContext
from deploy.verify.model import VerifyTarget
from deploy.verify.retry import CheckFailure, Deadline

MARKER = "labdeploy-runtime-ok"
VM_RUNTIMES = ("kata",)  # runtimes whose sandbox is a KVM guest


@dataclass(frozen=True)
class Sandbox:
    runtime_class: str
    handler: str


def _sandbox(runtime: str) -> Sandbox:
    """RuntimeClass ``runtime`` with the containerd handler the catalog renders (one table for
    containerd's config, deploy.cluster.runtimeclasses and these checks)."""
    handler = RUNTIMES[runtime].handler
    if handler is None:
        raise KeyError(f"runtime {runtime!r} has no containerd handler")
    return Sandbox(runtime, handler.name)


SANDBOXES = {name: _sandbox(name) for name in ("runc", "crun", "gvisor", "kata", "wasmedge")}


def checks(ctx: VerifyContext) -> list[Check]:
    deadline = Deadline(timeout=ctx.cluster.pod_timeout * 2, interval=10, attempts=2)
    return [
        Check(
            f"{runtime} sandbox",
            "runtimeclass",
            partial(check_runtime, ctx, runtime),
            None,
            ctx.kubectl(
                f"get runtimeclass {SANDBOXES[runtime].runtime_class if runtime in SANDBOXES else runtime}"
                " -o yaml; kubectl get events"
            ),
            deadline,
        )
        for runtime in ctx.runtimes
    ]


def proof_pod(ctx: VerifyContext, runtime: str, node: str | None) -> dict[str, Any]:
    """The pod that proves ``runtime``: what it runs depends on the sandbox."""
    images = ctx.cluster.images
    rc = SANDBOXES[runtime].runtime_class
    name = pods.unique(f"rc-{runtime}")
    if runtime == "wasmedge":
        command = ["/wasi-demo-app.wasm", "echo", MARKER] if images.wasm_command is None else list(images.wasm_command)
        return pods.pod_manifest(name, images.wasm, command, runtime_class=rc, node=node,
                                 annotations=dict(images.wasm_annotations) or None)
    script = {"gvisor": "dmesg; uname -a", "kata": "echo kernel=$(uname -r)"}.get(runtime, "true")
    return pods.pod_manifest(name, images.shell, ["sh", "-c", f"{script}; echo {MARKER}"], runtime_class=rc, node=node)


def proof_problem(runtime: str, logs: str, node_kernel: str | None, wasm_prints: str | None = None) -> str | None:
    """Why the pod's output does not prove the sandbox, or None (``wasm_prints``: what a module that is not
    told the marker prints)."""
    marker = wasm_prints if runtime == "wasmedge" and wasm_prints else MARKER
    if marker not in logs:
        return f"no {marker!r} in the pod's output"
    if runtime == "gvisor" and "gvisor" not in logs.lower():
        return "dmesg/uname show the host kernel, not gVisor's (is the runsc handler really gVisor?)"
    if runtime == "kata":
        guest = next((line.split("=", 1)[1].strip() for line in logs.splitlines() if line.startswith("kernel=")), "")
        if not guest or guest == node_kernel:
            return f"guest kernel {guest!r} equals the node's {node_kernel!r}: the pod is not in a VM"
    return None


def check_runtime(ctx: VerifyContext, runtime: str) -> None:
    if runtime not in SANDBOXES:
        raise CheckFailure(f"runtime {runtime!r}", expected=f"one of {', '.join(SANDBOXES)}", seen=runtime)
    api = ctx.api()
    found = _require_runtime_class(ctx, runtime)
    if runtime in VM_RUNTIMES:
        vmsandbox.require(ctx, sandbox_targets(ctx, api, found), runtime)
    result = pods.run_pod(api, ctx.cluster.namespace, proof_pod(ctx, runtime, None), ctx.cluster.pod_timeout)
    kernel = _node_kernel(api, result.node)
    problem = (f"pod phase {result.phase}" if result.phase != "Succeeded" else None) or proof_problem(
        runtime, result.logs, kernel, ctx.cluster.images.wasm_prints
    )
    if problem:
        raise CheckFailure(
            f"{runtime} sandbox",
            node=result.node,
            expected=_promise(runtime),
            seen=f"{problem}; pod {result.name} output: {result.logs}",
            reproduce=ctx.kubectl(f"get runtimeclass {SANDBOXES[runtime].runtime_class} -o yaml"),
        )


def _promise(runtime: str) -> str:
    return {
        "gvisor": "dmesg reports gVisor",
        "kata": "a guest kernel other than the node's",
        "wasmedge": f"the Wasm module prints {MARKER!r}",
    }.get(runtime, f"the container prints {MARKER!r}")


def _require_runtime_class(ctx: VerifyContext, runtime: str) -> Any:
    want = SANDBOXES[runtime]
    try:
        found: Any = client.NodeV1Api(ctx.api()).read_runtime_class(want.runtime_class)
    except ApiException as exc:
        raise CheckFailure(
            f"RuntimeClass {want.runtime_class}",
            expected=f"handler {want.handler}",
            seen=f"{exc.status} {exc.reason}",
            reproduce=ctx.kubectl("get runtimeclass"),
        ) from None
    if found.handler != want.handler:
        raise CheckFailure(
            f"RuntimeClass {want.runtime_class}",
            expected=f"handler {want.handler}",
            seen=f"handler {found.handler}",
            reproduce=ctx.kubectl("get runtimeclass -o wide"),
        )
    return found


def node_selector(runtime_class: Any) -> dict[str, str]:
    """The RuntimeClass's ``scheduling.nodeSelector`` (empty: its pods may land on any node)."""
    scheduling = getattr(runtime_class, "scheduling", None)
    return dict(getattr(scheduling, "node_selector", None) or {})


def sandbox_targets(ctx: VerifyContext, api: Any, runtime_class: Any) -> list[VerifyTarget]:
    """The verify targets the RuntimeClass can place pods on: the Kubernetes nodes that match its
    nodeSelector (every Kubernetes node when it has none)."""
    k8s = [t for t in ctx.targets if set(t.roles) & set(K8S_ROLES)] or list(ctx.targets)
    selector = node_selector(runtime_class)
    if not selector:
        return k8s
    text = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    listed = pods.core(api).list_node(label_selector=text).items  # matched again: the labels decide
    names = {n.metadata.name for n in listed if selector.items() <= (n.metadata.labels or {}).items()}
    chosen = [t for t in k8s if t.name in names or t.hostname in names]
    if not chosen:
        raise CheckFailure(
            f"nodes for RuntimeClass {runtime_class.metadata.name}",
            expected=f"a lab node labelled {text} (its handler is configured there)",
            seen=f"labelled: {', '.join(sorted(names)) or 'none'}; lab nodes: {', '.join(t.name for t in k8s)}",
            reproduce=ctx.kubectl(f"get nodes -l {text}"),
        )
    return chosen


def _node_kernel(api: Any, node: str | None) -> str | None:
    if not node:
        return None
    info = pods.core(api).read_node(node).status.node_info
    return str(info.kernel_version) if info else None
