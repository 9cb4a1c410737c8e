"""Which runtime files the bundle supplies to a lab's nodes (read by validate and by configure).

Kept apart from deploy.inputs so that ``validate`` does not import the verify layer.
"""

from __future__ import annotations

from deploy.model.resolve import ResolvedLab


def supplied_files(resolved: ResolvedLab) -> frozenset[str]:
    """With ``bundle.source`` build or offline, every node file the bundle's catalog makes for the lab:
    runtime files, containerd 2 and the Kubernetes node binaries (``auto`` and ``upstream`` labs keep
    mirrors.files, Debian's containerd and pkgs.k8s.io for them)."""
    if resolved.lab.bundle.source not in ("build", "offline"):
        return frozenset()
    from deploy.bundle.catalog import everything
    from deploy.configure.catalog import bundle_node_files, needed_files
    from deploy.errors import PlanError

    k8s = resolved.lab.kubernetes
    try:
        made = {key.name for key in everything(k8s.version if k8s else None, list(resolved.runtimes))}
    except PlanError:  # a minor or runtime the catalog lacks: validate reports it where it is written
        return frozenset()
    containerd = any({"containerd", "k8s-node"} & set(node.roles) for node in resolved.nodes.values())
    wanted = [item for _, item in needed_files(resolved.runtimes, {})]
    wanted += bundle_node_files(resolved.runtimes, containerd=containerd, kubernetes=k8s is not None)
    return frozenset(item.name for item in wanted if item.name in made)
