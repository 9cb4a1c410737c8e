"""RuntimeClasses (node.k8s.io/v1) for a lab's runtimes, and the node labels that place them.

    manifests(runtimes)               one RuntimeClass per runtime: name = the lab's runtime name,
                                      handler = the containerd handler the configure step renders
    node_labels(runtimes)             kubelet node-labels for a node whose containerd has them
    stale(existing_names, wanted)     managed RuntimeClasses to delete once a runtime left the lab

The one table: a RuntimeClass's handler must equal the containerd handler name, which
:data:`deploy.configure.catalog.RUNTIMES` holds (containerd's config is rendered from it, and
``deploy.verify.checks.runtimeclass.SANDBOXES`` is built from it too). That pure module sits below
both the cluster stage and verify, so neither imports the other. The RuntimeClass's name is the
lab's runtime name (``gvisor`` -> handler ``runsc``), which is what the verify checks look up.

Each RuntimeClass carries ``scheduling.nodeSelector: {runtime.labdeploy.io/<name>: "true"}``, so
its pods land only on nodes that have the handler; the kubeadm renderer puts :func:`node_labels`
of the runtimes a node's containerd really has (its rendered handlers) on kubelet's
``node-labels``. VM-based runtimes (Kata) declare ``overhead.podFixed``: kata-deploy's own
RuntimeClass for kata-qemu (tools/packaging/kata-deploy/runtimeclasses/kata-qemu.yaml) uses
memory 160Mi and cpu 250m.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deploy.configure.catalog import RUNTIMES
from deploy.errors import PlanError

API_VERSION = "node.k8s.io/v1"
LABEL_PREFIX = "runtime.labdeploy.io/"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_LABELS = {MANAGED_BY: "labdeploy"}
MANAGED_SELECTOR = f"{MANAGED_BY}=labdeploy"
# Per-pod cost of the sandbox itself, added to the pod's requests by the scheduler.
OVERHEAD: dict[str, dict[str, str]] = {"kata": {"memory": "160Mi", "cpu": "250m"}}


def handler_of(runtime: str) -> str:
    """The containerd handler of ``runtime``; PlanError names the runtimes that have one."""
    spec = RUNTIMES.get(runtime)
    if spec is None or spec.handler is None:
        known = ", ".join(sorted(name for name, s in RUNTIMES.items() if s.handler is not None))
        raise PlanError(f"no RuntimeClass for runtime {runtime!r}; runtimes with a handler: {known}")
    return spec.handler.name


def node_label(runtime: str) -> str:
    return f"{LABEL_PREFIX}{runtime}"


def node_labels(runtimes: Iterable[str]) -> dict[str, str]:
    """``{runtime.labdeploy.io/<name>: "true"}`` for each runtime (checked to have a handler)."""
    return {node_label(name): "true" for name in runtimes if handler_of(name)}


def manifest(runtime: str) -> dict[str, Any]:
    """The RuntimeClass of one runtime."""
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "RuntimeClass",
        "metadata": {"name": runtime, "labels": dict(MANAGED_LABELS)},
        "handler": handler_of(runtime),
        "scheduling": {"nodeSelector": {node_label(runtime): "true"}},
    }
    if runtime in OVERHEAD:
        obj["overhead"] = {"podFixed": dict(OVERHEAD[runtime])}
    return obj


def manifests(runtimes: Iterable[str]) -> list[dict[str, Any]]:
    """One RuntimeClass per distinct runtime, in the lab's order."""
    return [manifest(name) for name in dict.fromkeys(runtimes)]


def stale(existing_names: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """Managed RuntimeClasses (``existing_names``, listed with :data:`MANAGED_SELECTOR`) that no
    runtime in ``wanted`` (the lab's runtimes) asks for any more, sorted."""
    keep = set(wanted)
    return sorted(set(existing_names) - keep)
