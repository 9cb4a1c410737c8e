"""NetworkPolicy where the CNI enforces none (the bridge CNI): kube-network-policies as a DaemonSet.

    manifests(image, pull)     its ServiceAccount, ClusterRole (pods, namespaces, networkpolicies: list
                               and watch), binding and DaemonSet in kube-system
    OBJECTS                    (apiVersion, kind, name, namespace) of each, for removal when the lab
                               turns network_policy off
    KERNEL_MODULES             what its nftables rules and nfqueue need loaded on each node

Its pods run on the host network, privileged with NET_ADMIN: they program nftables rules that send
new connections to pods with policies to an nfqueue, and answer each verdict from the policies
(sigs.k8s.io/kube-network-policies v0.8.0, install.yaml of that release). NRI (the runtime's pod
events) is off: labdeploy's containerd config does not enable it, and the informers alone suffice.
The image is the bundle's (``localhost/labdeploy/kube-network-policies``, imported and pinned on each
node, never pulled) or upstream's registry.k8s.io image for labs without a bundle.
"""

from __future__ import annotations

from typing import Any

from deploy.bundle.images import LOCAL
from deploy.bundle.recipes_tools import NETPOL_VERSION

NAME = "kube-network-policies"
NAMESPACE = "kube-system"
QUEUE_ID = 98
UPSTREAM_IMAGE = f"registry.k8s.io/networking/kube-network-policies:{NETPOL_VERSION}"
BUNDLE_IMAGE = f"{LOCAL}/kube-network-policies:{NETPOL_VERSION}"
KERNEL_MODULES = ("nfnetlink_queue", "nft_queue", "nf_conntrack")
LABELS = {"app": NAME, "k8s-app": NAME, "app.kubernetes.io/managed-by": "labdeploy"}
OBJECTS = (("apps/v1", "DaemonSet", NAME, NAMESPACE),
           ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", NAME, None),
           ("rbac.authorization.k8s.io/v1", "ClusterRole", NAME, None),
           ("v1", "ServiceAccount", NAME, NAMESPACE))


def image(bundled: bool) -> tuple[str, str]:
    """The image reference and its pull policy."""
    return (BUNDLE_IMAGE, "Never") if bundled else (UPSTREAM_IMAGE, "IfNotPresent")


def manifests(ref: str, pull: str) -> list[dict[str, Any]]:
    meta = {"name": NAME, "labels": dict(LABELS)}
    rules = [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]}]
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**meta, "namespace": NAMESPACE}}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
               "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]}
    return [account, role, binding, _daemonset(ref, pull)]


def _daemonset(ref: str, pull: str) -> dict[str, Any]:
    container = {
        "name": NAME, "image": ref, "imagePullPolicy": pull,
        "args": ["--hostname-override=$(MY_NODE_NAME)", "--v=2", f"--nfqueue-id={QUEUE_ID}", "--disable-nri",
                 "--metrics-bind-address=127.0.0.1:9080"],
        "env": [{"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}},
        "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
        "volumeMounts": [{"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True}],
    }
    spec = {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet", "serviceAccountName": NAME,
            "priorityClassName": "system-node-critical", "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"operator": "Exists"}], "containers": [container],
            "volumes": [{"name": "lib-modules", "hostPath": {"path": "/lib/modules"}}]}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
            "spec": {"selector": {"matchLabels": {"app": NAME}},
                     "template": {"metadata": {"labels": dict(LABELS)}, "spec": spec}}}


def modprobe() -> str:
    """The shell that loads the kernel modules on a node (each once; loaded ones are kept)."""
    return "modprobe -a " + " ".join(KERNEL_MODULES)
