"""The lab file's shape, as pydantic v2 models (the JSON Schema is generated from these).

Every model forbids unknown keys, so a typo is an error that names the valid keys.
Shorthands are normalised before validation (``networks: [mgmt]`` is
``networks: [{network: mgmt}]``) so one shape reaches the validators.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from deploy.model.schema_addons import AddonSpec
from deploy.model.schema_kubernetes import KubernetesSpec, Runtime
from deploy.model.strict import Strict

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_RE, description="lower-case letters, digits and dashes")]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|K|M|G|T|KB|MB|GB|TB)\s*$", re.I)
_SIZE_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(value: object) -> int:
    """``2GiB`` / ``512MiB`` / ``20G`` -> bytes. Bare numbers are refused: the unit is ambiguous."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("a size is a string such as 2GiB or 512MiB")
    if isinstance(value, int):
        raise ValueError(f"size {value} has no unit; write it as {value}MiB or {value}GiB")
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; write it as 2GiB, 512MiB or 20GiB")
    number, unit = float(match.group(1)), match.group(2).lower()[0]
    return int(number * _SIZE_UNITS[unit])


Size = Annotated[int, BeforeValidator(parse_size), Field(json_schema_extra={"type": "string"})]

_DURATION_RE = re.compile(r"^(\d+)\s*(s|m|h|d)$")


def parse_duration(value: object) -> int:
    """``12h`` / ``30m`` / ``7d`` -> seconds."""
    if isinstance(value, str) and (match := _DURATION_RE.match(value.strip())):
        return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    raise ValueError(f"{value!r} is not a duration; write it as 30m, 12h or 7d")


Duration = Annotated[int, BeforeValidator(parse_duration), Field(json_schema_extra={"type": "string"})]


# --- secrets -------------------------------------------------------------------------------


def _secret_ref(value: object) -> object:
    if isinstance(value, str | int | float):
        raise ValueError(
            "a secret must be a reference, not a value: write {env: VAR_NAME}, "
            "{file: path/to/secret} or {cmd: 'pass show lab/vcenter'}"
        )
    return value


class SecretRef(Strict):
    """Where a secret comes from. The value itself is never stored in the lab, state or logs."""

    env: str | None = None
    file: str | None = None
    cmd: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if sum(x is not None for x in (self.env, self.file, self.cmd)) != 1:
            raise ValueError("a secret reference has exactly one of env, file or cmd")
        return self


Secret = Annotated[SecretRef, BeforeValidator(_secret_ref)]

# --- providers -----------------------------------------------------------------------------


class LibvirtProviderSpec(Strict):
    kind: Literal["libvirt"]
    uri: str = "qemu:///system"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    pool: str = "labdeploy"
    pool_path: str | None = Field(None, description="pool folder (default /var/lib/libvirt/images/<pool>)")
    user_backend: Literal["auto", "slirp", "passt"] = Field(
        "auto", description="user-mode networking: passt where libvirt >= 10 has it, else QEMU SLIRP")
    ssh_host_bind: str = Field("127.0.0.1", description="host address the SSH/port forwards listen on")


class VsphereProviderSpec(Strict):
    kind: Literal["vsphere"]
    host: str
    port: int = 443
    user: str
    password: Secret
    datacenter: str
    cluster: str | None = None
    datastore: str
    folder: str | None = Field(None, description="VM folder for the lab's folder (default: the datacenter's vm folder)")
    resource_pool: str | None = Field(None, description="resource pool in the cluster (default: its root pool)")
    ca_bundle: str | None = Field(None, description="PEM file of the CA that signed vCenter's certificate")
    thumbprint: str | None = Field(None, description="SHA-256 fingerprint of vCenter's certificate (pinning)")
    verify_tls: bool = Field(True, description="false skips TLS verification, with a warning (never the default)")
    clone: Literal["linked", "full"] = Field("linked", description="linked clone from the template's snapshot")
    max_tasks: int = Field(8, gt=0, description="vCenter tasks in flight at once")
    guest_timeout: float = Field(900, gt=0, description="seconds after power-on for VMware Tools to report an IP")


