"""What a Kubernetes lab needs, per supported minor, and which of it can be built today.

``VERSIONS`` pins one served patch release per minor and the versions of its companions. Where
kubeadm expects a version the Go module proxy does not serve (etcd 3.6.6 for 1.35), ``kubeadm_*``
keeps kubeadm's value and the artifact takes the nearest served release of the same minor; the
image is tagged as kubeadm expects and its label ``org.opencontainers.image.version`` says what is
inside (deploy.bundle.images). CoreDNS is kubeadm's exact version for each minor.

``needs`` returns only recipes that really build (a go/ module exists and the binary's build from
it was run and its version checked: ``Minor.built``);
``planned`` lists the rest as keys, so a plan can say what is missing instead of pretending.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from deploy.bundle import ArtifactKey
from deploy.bundle.recipes import C_SOURCES, GO_MODULES, CBuild, GoBuild, Recipe
from deploy.bundle.recipes_tools import GVISOR_VERSION
from deploy.errors import PlanError

PAUSE_VERSION = "1.0.0"
CRICTL_VERSION = "v1.37.0"  # v1.35.0 is not served; crictl speaks CRI v1 to older kubelets' runtimes
KUBE_BINARIES = ("kubeadm", "kubelet", "kubectl")
KUBE_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
ALL_KUBE = (*KUBE_BINARIES, *KUBE_CONTROL_PLANE)
RUNTIME_ARTIFACTS = {
    "runc": ("runc",),
    "containerd": ("containerd", "containerd-shim-runc-v2"),
    "gvisor": ("runsc", "containerd-shim-runsc-v1"),
    "wasmedge": ("crun-wasmedge",),  # crun built with WasmEdge (deploy.bundle.recipes_wasm): a runc-type handler
    "spin": ("containerd-shim-spin-v2",),
    "kata": ("kata-runtime", "containerd-shim-kata-v2"),
    "crun": (),  # Debian's crun package on the nodes; nothing for the bundle
}
BUILD_DATE = "1970-01-01T00:00:00Z"  # fixed so that builds are reproducible


@dataclass(frozen=True)
class Minor:
    """Pinned versions for one Kubernetes minor (all served by the Go module proxy)."""

    kubernetes: str
    etcd: str
    coredns: str
    kubeadm_etcd: str
    kubeadm_coredns: str
    pause_image: str
    built: tuple[str, ...] = ()  # the KUBE_BINARIES whose build from go/kubernetes-<minor>/ was run and checked
    crictl: str = CRICTL_VERSION
    cni_plugins: str = "v1.10.0"
    containerd: str = "v2.4.2"
    runc: str = "v1.4.4"
    helm: str = "v3.22.0"

    @property
    def minor(self) -> str:
        return ".".join(self.kubernetes.lstrip("v").split(".")[:2])

    @property
    def module_dir(self) -> str:
        return f"kubernetes-{self.minor}"


# kubeadm_* and pause_image: cmd/kubeadm/app/constants of each release (DefaultEtcdVersion,
# CoreDNSVersion, PauseVersion); etcd/coredns: the nearest release the proxy serves.
VERSIONS: dict[str, Minor] = {
    "1.35": Minor("v1.35.4", "v3.6.8", "v1.13.1", "3.6.6-0", "v1.13.1", pause_image="3.10.1", built=ALL_KUBE),
    "1.36": Minor("v1.36.3", "v3.6.8", "v1.14.2", "3.6.8-0", "v1.14.2", pause_image="3.10.2", built=ALL_KUBE),
    "1.37": Minor("v1.37.2", "v3.7.0", "v1.14.6", "3.7.0-0", "v1.14.6", pause_image="3.10.2", built=ALL_KUBE),
}
DEFAULT_MINOR = "1.36"


def minor(kubernetes: str) -> Minor:
    """The pinned versions for ``1.36``, ``v1.36`` or ``v1.36.3`` (the patch must match the pin)."""
    wanted = kubernetes.lstrip("v")
    key = ".".join(wanted.split(".")[:2])
    found = VERSIONS.get(key)
    if found is None or (wanted.count(".") == 2 and found.kubernetes != f"v{wanted}"):
        pinned = ", ".join(m.kubernetes for m in VERSIONS.values())
        raise PlanError(f"Kubernetes {kubernetes} is not in the bundle's catalog", hint=f"use one of {pinned}")
    return found


def git_commit(version: str) -> str:
    """A deterministic 40-hex stand-in for the release commit: sha1 of "k8s.io/kubernetes@<version>".

    The proxy's .info carries no VCS origin, so the real commit is not known offline.
    """
    return hashlib.sha1(f"k8s.io/kubernetes@{version}".encode()).hexdigest()


def kube_stamps(version: str) -> tuple[str, ...]:
    """The ``-X`` flags upstream's hack/lib/version.sh sets, for both version packages."""
    major, minor_, _ = version.lstrip("v").split(".")
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor_,
        "gitCommit": git_commit(version),
        "gitTreeState": "clean",
        "buildDate": BUILD_DATE,
    }
    packages = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    return tuple(f"-X {pkg}.{name}={value}" for pkg in packages for name, value in values.items())


def pause() -> CBuild:
    return CBuild(
        key=ArtifactKey("pause", PAUSE_VERSION),
        source=C_SOURCES / "pause.c",
        defines=(f'PAUSE_VERSION="labdeploy-pause {PAUSE_VERSION}"',),
        version_args=("-v",),
    )


