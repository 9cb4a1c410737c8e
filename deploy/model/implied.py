"""Implicit defaults: what a small lab leaves out and the engine fills in ("a small lab is small").

``name: tiny`` plus ``nodes: {vm: {}}`` is a whole lab. When the file names

- no provider at all: ``local: {kind: libvirt}`` (``qemu:///system``, ``accel: auto``) is implied;
- no network on a libvirt node: the node gets its provider's user-mode network, and when the
  provider has none, an implied ``mgmt: {provider: <it>, mode: user}`` (the host reaches the
  machine through a loopback port forward of that NIC);
- no image on a node whose provider builds images, and the lab defines no image: the default
  Debian image ``debian12: {build: {distro: debian, release: bookworm}}`` (one defined image is
  used as the only provider is).

The implied entries are added to the lab model itself, so every later layer sees one lab; the
names are kept in :class:`Implied` for ``deploy validate --resolved``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploy.model.schema import ImageSpec, Lab, NetworkSpec, NicSpec

DEFAULT_PROVIDER = "local"
DEFAULT_IMAGE = "debian12"
MGMT = "mgmt"
BUILDS_IMAGES = {"libvirt", "vagrant"}  # provider kinds that boot images the builder makes
USER_NETWORKS = {"libvirt"}  # provider kinds whose machines are reached through a user-mode NIC


@dataclass(frozen=True)
class Implied:
    """Names of the providers, networks and images the lab file did not define."""

    providers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    images: tuple[str, ...] = ()

    def describe(self, lab: Lab) -> list[str]:
        """One line per implied entry, as its YAML would read."""
        lines = [f"provider {name}: {_flow(_shown(lab.providers[name].model_dump()))}" for name in self.providers]
        lines += [f"network {name}: {_flow(lab.networks[name].model_dump(exclude_defaults=True))}"
                  for name in self.networks]
        lines += [f"image {name}: {_flow(lab.images[name].model_dump())}"
                  for name in self.images]
        return lines


@dataclass
class _Filler:
    lab: Lab
    providers: dict[str, Any]
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    images: dict[str, ImageSpec] = field(default_factory=dict)
    mgmt: dict[str, str] = field(default_factory=dict)  # provider -> its user-mode network

    def kind(self, provider: str) -> str:
        spec = self.providers.get(provider)
        return str(spec.kind) if spec is not None else ""

    def user_network(self, provider: str) -> str:
        if provider not in self.mgmt:
            self.mgmt[provider] = _existing_user_network(self.lab, provider) or self._new_network(provider)
        return self.mgmt[provider]

    def _new_network(self, provider: str) -> str:
        taken = {*self.lab.networks, *self.networks}
        name = MGMT if MGMT not in taken else f"{provider}-{MGMT}"
        self.networks[name] = NetworkSpec(provider=provider, mode="user")
        return name

    def default_image(self) -> str:
        if len(self.lab.images) == 1:
            return next(iter(self.lab.images))
        if self.lab.images:
            return ""
        self.images.setdefault(DEFAULT_IMAGE, ImageSpec.model_validate(
            {"build": {"distro": "debian", "release": "bookworm"}}))
        return DEFAULT_IMAGE


def _shown(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k in ("kind", "uri", "accel")}


def _flow(data: dict[str, Any]) -> str:
    """``{kind: libvirt, uri: qemu:///system}``: a dump in YAML flow style, for one line."""
    parts = [f"{k}: {_flow(v) if isinstance(v, dict) else v}" for k, v in data.items() if v not in (None, [], {})]
    return "{" + ", ".join(parts) + "}"


def _existing_user_network(lab: Lab, provider: str) -> str | None:
    only = next(iter(lab.providers)) if len(lab.providers) == 1 else None
    for name, net in lab.networks.items():
        if net.mode == "user" and (net.provider or lab.defaults.provider or only) == provider:
            return name
    return None


def implied_providers(lab: Lab) -> tuple[Lab, tuple[str, ...]]:
    """``lab`` with the default provider when it names none."""
    if lab.providers:
        return lab, ()
    providers = Lab.model_validate({"name": lab.name, "providers": {DEFAULT_PROVIDER: {"kind": "libvirt"}}}).providers
    return lab.model_copy(update={"providers": providers}), (DEFAULT_PROVIDER,)


def fill_nodes(lab: Lab, fields: dict[str, dict[str, Any]]) -> tuple[Lab, Implied]:
    """Give each node's merged ``fields`` its provider, network and image where the file named none."""
    lab, providers = implied_providers(lab)
    filler = _Filler(lab, dict(lab.providers))
    only = next(iter(lab.providers)) if len(lab.providers) == 1 else ""
    for merged in fields.values():
        merged["provider"] = provider = merged["provider"] or only
        kind = filler.kind(provider)
        if kind in USER_NETWORKS and not merged["networks"]:
            merged["networks"] = [NicSpec(network=filler.user_network(provider))]
        if kind in BUILDS_IMAGES and not merged["image"]:
            merged["image"] = filler.default_image()
    implied = Implied(providers, tuple(filler.networks), tuple(filler.images))
    if filler.networks or filler.images:
        lab = lab.model_copy(update={"networks": {**lab.networks, **filler.networks},
                                     "images": {**lab.images, **filler.images}})
    return lab, implied
