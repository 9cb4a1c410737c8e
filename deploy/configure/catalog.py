"""Pure data the lab checks and the configure deploys share: the roles a node can have, and
what each container runtime needs (Debian packages, files, a containerd handler).

This module imports nothing but the standard library, so ``deploy.model.checks`` reads the
same tables as the deploys (one place for the known roles and the runtime files). Runtimes
with no Debian package (gVisor, Kata, the runwasi shims) come from the lab's files mirror and
are checked against the sha256 sums the lab gives in ``mirrors.checksums``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# --- roles ---------------------------------------------------------------------------------

STEP_ORDER: tuple[str, ...] = ("base", "runtimes", "containerd", "k8s_node", "kvm_host")
_K8S_STEPS = ("base", "runtimes", "containerd", "k8s_node")


@dataclass(frozen=True)
class Role:
    """A role a node can name in ``roles:``, the configure steps it runs and who else reads it."""

    name: str
    steps: tuple[str, ...] = ()  # configure deploy steps (run once each, in STEP_ORDER)
    used_by: str = "configure"  # the stages that act on the role
    needs_kubernetes: bool = False  # the lab must have a kubernetes: section


ROLES: dict[str, Role] = {role.name: role for role in (
    Role("base", ("base",)),
    Role("runtimes", ("runtimes",)),
    Role("containerd", ("runtimes", "containerd")),
    Role("k8s-node", _K8S_STEPS, needs_kubernetes=True),
    Role("k8s-control-plane", _K8S_STEPS, "configure, cluster (kubeadm init)", needs_kubernetes=True),
    Role("k8s-worker", _K8S_STEPS, "configure, cluster (kubeadm join)", needs_kubernetes=True),
    Role("kvm-host", ("base", "kvm_host")),
    Role("esxi-host", (), "machines (nested ESXi on vSphere)"),
)}

# Role -> the deploy steps it needs; roles without steps are left to later stages.
ROLE_DEPLOYS: dict[str, tuple[str, ...]] = {name: role.steps for name, role in ROLES.items() if role.steps}


def known_roles(extra: Iterable[str] = ()) -> list[str]:
    """Every role a node may name: the table above plus ``extra`` (e.g. Ansible role paths)."""
    return sorted({*ROLES, *extra})


def steps_for_roles(roles: Iterable[str]) -> list[str]:
    """The deploy steps of ``roles`` in execution order; unknown roles contribute none."""
    wanted = {step for role in roles for step in ROLE_DEPLOYS.get(role, ())}
    return [step for step in STEP_ORDER if step in wanted]


# --- runtimes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorFile:
    """A file fetched from ``mirrors.files``: its name there and where it goes on the node."""

    name: str
    dest: str
    mode: str = "755"
    unpack_to: str | None = None  # tarballs: extracted into this directory


@dataclass(frozen=True)
class Handler:
    """A containerd runtime handler (``[...containerd.runtimes.<name>]``)."""

    name: str
    runtime_type: str
    binary: str  # the file that must exist on the node for the handler to work
    binary_name: str | None = None  # runc-compatible runtimes: options.BinaryName
    config_path: str | None = None  # options.ConfigPath (kata)
    pod_annotations: tuple[str, ...] = ()  # pod annotations CRI passes on to the runtime (crun's wasm marker)


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    packages: tuple[str, ...] = ()
    files: tuple[MirrorFile, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (link path, target)
    handler: Handler | None = None
    optional_files: bool = False  # files only add the handler; the runtime works without them
    bundle: tuple[MirrorFile, ...] = ()  # files the bundle supplies instead (bundle.source build|offline)
    bundle_handler: Handler | None = None  # the handler when the bundle's files are there


RUNC_V2 = "io.containerd.runc.v2"
_SHIM_DIR = "/usr/local/bin"

RUNTIMES: dict[str, RuntimeSpec] = {
    "runc": RuntimeSpec("runc", packages=("runc",), handler=Handler("runc", RUNC_V2, "/usr/sbin/runc", None),
                        bundle=(MirrorFile("runc", "/usr/local/sbin/runc"),)),  # first in containerd's PATH
    "crun": RuntimeSpec("crun", packages=("crun",), handler=Handler("crun", RUNC_V2, "/usr/bin/crun", "/usr/bin/crun")),
    "gvisor": RuntimeSpec(
        "gvisor",
        files=(
            MirrorFile("runsc", f"{_SHIM_DIR}/runsc"),
            MirrorFile("containerd-shim-runsc-v1", f"{_SHIM_DIR}/containerd-shim-runsc-v1"),
        ),
        handler=Handler("runsc", "io.containerd.runsc.v1", f"{_SHIM_DIR}/containerd-shim-runsc-v1"),
    ),
    "kata": RuntimeSpec(
        "kata",
        files=(MirrorFile("kata-static.tar.xz", "/var/cache/labdeploy/kata-static.tar.xz", "644", "/"),),
        links=((f"{_SHIM_DIR}/containerd-shim-kata-v2", "/opt/kata/bin/containerd-shim-kata-v2"),),
        handler=Handler(
            "kata",
            "io.containerd.kata.v2",
            "/opt/kata/bin/containerd-shim-kata-v2",
            config_path="/opt/kata/share/defaults/kata-containers/configuration.toml",
        ),
    ),
    "wasmedge": RuntimeSpec(
        "wasmedge",
        packages=("wasmedge",),
        files=(MirrorFile("containerd-shim-wasmedge-v1", f"{_SHIM_DIR}/containerd-shim-wasmedge-v1"),),
        handler=Handler("wasmedge", "io.containerd.wasmedge.v1", f"{_SHIM_DIR}/containerd-shim-wasmedge-v1"),
        optional_files=True,
        # the bundle's Wasm path: crun built with WasmEdge, a runc-type handler; it runs an image's .wasm
        # entrypoint when the pod carries module.wasm.image/variant (deploy.bundle.recipes_wasm)
        bundle=(MirrorFile("crun-wasmedge", f"{_SHIM_DIR}/crun-wasmedge"),),
        bundle_handler=Handler("wasmedge", RUNC_V2, f"{_SHIM_DIR}/crun-wasmedge", f"{_SHIM_DIR}/crun-wasmedge",
                               pod_annotations=("module.wasm.image/*",)),
    ),
    "spin": RuntimeSpec(
        "spin",
        files=(MirrorFile("containerd-shim-spin-v2", f"{_SHIM_DIR}/containerd-shim-spin-v2"),),
        handler=Handler("spin", "io.containerd.spin.v2", f"{_SHIM_DIR}/containerd-shim-spin-v2"),
    ),
}


def runtime(name: str) -> RuntimeSpec:
    """The spec of ``name``; KeyError names the supported runtimes."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise KeyError(f"unknown runtime {name!r}; supported: {', '.join(sorted(RUNTIMES))}") from None


