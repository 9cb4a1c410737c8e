"""LibvirtProvider pieces that need no hypervisor: its typed spec, URIs, recorded base images."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.errors import ProviderError
from deploy.model.resolved import Nic, ResolvedNode
from deploy.model.schema import LibvirtProviderSpec
from deploy.providers.base import ProviderContext, TaggedResource, Tags
from deploy.providers.libvirt import LibvirtProvider, _lab_named, is_local_uri
from deploy.providers.registry import provider_class


def make(tmp_path: Path, fields: dict[str, object]) -> LibvirtProvider:
    spec = LibvirtProviderSpec.model_validate({"kind": "libvirt", **fields})
    return LibvirtProvider("local", spec, ProviderContext("lab", tmp_path))


def test_registered_under_its_kind() -> None:
    assert provider_class("libvirt") is LibvirtProvider


def test_typed_spec_with_the_schema_defaults(tmp_path: Path) -> None:
    prov = make(tmp_path, {"uri": "qemu+ssh://root@h/system", "accel": "tcg"})
    assert (prov.uri, prov.requested_accel, prov.pool_name, prov.bind) == (
        "qemu+ssh://root@h/system",
        "tcg",
        "labdeploy",
        "127.0.0.1",
    )
    assert prov.pool_path == "/var/lib/libvirt/images/labdeploy"
    obj = make(tmp_path, {"pool": "p2", "ssh_host_bind": "127.0.0.2"})
    assert (obj.uri, obj.requested_accel, obj.pool_path, obj.bind) == (
        "qemu:///system",
        "auto",
        "/var/lib/libvirt/images/p2",
        "127.0.0.2",
    )


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu+ssh://root@127.0.0.1/system", True),
        ("qemu+ssh://root@localhost:2222/system?keyfile=/k", True),
        ("qemu+ssh://root@kvm1.example/system", False),
    ],
)
def test_local_uris(uri: str, local: bool) -> None:
    assert is_local_uri(uri) is local


def test_base_volumes_are_remembered_for_later_runs(tmp_path: Path) -> None:
    node = ResolvedNode("n1", None, 0, "local", "debian12", 1, 512, 4, (Nic("mgmt", "user"),))
    first = make(tmp_path, {})
    with pytest.raises(ProviderError, match="image debian12 of node n1 was not prepared"):
        first._base_volume(node)
    first.use_base_volume("debian12", "base-0123.qcow2")
    later = make(tmp_path, {})  # a new run that skipped the images stage
    assert later._base_volume(node) == "base-0123.qcow2"


def test_found_resources_are_named_as_the_lab_names_them() -> None:
    tags = Tags("k8s", "r", datetime.now(UTC))
    assert _lab_named(TaggedResource("machine", "k8s-cp-1", tags, "local")).name == "cp-1"
    assert _lab_named(TaggedResource("network", "k8s-labnet", tags, "local")).name == "labnet"
    assert _lab_named(TaggedResource("volume", "k8s__cp-1__root.qcow2", tags, "local")).name == "k8s__cp-1__root.qcow2"