def crictl() -> GoBuild:
    return GoBuild(
        key=ArtifactKey("crictl", CRICTL_VERSION),
        module="crictl",
        package="sigs.k8s.io/cri-tools/cmd/crictl",
        ldflags=(f"-X sigs.k8s.io/cri-tools/pkg/version.Version={CRICTL_VERSION}",),
    )


def kube(name: str, pins: Minor) -> GoBuild:
    """One Kubernetes binary of one minor (kubeadm, kubelet, kubectl, control plane), static as upstream."""
    version_args = {"kubeadm": ("version", "-o", "short"), "kubectl": ("version", "--client")}
    return GoBuild(
        key=ArtifactKey(name, pins.kubernetes),
        module=pins.module_dir,
        package=f"k8s.io/kubernetes/cmd/{name}",
        ldflags=kube_stamps(pins.kubernetes),
        version_args=version_args.get(name, ("--version",)),
    )


def etcd(version: str) -> GoBuild:
    """etcd from our own main around etcdmain.Main (go/etcd-<version>/), stamped as etcd's ./build does."""
    sha = hashlib.sha1(f"go.etcd.io/etcd/server/v3@{version}".encode()).hexdigest()[:7]
    return GoBuild(
        key=ArtifactKey("etcd", version),
        module=f"etcd-{version}",
        package=".",
        ldflags=(f"-X go.etcd.io/etcd/api/v3/version.GitSHA={sha}",),
    )


def _etcd_buildable(version: str) -> bool:
    return (GO_MODULES / f"etcd-{version}" / "go.sum").is_file()


def _kube_buildable(pins: Minor) -> bool:
    return (GO_MODULES / pins.module_dir / "go.sum").is_file()


def needs(kubernetes: str | None, runtimes: list[str]) -> list[Recipe]:
    """The recipes that build today for a lab (pause and crictl always; Kubernetes if its module exists)."""
    for runtime in runtimes:
        _runtime_names(runtime)  # an unknown runtime is a PlanError, not silently nothing
    recipes: list[Recipe] = [pause(), crictl()]
    if kubernetes is not None:
        pins = minor(kubernetes)
        if _kube_buildable(pins):
            recipes += [kube(name, pins) for name in ALL_KUBE if name in pins.built]
        if _etcd_buildable(pins.etcd):
            recipes.append(etcd(pins.etcd))
    if kubernetes is not None:
        recipes += _cluster_tools(pins)
    chosen = dict.fromkeys([*(["containerd", "runc"] if kubernetes is not None else []), *runtimes])
    for runtime in chosen:
        recipes += _runtime_recipes(runtime, minor(kubernetes or DEFAULT_MINOR))
    if "wasmedge" in runtimes:
        from deploy.bundle.recipes_wasm import crun_wasmedge  # late: it imports the images module, which imports us

        recipes.append(crun_wasmedge())
    return recipes


def _cluster_tools(pins: Minor) -> list[Recipe]:
    """What every cluster needs besides Kubernetes itself: the CNI plugins (and CoreDNS, Helm when built)."""
    from deploy.bundle import recipes_runtimes, recipes_tools

    return [*recipes_runtimes.cni_plugins(pins.cni_plugins), recipes_tools.coredns(pins.coredns),
            recipes_tools.helm(pins.helm)]


def _runtime_recipes(runtime: str, pins: Minor) -> list[Recipe]:
    from deploy.bundle import recipes_runtimes

    if runtime == "containerd":
        return recipes_runtimes.containerd(pins.containerd)
    if runtime == "runc":
        return recipes_runtimes.runc(pins.runc)
    if runtime == "gvisor":
        from deploy.bundle import recipes_tools

        return list(recipes_tools.gvisor(GVISOR_VERSION))
    return []


def everything(kubernetes: str | None, runtimes: list[str]) -> list[ArtifactKey]:
    """Every artifact the lab needs, buildable or not."""
    keys = [ArtifactKey("pause", PAUSE_VERSION), ArtifactKey("crictl", CRICTL_VERSION)]
    if kubernetes is not None:
        pins = minor(kubernetes)
        keys += [ArtifactKey(name, pins.kubernetes) for name in ALL_KUBE]
        keys += [ArtifactKey("etcd", pins.etcd), ArtifactKey("coredns", pins.coredns)]
        keys += [ArtifactKey("cni-plugins", pins.cni_plugins), ArtifactKey("helm", pins.helm)]
    base = ["containerd", "runc"] if kubernetes is not None else []
    for runtime in dict.fromkeys([*base, *runtimes]):
        keys += [ArtifactKey(name, _runtime_version(runtime, kubernetes)) for name in _runtime_names(runtime)]
    return list(dict.fromkeys(keys))


def planned(kubernetes: str | None, runtimes: list[str]) -> list[ArtifactKey]:
    """The artifacts the lab needs that no recipe builds yet (so a plan can list them)."""
    have = {recipe.key for recipe in needs(kubernetes, runtimes)}
    return [key for key in everything(kubernetes, runtimes) if key not in have]


def _runtime_names(runtime: str) -> tuple[str, ...]:
    names = RUNTIME_ARTIFACTS.get(runtime)
    if names is None:
        known = ", ".join(sorted(RUNTIME_ARTIFACTS))
        raise PlanError(f"runtime {runtime!r} is not in the bundle's catalog", hint=f"use one of {known}")
    return names


def _runtime_version(runtime: str, kubernetes: str | None) -> str:
    pins = minor(kubernetes or DEFAULT_MINOR)
    from deploy.bundle.recipes_wasm import CRUN_DEBIAN

    versions = {"runc": pins.runc, "containerd": pins.containerd, "gvisor": GVISOR_VERSION, "wasmedge": CRUN_DEBIAN}
    return versions.get(runtime, "unpinned")