class VagrantProviderSpec(Strict):
    kind: Literal["vagrant"]
    provider: Literal["libvirt"] = "libvirt"
    uri: str = "qemu:///system"


class ExistingProviderSpec(Strict):
    kind: Literal["existing"]
    connect_timeout: float = Field(20.0, gt=0)


BUILTIN_PROVIDER_KINDS = ("libvirt", "vsphere", "vagrant", "existing")


class PluginProviderSpec(BaseModel):
    """A provider kind registered by another package (entry point ``labdeploy.providers``).

    Its fields are validated by that kind's own spec model at ``validate`` time
    (:mod:`deploy.model.provider_checks`), with the same positioned errors.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str = Field(description="a kind registered through the labdeploy.providers entry point group",
                      json_schema_extra={"not": {"enum": list(BUILTIN_PROVIDER_KINDS)}})


BuiltinProvider = LibvirtProviderSpec | VsphereProviderSpec | VagrantProviderSpec | ExistingProviderSpec
AnyProvider = BuiltinProvider | PluginProviderSpec


def _provider_tag(value: object) -> str | None:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    if not isinstance(kind, str) or not kind:
        return None
    return kind if kind in BUILTIN_PROVIDER_KINDS else "plugin"


ProviderSpec = Annotated[
    Annotated[LibvirtProviderSpec, Tag("libvirt")] | Annotated[VsphereProviderSpec, Tag("vsphere")]
    | Annotated[VagrantProviderSpec, Tag("vagrant")] | Annotated[ExistingProviderSpec, Tag("existing")]
    | Annotated[PluginProviderSpec, Tag("plugin")],
    Discriminator(_provider_tag),
]

# --- images --------------------------------------------------------------------------------

SHA256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class BuildRecipe(Strict):
    distro: Literal["debian"] = "debian"
    release: Literal["bookworm", "trixie"] = "bookworm"
    packages: list[str] = Field(default_factory=list)


class ImageSpec(Strict):
    """Exactly one source: build, file, url, template (vSphere) or ova."""

    build: BuildRecipe | None = None
    file: str | None = None
    url: str | None = None
    template: str | None = None
    ova: str | None = None
    sha256: SHA256 | None = None
    user: str | None = Field(None, description="SSH user the image's cloud-init creates")

    @model_validator(mode="after")
    def _one_source(self) -> ImageSpec:
        sources = [k for k in ("build", "file", "url", "template", "ova") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError(
                "an image has exactly one of build, file, url, template or ova "
                f"(found {', '.join(sources) or 'none'})"
            )
        if (self.file or self.url) and not self.sha256:
            raise ValueError("file and url images need sha256: (run `sha256sum <image>` to get it)")
        return self

    @property
    def source(self) -> str:
        return next(k for k in ("build", "file", "url", "template", "ova") if getattr(self, k) is not None)


# --- networks ------------------------------------------------------------------------------


class NetworkSpec(Strict):
    provider: str | None = None
    mode: Literal["user", "nat", "isolated", "bridge"] = "isolated"
    cidr: str | None = None
    dhcp: bool = True
    bridge: str | None = Field(None, description="host bridge to attach to (mode bridge)")
    domain: str | None = Field(
        None, description="DNS domain for node names (default: system.domain, else the lab name)")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network CIDR such as 10.20.0.0/24 ({exc})") from None
        if net.num_addresses < 8:
            raise ValueError(f"{value} is too small for a lab network; use /29 or larger")
        return str(net)

    @model_validator(mode="after")
    def _mode_fields(self) -> NetworkSpec:
        if self.mode in ("nat", "isolated") and not self.cidr:
            raise ValueError(f"a {self.mode} network needs cidr: (for example cidr: 10.20.0.0/24)")
        if self.mode == "bridge" and not self.bridge:
            raise ValueError("a bridge network needs bridge: (the host bridge, for example br0)")
        if self.mode == "user" and self.cidr:
            raise ValueError("a user-mode network takes no cidr (QEMU assigns 10.0.2.0/24 inside each guest)")
        return self


class _Shorthand:
    """JSON Schema for a field that also accepts a shorthand (``networks: [mgmt]``, ``ports: [22]``)."""

    def __init__(self, shorthand: dict[str, Any]) -> None:
        self.shorthand = shorthand

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        return {"anyOf": [self.shorthand, handler(core)]}


def _nic(value: object) -> object:
    return {"network": value} if isinstance(value, str) else value


class NicSpec(Strict):
    network: str
    ip: str | None = Field(None, description="fixed address; in a group, the first node's (then +1)")

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address") from None
        return value


Nic = Annotated[NicSpec, BeforeValidator(_nic), _Shorthand({"type": "string", "description": "network name"})]


class GpuSpec(Strict):
    pci: str = Field(pattern=r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


def _port(value: object) -> object:
    return {"guest": value} if isinstance(value, int) and not isinstance(value, bool) else value


class PortSpec(Strict):
    guest: int = Field(ge=1, le=65535)
    host: int | None = Field(None, ge=1, le=65535)


Port = Annotated[PortSpec, BeforeValidator(_port),
                 _Shorthand({"type": "integer", "minimum": 1, "maximum": 65535, "description": "guest port"})]

# --- nodes ---------------------------------------------------------------------------------


class EsxiJoin(Strict):
    """A nested ESXi node (role esxi-host) added to a cluster of a vCenter once it is up."""

    provider: str | None = Field(None, description="the vsphere provider whose vCenter it joins (default: its own)")
    cluster: str
    user: str = "root"
    password: Secret
    thumbprint: str | None = Field(None, description="SHA-1 thumbprint of the host's certificate (pinned); "
                                                     "without it the first one vCenter reports is accepted")


class NodeSpec(Strict):
    """Fields a node can have; defaults and groups carry the same ones."""

    provider: str | None = None
    image: str | None = None
    cpus: int | None = Field(None, ge=1, le=512)
    memory: Size | None = None
    disk: Size | None = None
    extra_disks: list[Size] | None = None
    networks: list[Nic] | None = None
    roles: list[str] | None = None
    nested_virtualization: bool | None = None
    gpus: list[GpuSpec] | None = None
    ports: list[Port] | None = Field(None, description="guest TCP ports forwarded to host loopback")
    ssh: bool | None = Field(None, description="false: nothing logs in to this node (appliances such as nested "
                                               "ESXi); it is up once its provider reports it running")
    ssh_user: str | None = None
    ssh_port: int | None = Field(None, ge=1, le=65535)
    ssh_key: str | None = Field(None, description="private key file (existing hosts)")
    address: str | None = Field(None, description="where an existing host already is")
    labels: dict[str, str] | None = None
    join: EsxiJoin | None = Field(None, description="esxi-host: add the host to this vCenter cluster")


class GroupSpec(NodeSpec):
    count: int = Field(1, ge=0, le=10000)
    addresses: list[str] | None = Field(None, description="existing hosts: one address per node")


# --- ansible, verify, mirrors --------------------------------------------------------------


class AnsiblePlay(Strict):
    hosts: str = "all"
    roles: list[str]
    vars: dict[str, Any] = Field(default_factory=dict)


class VerifySpec(Strict):
    name: str | None = None
    hosts: str = "all"
    run: str | None = None
    expect: str | None = None
    expect_regex: str | None = None
    expect_rc: int | None = None
    retries: int = Field(0, ge=0, le=100)
    timeout: float = Field(60, gt=0)
    pytest: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> VerifySpec:
        if (self.run is None) == (self.pytest is None):
            raise ValueError("a verify entry has either run: (a command) or pytest: (a test file)")
        if self.run is not None and not self.name:
            raise ValueError("a verify entry with run: needs a name:")
        expects = [x for x in (self.expect, self.expect_regex, self.expect_rc) if x is not None]
        if len(expects) > 1:
            raise ValueError("use one of expect, expect_regex or expect_rc")
        return self


class MirrorsSpec(Strict):
    """Where nodes fetch packages, images and files instead of the public internet."""

    apt: str | None = Field(None, description="http(s) URL of a Debian mirror (replaces the nodes' apt sources)")
    registry: str | None = Field(None, description="host[:port] of an OCI registry mirror for containerd")
    files: str | None = Field(
        None, description="http(s) URL of a plain file mirror holding the runtime files that have no Debian "
        "package (gvisor: runsc, containerd-shim-runsc-v1; kata: kata-static.tar.xz; spin and wasmedge shims)")
    checksums: dict[str, SHA256] = Field(
        default_factory=dict, description="sha256 of each file taken from files:, by file name "
        "(e.g. {runsc: <64 hex digits>}); every file a runtime needs must have one")
    charts: str | None = Field(
        None, description="where add-on charts come from instead of their repo: a folder of <chart>-<version>.tgz "
        "files (a path, relative to the lab file), the http(s) URL of a chart repository, or oci://host/path")


class BundleSpec(Strict):
    """Where the lab's binaries and images come from (the bundle store, ``deploy bundle``)."""

    source: Literal["auto", "upstream", "build", "offline"] = Field(
        "auto", description="auto: the store, then mirrors, then upstream; build: build what the store lacks as "
        "steps of `deploy up`; offline: never touch upstream, and refuse at plan time when the store lacks "
        "anything (listing it and the command that builds it); upstream: release URLs and registries")


