"""containerd operations: config.toml with runtime handlers, registry mirrors, handler binaries."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Generator
from typing import Any

import tomli_w
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.exceptions import OperationValueError
from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.files import File

from deploy.configure.facts import ContainerdImageDigests, ContainerdImages, TomlFile, parse_toml
from deploy.configure.operations import put_text

CRI = "io.containerd.grpc.v1.cri"  # containerd 1.x (config version 2): the CRI plugin's table under [plugins]
CRI_RUNTIME = "io.containerd.cri.v1.runtime"  # containerd 2.x (config version 3): runtimes ...
CRI_IMAGES = "io.containerd.cri.v1.images"  # ... and images (registry, pinned images) are two plugins
HEADER = "# managed by labdeploy; local edits are overwritten\n"


def _handler_table(handler: dict[str, Any], systemd_cgroup: bool) -> dict[str, Any]:
    table: dict[str, Any] = {"runtime_type": handler["runtime_type"]}
    if handler.get("pod_annotations"):
        table["pod_annotations"] = list(handler["pod_annotations"])  # CRI drops the others before the runtime
    options: dict[str, Any] = {}
    if handler.get("binary_name"):
        options["BinaryName"] = handler["binary_name"]
    if handler.get("config_path"):
        options["ConfigPath"] = handler["config_path"]
    if handler["runtime_type"] == "io.containerd.runc.v2":
        options["SystemdCgroup"] = systemd_cgroup
    if options:
        table["options"] = options
    return table


def config_document(
    handlers: list[dict[str, Any]],
    systemd_cgroup: bool = True,
    registry_config_path: str = "/etc/containerd/certs.d",
    default_runtime: str = "runc",
    *,
    version: int = 2,
    sandbox_image: str | None = None,
) -> dict[str, Any]:
    """config.toml as data, one CRI runtime table per handler, in config ``version`` (see
    :func:`config_version`): 2 has one CRI plugin; 3 and 4 split it into runtime and images plugins
    (4 differs from 3 only in server settings, which labdeploy leaves at their defaults)."""
    runtimes = {h["name"]: _handler_table(h, systemd_cgroup) for h in handlers}
    containerd = {"default_runtime_name": default_runtime, "runtimes": runtimes}
    registry = {"config_path": registry_config_path}
    if version >= 3:
        images: dict[str, Any] = {"registry": registry}
        if sandbox_image:
            images["pinned_images"] = {"sandbox": sandbox_image}
        return {"version": version, "plugins": {CRI_RUNTIME: {"containerd": containerd}, CRI_IMAGES: images}}
    cri: dict[str, Any] = {"containerd": containerd, "registry": registry}
    if sandbox_image:
        cri["sandbox_image"] = sandbox_image
    return {"version": 2, "plugins": {CRI: cri}}


def render_config(
    handlers: list[dict[str, Any]],
    systemd_cgroup: bool = True,
    registry_config_path: str = "/etc/containerd/certs.d",
    default_runtime: str = "runc",
    *,
    version: int = 2,
    sandbox_image: str | None = None,
) -> str:
    """config.toml text in config ``version`` (see :func:`config_document`)."""
    document = config_document(handlers, systemd_cgroup, registry_config_path, default_runtime, version=version,
                               sandbox_image=sandbox_image)
    return HEADER + tomli_w.dumps(document)


def config_version(containerd: str) -> int:
    """The config version a containerd release reads natively (its ``version.ConfigVersion``): 1.x 2,
    2.0-2.2 3, 2.3 and later 4 (read from v2.2.9's and v2.3.7's and v2.4.2's sources)."""
    try:
        major, minor = (int(part) for part in containerd.lstrip("v").split(".")[:2])
    except ValueError:
        raise OperationValueError(f"containerd version {containerd!r} is not major.minor[.patch]") from None
    if major == 1:
        return 2
    if major == 2:
        return 3 if minor <= 2 else 4
    raise OperationValueError(f"containerd {containerd} is not known; labdeploy renders configs for 1.x and 2.x")


@operation()
def config(
    handlers: list[dict[str, Any]],
    path: str = "/etc/containerd/config.toml",
    systemd_cgroup: bool = True,
    registry_config_path: str = "/etc/containerd/certs.d",
    *,
    containerd: str = "1.7",
    sandbox_image: str | None = None,
) -> Generator[Any]:
    """Render config.toml for the installed ``containerd`` release; rewrite it only when its parsed
    content differs (formatting is ignored)."""
    names = [h["name"] for h in handlers]
    if len(set(names)) != len(names):
        raise_duplicate(names)
    text = render_config(handlers, systemd_cgroup, registry_config_path, version=config_version(containerd),
                         sandbox_image=sandbox_image)
    current = host.get_fact(TomlFile, path=path)
    if current == parse_toml(text):
        host.noop(f"containerd config has handlers {', '.join(names)}")
        return
    yield from put_text(path, text)


def raise_duplicate(names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    raise OperationValueError(f"containerd runtime handlers must be unique; repeated: {', '.join(dupes)}")


def render_hosts_toml(registry: str, mirror: str) -> str:
    """certs.d/<registry>/hosts.toml sending pulls to ``mirror`` first (plain http unless a scheme)."""
    upstream = "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"
    url = mirror if "://" in mirror else f"http://{mirror}"
    return HEADER + tomli_w.dumps({"server": upstream, "host": {url: {"capabilities": ["pull", "resolve"]}}})


@operation()
def registry_mirror(
    mirror: str, registry: str = "docker.io", config_path: str = "/etc/containerd/certs.d"
) -> Generator[Any]:
    """Point pulls from ``registry`` at ``mirror`` (containerd's hosts.toml)."""
    path = f"{config_path}/{registry}/hosts.toml"
    text = render_hosts_toml(registry, mirror)
    if host.get_fact(TomlFile, path=path) == parse_toml(text):
        host.noop(f"pulls from {registry} go to {mirror}")
        return
    yield from put_text(path, text)


@operation()
def handler_binary(handler: str, binary: str) -> Generator[Any]:
    """Fail clearly when a runtime handler's binary is missing.

    The binary may be installed earlier in the same pass, so a missing file at prepare time
    yields a check that runs at execution time; a present file is a noop.
    """
    if host.get_fact(File, path=binary):
        host.noop(f"handler {handler}: {binary} is present")
        return
    message = (
        f"containerd runtime handler {handler!r} needs {binary}, which is not on the node; "
        f"install the {handler} runtime or remove it from kubernetes.runtimes"
    )
    yield f"test -x {shlex.quote(binary)} || {{ echo {shlex.quote(message)} >&2; exit 1; }}"


SMOKE_IMAGE = "localhost/labdeploy/smoke:latest"
SMOKE_NAMESPACE = "k8s.io"
# An image made on the node from its own /bin/sh and /bin/echo plus the libraries they load
# (no registry, no download): a docker-archive tarball that ``ctr image import`` understands.
_SMOKE_SCRIPT = """set -e
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
mkdir -p "$d/root/bin"
for b in /bin/sh /bin/echo; do
  cp -L "$b" "$d/root/bin/"
  for lib in $(ldd "$b" | grep -o '/[^ ]*'); do mkdir -p "$d/root${{lib%/*}}"; cp -L "$lib" "$d/root$lib"; done
done
tar -C "$d/root" --owner=0 --group=0 --numeric-owner -cf "$d/layer.tar" .
diff=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
printf '{{"architecture":"%s","os":"linux","config":{{"Cmd":["/bin/sh"]}},'\\
'"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' "$(dpkg --print-architecture)" "$diff" > "$d/config.json"
printf '[{{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}}]' {name} > "$d/manifest.json"
tar -C "$d" -cf "$d/image.tar" manifest.json config.json layer.tar
ctr -n {namespace} image import "$d/image.tar" >/dev/null"""


def smoke_image_script(name: str, namespace: str) -> str:
    return _SMOKE_SCRIPT.format(name=shlex.quote(name), namespace=shlex.quote(namespace))


@operation()
def smoke_image(name: str = SMOKE_IMAGE, namespace: str = SMOKE_NAMESPACE) -> Generator[Any]:
    """Import a tiny local image (``/bin/sh``, ``/bin/echo``) that smoke checks run under each handler."""
    if name in host.get_fact(ContainerdImages, namespace=namespace):
        host.noop(f"image {name} is in containerd namespace {namespace}")
        return
    yield smoke_image_script(name, namespace)


PINNED = "io.cri-containerd.pinned=pinned"  # the CRI plugin reports such images pinned: the kubelet's GC keeps them


@operation()
def bundle_image(image: str, src: str, digest: str, namespace: str = "k8s.io") -> Generator[Any]:
    """Import the bundle's OCI archive ``src`` (a host path) as ``image`` and pin it.

    Nothing happens when containerd already has ``image`` at ``digest`` (the manifest digest the
    archive's index names); otherwise the archive is uploaded, imported, labelled and removed.
    """
    if not digest.startswith("sha256:"):
        raise OperationValueError(f"image {image}: digest must be sha256:<hex>, got {digest!r}")
    have = host.get_fact(ContainerdImageDigests, namespace=namespace).get(image)
    if have == digest:
        host.noop(f"image {image} is in containerd namespace {namespace} at {digest[:19]}")
        return
    remote = f"/var/tmp/labdeploy-image-{hashlib.sha256(image.encode()).hexdigest()[:16]}.tar"
    ns, ref, tmp = shlex.quote(namespace), shlex.quote(image), shlex.quote(remote)
    yield FileUploadCommand(src, remote)
    yield (f"ctr -n {ns} image import {tmp} >/dev/null && ctr -n {ns} image label {ref} {PINNED} >/dev/null; "
           f"status=$?; rm -f {tmp}; exit $status")
