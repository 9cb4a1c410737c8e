"""The NVIDIA GPU operator: the ``gpu-operator`` chart of https://helm.ngc.nvidia.com/nvidia.

Values after the chart's documented ones (GPU operator v24.9 "Chart Customization Options",
"Time-Slicing GPUs", "GPU Operator with MIG", "Precompiled Driver Containers"):

    driver.enabled                 false when the image has the driver (preinstalled)
    driver.usePrecompiled/version  precompiled: the driver branch (e.g. 550); operator: an optional version
    mig.strategy                   none | single | mixed (handed to the device plugin and GFD)
    migManager.config              the ConfigMap of MIG layouts labdeploy writes from mig_profiles;
                                   GPU nodes get nvidia.com/mig.config=labdeploy
    devicePlugin.config            time-slicing: the ConfigMap labdeploy writes, its entry ``any``
    toolkit.enabled / toolkit.env  the container toolkit writes containerd's nvidia handler into
                                   /etc/containerd/config.toml and restarts it over the socket
    nfd.enabled                    Node Feature Discovery; off: labdeploy labels the GPU nodes with the
                                   label NFD would set (feature.node.kubernetes.io/pci-10de.present)

Only the nodes with ``gpus:`` get GPU labels; every other node of the cluster is labelled
``nvidia.com/gpu.deploy.operands=false`` so no operand lands there. The ConfigMaps are applied
before the release (the device plugin reads its config at its first start).
"""

from __future__ import annotations

from typing import Any

import yaml

from deploy.addons.typed import TypedAddon, cluster_nodes
from deploy.addons.values import merge
from deploy.model.resolve import ResolvedLab
from deploy.model.schema_addons import AddonSpec
from deploy.model.schema_kubernetes import GpuOperatorSpec

REPO = "https://helm.ngc.nvidia.com/nvidia"
NAMESPACE = "gpu-operator"
RELEASE = "gpu-operator"
TIMEOUT = 900
TIME_SLICING_CONFIG = "labdeploy-time-slicing"
MIG_CONFIG = "labdeploy-mig-parted"
MIG_LAYOUT = "labdeploy"
NFD_GPU_LABEL = "feature.node.kubernetes.io/pci-10de.present"
OPERANDS_LABEL = "nvidia.com/gpu.deploy.operands"
MIG_LABEL = "nvidia.com/mig.config"
CONTAINERD_ENV = [{"name": "CONTAINERD_CONFIG", "value": "/etc/containerd/config.toml"},
                  {"name": "CONTAINERD_SOCKET", "value": "/run/containerd/containerd.sock"},
                  {"name": "CONTAINERD_RUNTIME_CLASS", "value": "nvidia"}]


def values(spec: GpuOperatorSpec) -> dict[str, Any]:
    driver: dict[str, Any] = {"enabled": spec.driver != "preinstalled"}
    if spec.driver == "precompiled":
        driver |= {"usePrecompiled": True, "version": spec.driver_version}
    elif spec.driver == "operator" and spec.driver_version:
        driver["version"] = spec.driver_version
    out: dict[str, Any] = {"driver": driver, "mig": {"strategy": spec.mig_strategy}, "nfd": {"enabled": spec.nfd},
                           "toolkit": {"enabled": spec.toolkit, **({"env": CONTAINERD_ENV} if spec.toolkit else {})}}
    if spec.time_slicing:
        out["devicePlugin"] = {"config": {"name": TIME_SLICING_CONFIG, "default": "any"}}
    if spec.mig_profiles:
        out["migManager"] = {"config": {"name": MIG_CONFIG, "default": "all-disabled"}}
    return merge(out, spec.values)


def time_slicing(spec: GpuOperatorSpec) -> dict[str, Any]:
    assert spec.time_slicing is not None
    config = {"version": "v1", "flags": {"migStrategy": spec.mig_strategy},
              "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu",
                                                         "replicas": spec.time_slicing.replicas}]}}}
    return _config_map(TIME_SLICING_CONFIG, {"any": yaml.safe_dump(config, sort_keys=False)})


def mig_parted(spec: GpuOperatorSpec) -> dict[str, Any]:
    """mig-parted's config: every GPU of a labelled node split into the lab's profiles."""
    config = {"version": "v1", "mig-configs": {
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
        MIG_LAYOUT: [{"devices": "all", "mig-enabled": True, "mig-devices": dict(spec.mig_profiles)}]}}
    return _config_map(MIG_CONFIG, {"config.yaml": yaml.safe_dump(config, sort_keys=False)})


def _config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE},
            "data": data}


def node_labels(resolved: ResolvedLab, spec: GpuOperatorSpec) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name in cluster_nodes(resolved):
        if not resolved.nodes[name].gpus:
            out[name] = {OPERANDS_LABEL: "false"}
            continue
        labels = {OPERANDS_LABEL: "true"}
        labels |= {} if spec.nfd else {NFD_GPU_LABEL: "true"}
        labels |= {MIG_LABEL: MIG_LAYOUT} if spec.mig_profiles else {}
        out[name] = labels
    return out


def addon(resolved: ResolvedLab, spec: GpuOperatorSpec) -> TypedAddon:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    maps = [*([time_slicing(spec)] if spec.time_slicing else []), *([mig_parted(spec)] if spec.mig_profiles else [])]
    release = AddonSpec(name=RELEASE, chart="gpu-operator", version=spec.version, repo=REPO, namespace=NAMESPACE,
                        values=values(spec), timeout=TIMEOUT)
    return TypedAddon("gpu", (release,), before=(namespace, *maps) if maps else (),
                      node_labels=node_labels(resolved, spec))