class SystemSpec(Strict):
    """Host settings the configure stage applies to the nodes (see each field for the roles that apply it)."""

    timezone: str | None = Field(
        None, description="IANA time zone such as Europe/Berlin (nodes with a configure role: base, kvm-host, k8s-*)")
    ntp: list[str] = Field(
        default_factory=list, description="NTP servers for systemd-timesyncd (nodes with base, kvm-host or k8s-*); "
        "empty leaves time sync as the image has it")
    packages: list[str] = Field(
        default_factory=list, description="extra Debian packages, installed with the runtimes "
        "(nodes with containerd, runtimes or k8s-*)")
    domain: str | None = Field(
        None, description="DNS domain of the node names in /etc/hosts and on lab networks (default: the lab name)")


# --- the lab -------------------------------------------------------------------------------


class Lab(Strict):
    name: Name
    ttl: Duration = Field(86400, description="how long created resources live before the reaper may take them")
    providers: dict[Name, ProviderSpec] = Field(
        default_factory=dict,
        description="where machines run; none named implies local: {kind: libvirt, uri: 'qemu:///system', accel: auto}")
    images: dict[Name, ImageSpec] = Field(
        default_factory=dict,
        description="none named implies debian12: {build: {distro: debian, release: bookworm}} for nodes that build")
    networks: dict[Name, NetworkSpec] = Field(
        default_factory=dict,
        description="a libvirt node that names none gets the provider's user-mode network (implied mgmt if none)")
    defaults: NodeSpec = Field(default_factory=NodeSpec)
    groups: dict[Name, GroupSpec] = Field(default_factory=dict)
    nodes: dict[Name, NodeSpec] = Field(default_factory=dict)
    kubernetes: KubernetesSpec | None = None
    runtimes: list[Runtime] | None = Field(
        None, description="container runtimes on nodes with a containerd role (default: kubernetes.runtimes)")
    ansible: list[AnsiblePlay] = Field(default_factory=list)
    verify: list[VerifySpec] = Field(default_factory=list)
    mirrors: MirrorsSpec = Field(default_factory=MirrorsSpec)
    system: SystemSpec = Field(default_factory=SystemSpec)
    bundle: BundleSpec = Field(default_factory=BundleSpec)
    addons: list[AddonSpec] = Field(
        default_factory=list, description="Helm releases installed after the cluster and its CNI (needs kubernetes:)")