def uses_files(spec: RuntimeSpec, checksums: dict[str, str]) -> bool:
    """Whether the files of ``spec`` are to be fetched (optional ones only when a checksum is given)."""
    if not spec.files:
        return False
    if spec.optional_files:
        return all(f.name in checksums for f in spec.files)
    return True


def needed_files(runtimes: Iterable[str], checksums: dict[str, str]) -> list[tuple[str, MirrorFile]]:
    """(runtime, file) for every mirror file the runtimes fetch; unknown runtimes are skipped."""
    return [(name, item) for name in runtimes if name in RUNTIMES
            for item in RUNTIMES[name].files if uses_files(RUNTIMES[name], checksums)]


K3S_FILE = "k3s"  # k3s's binary: its name in mirrors.files and mirrors.checksums


def mirror_file_names() -> list[str]:
    """Every file name a runtime (or k3s) can fetch from ``mirrors.files``."""
    return sorted({item.name for spec in RUNTIMES.values() for item in spec.files} | {K3S_FILE})


def handlers_for(runtimes: tuple[str, ...], checksums: dict[str, str]) -> list[Handler]:
    """The containerd handlers of ``runtimes``; runc always comes first (the default). ``checksums`` has
    every file that has a source (the lab's mirror sums and the bundle's files)."""
    names = ("runc", *(r for r in runtimes if r != "runc"))
    handlers = []
    for name in names:
        spec = runtime(name)
        if spec.bundle_handler is not None and all(f.name in checksums for f in spec.bundle):
            handlers.append(spec.bundle_handler)
            continue
        if spec.handler is None or (spec.optional_files and not uses_files(spec, checksums)):
            continue
        handlers.append(spec.handler)
    return handlers


# --- node files only the bundle supplies (online nodes take Debian's and pkgs.k8s.io's packages) ---------

CONTAINERD_BUNDLE: tuple[MirrorFile, ...] = (  # containerd 2 (Debian has 1.7): a unit of ours starts it
    MirrorFile("containerd", f"{_SHIM_DIR}/containerd"),
    MirrorFile("containerd-shim-runc-v2", f"{_SHIM_DIR}/containerd-shim-runc-v2"),
)
KUBE_BUNDLE: tuple[MirrorFile, ...] = (  # where the pkgs.k8s.io packages put them (kubeadm's drop-in names them)
    MirrorFile("kubeadm", "/usr/bin/kubeadm"),
    MirrorFile("kubelet", "/usr/bin/kubelet"),
    MirrorFile("kubectl", "/usr/bin/kubectl"),
    MirrorFile("crictl", f"{_SHIM_DIR}/crictl"),
    MirrorFile("cni-plugins", "/var/cache/labdeploy/cni-plugins.tgz", "644", "/opt/cni/bin"),
)


def bundle_node_files(runtimes: Iterable[str], *, containerd: bool, kubernetes: bool) -> list[MirrorFile]:
    """Every file the bundle can supply to a node: the runtimes' own, containerd's and Kubernetes'."""
    found = [item for name in ("runc", *runtimes) if name in RUNTIMES for item in RUNTIMES[name].bundle]
    found += [*CONTAINERD_BUNDLE] if containerd else []
    found += [*KUBE_BUNDLE] if kubernetes else []
    return list({item.name: item for item in found}.values())
