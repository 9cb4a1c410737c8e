"""CIDR clash detection, host port allocation and staleness rules (pure functions)."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime, timedelta

import pytest

from deploy.errors import ProviderError
from deploy.model.resolved import PortForward
from deploy.providers.base import Tags
from deploy.providers.libvirt_inventory import is_stale
from deploy.providers.libvirt_net import allocate_ports, find_overlap, port_is_free
from deploy.providers.libvirt_storage import volume_name, volume_owner

EXISTING = [
    ("default", ipaddress.ip_network("192.168.122.0/24")),
    ("other-lab-net", ipaddress.ip_network("10.20.0.0/16")),
    ("v6", ipaddress.ip_network("fd00::/64")),
]


def always_free(_port: int) -> bool:
    return True


@pytest.mark.parametrize(
    ("cidr", "clash"),
    [
        ("10.20.5.0/24", "other-lab-net (10.20.0.0/16)"),
        ("10.0.0.0/8", "other-lab-net (10.20.0.0/16)"),
        ("192.168.122.128/25", "default (192.168.122.0/24)"),
        ("10.21.0.0/24", None),
        ("172.30.0.0/24", None),
    ],
)
def test_overlap_names_the_existing_network(cidr: str, clash: str | None) -> None:
    assert find_overlap(cidr, EXISTING) == clash


def test_a_network_does_not_clash_with_itself() -> None:
    assert find_overlap("10.20.0.0/16", EXISTING, skip="other-lab-net") is None


def test_ssh_first_then_declared_ports_skip_used_ones() -> None:
    wanted = [PortForward(22), PortForward(6443), PortForward(22)]
    ports = allocate_ports(wanted, {40000, 40002}, is_free=always_free, port_range=(40000, 40010))
    assert ports == {22: 40001, 6443: 40003}


def test_bound_ports_are_skipped() -> None:
    ports = allocate_ports([PortForward(22)], set(), is_free=lambda p: p != 40000, port_range=(40000, 40010))
    assert ports == {22: 40001}


def test_fixed_host_port_is_kept_or_refused_when_taken() -> None:
    assert allocate_ports([PortForward(80, 8080)], set(), is_free=always_free) == {80: 8080}
    with pytest.raises(ProviderError, match="host port 8080 for guest port 80 is already in use"):
        allocate_ports([PortForward(80, 8080)], {8080}, is_free=always_free)


def test_exhausted_range_is_an_error() -> None:
    with pytest.raises(ProviderError, match="no free host port"):
        allocate_ports([PortForward(22)], {40000, 40001}, is_free=always_free, port_range=(40000, 40001))


def test_port_is_free_sees_a_real_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)


def test_volume_names_carry_lab_and_node() -> None:
    name = volume_name("k8s-sandbox", "workers-2", "root")
    assert name == "k8s-sandbox__workers-2__root.qcow2"
    assert volume_owner(name) == ("k8s-sandbox", "workers-2")
    assert volume_name("l", "n", "seed").endswith(".iso")
    assert volume_owner("base-0123456789abcdef.qcow2") is None


def test_staleness_by_expiry_or_age() -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    cutoff = now - timedelta(days=7)
    assert is_stale(Tags("l", "r", now - timedelta(days=8)), cutoff, now)
    assert not is_stale(Tags("l", "r", now - timedelta(days=1)), cutoff, now)
    assert is_stale(Tags("l", "r", now, expires=now - timedelta(minutes=1)), cutoff, now)
    naive_old = datetime(2025, 5, 1)  # naive timestamps count as UTC
    assert is_stale(Tags("l", "r", naive_old), cutoff, now)
