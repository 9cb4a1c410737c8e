"""Recipes for the cluster's tools beyond Kubernetes itself: gVisor, CoreDNS and Helm.

Each is a ``GoBuild`` of a module of the project's own under ``go/<name>-<version>/`` whose go.mod
requires the upstream module at an exact version (``tool`` lines keep the requirement; go.sum is
committed), built static (``CGO_ENABLED=0``) and stamped as upstream's own build stamps it, so the
binary's version command names the pinned version.

- gVisor (``gvisor.dev/gvisor``): only its ``go`` branch builds with ``go build`` (it carries the
  generated ``*_state_autogen.go`` files that master leaves to Bazel) and it has no tags, so the pin is
  a pseudo-version of that branch. The proxy here refused v0.0.0-20250802011938-fc9c972fa636 and the
  other public pins tried (403 "not available"); ``@latest`` resolves to the go branch's
  v0.0.0-20260905035102-160fafc42237 (go 1.26.3, built with Go 1.26.8). That pseudo-version is the
  artifacts' version: it names the exact commit, and gVisor's own release names (release-YYYYMMDD.N)
  belong to Bazel builds from master that this is not.
- CoreDNS (``github.com/coredns/coredns``, main at the module root): its default plugin set
  (plugin.cfg, generated into core/plugin/zplugin.go, which the module ships) includes kubernetes.
- Helm 3 (``helm.sh/helm/v3/cmd/helm``), stamped as its Makefile does.
- kube-network-policies (``sigs.k8s.io/kube-network-policies/cmd``, v0.8.0: nftables through netlink
  and an nfqueue, so its image is the static binary alone, as upstream's distroless one); it has no
  version flag, so the build check is ``-h`` (Go's flag package prints the usage and exits 0).
"""

from __future__ import annotations

import hashlib

from deploy.bundle import ArtifactKey
from deploy.bundle.recipes import GoBuild

GVISOR_VERSION = "v0.0.0-20260905035102-160fafc42237"  # gvisor.dev/gvisor, go branch (see above)
GVISOR_COMMIT = GVISOR_VERSION.rpartition("-")[2]  # the pseudo-version's 12-hex commit prefix
GVISOR_BINARIES = ("runsc", "containerd-shim-runsc-v1")

# The versions with a committed go/coredns-<version>/ module whose build was run and checked.
# kubeadm 1.35 expects v1.13.1, 1.36 v1.14.2, 1.37 v1.14.6: all three are served (v1.13.1 and
# v1.14.2 were refused on an earlier day), so each minor gets exactly kubeadm's CoreDNS.
COREDNS_VERSIONS = ("v1.13.1", "v1.14.2", "v1.14.6")
# The release commits where the proxy's .info names them (Origin.Hash), abbreviated as CoreDNS's
# `git describe --always` does; for the others a deterministic stand-in (see coredns_commit).
COREDNS_COMMITS = {"v1.13.1": "1db4568", "v1.14.2": "dd1df4f"}

HELM_VERSION = "v3.22.0"
NETPOL_VERSION = "v0.8.0"  # sigs.k8s.io/kube-network-policies: NetworkPolicy for the bridge CNI
# Helm's Makefile stamps the Kubernetes version it assumes from its k8s.io/client-go (v0.37.0 -> 1.37).
HELM_KUBE_MINOR = {"v3.22.0": "37"}


def gvisor(version: str = GVISOR_VERSION) -> list[GoBuild]:
    """runsc and containerd-shim-runsc-v1 from go/gvisor-<version>/."""
    module = f"gvisor-{version}"
    commit = version.rpartition("-")[2]
    runsc = GoBuild(
        key=ArtifactKey("runsc", version),
        module=module,
        package="gvisor.dev/gvisor/runsc",
        ldflags=(f"-X gvisor.dev/gvisor/runsc/version.version={version}",),
    )
    # the shim's -v prints containerd's version package (else "2.1.5+unknown", the containerd it
    # links): stamp it with gVisor's version and commit so that it says what it is
    shim = GoBuild(
        key=ArtifactKey("containerd-shim-runsc-v1", version),
        module=module,
        package="gvisor.dev/gvisor/shim",
        ldflags=(
            f"-X github.com/containerd/containerd/v2/version.Version={version}",
            f"-X github.com/containerd/containerd/v2/version.Revision={commit}",
        ),
        version_args=("-v",),
    )
    return [runsc, shim]


def coredns_commit(version: str) -> str:
    """The 7-hex commit CoreDNS's -version prints: the release's where known, else sha1 of module@version."""
    known = COREDNS_COMMITS.get(version)
    return known or hashlib.sha1(f"github.com/coredns/coredns@{version}".encode()).hexdigest()[:7]


def coredns(version: str) -> GoBuild:
    """coredns from go/coredns-<version>/ with upstream's default plugins, stamped as its Makefile does."""
    return GoBuild(
        key=ArtifactKey("coredns", version),
        module=f"coredns-{version}",
        package="github.com/coredns/coredns",
        ldflags=(f"-X github.com/coredns/coredns/coremain.GitCommit={coredns_commit(version)}",),
        version_args=("-version",),
    )


def helm(version: str = HELM_VERSION) -> GoBuild:
    """helm from go/helm-<version>/, stamped as Helm's Makefile stamps a release (no metadata, clean tree)."""
    kube_minor = HELM_KUBE_MINOR[version]
    stamps = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    stamps.append("-X helm.sh/helm/v3/internal/version.gitTreeState=clean")
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        stamps += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={kube_minor}"]
    return GoBuild(
        key=ArtifactKey("helm", version),
        module=f"helm-{version}",
        package="helm.sh/helm/v3/cmd/helm",
        ldflags=tuple(stamps),
        version_args=("version", "--short"),
    )


def network_policies(version: str = NETPOL_VERSION) -> GoBuild:
    """kube-network-policies from go/kube-network-policies-<version>/ (static, no stamps upstream has)."""
    return GoBuild(
        key=ArtifactKey("kube-network-policies", version),
        module=f"kube-network-policies-{version}",
        package="sigs.k8s.io/kube-network-policies/cmd",
        version_args=("-h",),
    )


def buildable(recipe: GoBuild) -> bool:
    """Whether the recipe's module is committed (its go.sum exists)."""
    return (recipe.module_dir / "go.sum").is_file()
