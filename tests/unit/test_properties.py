"""Property tests: random valid labs plan to an acyclic, deterministic DAG; any junk gives ConfigError."""

from __future__ import annotations

import io
import ipaddress
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from deploy.errors import ConfigError
from deploy.model.checks import check_lab
from deploy.model.load import LoadedLab, parse_yaml, validate_data
from deploy.model.resolve import resolve
from deploy.plan import build_resources, make_plan
from deploy.state import LabState

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)


@st.composite
def labs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid lab: one libvirt provider, a few networks (distinct /24s), groups with fixed IPs."""
    net_names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    networks: dict[str, Any] = {"mgmt-u": {"mode": "user"}}
    for i, name in enumerate(net_names):
        networks[name] = {"mode": draw(st.sampled_from(["isolated", "nat"])), "cidr": f"10.{i}.0.0/24"}
    group_names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    groups: dict[str, Any] = {}
    next_fixed = 100
    for name in group_names:
        count = draw(st.integers(0, 5))
        nets: list[Any] = draw(st.lists(st.sampled_from(["mgmt-u", *net_names]), max_size=3, unique=True))
        if nets and "mgmt-u" not in nets:
            nets.insert(0, "mgmt-u")  # a libvirt machine is reached through its user-mode NIC
        if nets and nets[-1] != "mgmt-u" and draw(st.booleans()):
            index = net_names.index(nets[-1])
            nets[-1] = {"network": nets[-1], "ip": str(ipaddress.ip_address(f"10.{index}.0.0") + next_fixed)}
            next_fixed += 6
        group: dict[str, Any] = {"count": count, "networks": nets}
        if draw(st.booleans()):
            group["roles"] = draw(st.lists(st.sampled_from(["base", "containerd", "kvm-host"]), max_size=2))
        if draw(st.booleans()):
            group["memory"] = f"{draw(st.integers(1, 64))}GiB"
        groups[name] = group
    lab: dict[str, Any] = {"name": draw(NAMES), "providers": {"local": {"kind": "libvirt"}},
                           "images": {"deb": {"build": {}}}, "networks": networks,
                           "defaults": {"image": "deb", "cpus": draw(st.integers(1, 8))}, "groups": groups}
    if draw(st.booleans()):
        lab["ansible"] = [{"hosts": "all", "roles": ["x"]}]
    return lab


def _plan_ids(data: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    buffer = io.StringIO()
    YAML().dump(data, buffer)
    parsed, positions = parse_yaml(buffer.getvalue(), "lab.yaml")
    lab = validate_data(parsed, positions)
    resolved = resolve(lab)
    check_lab(LoadedLab(lab, Path("lab.yaml"), positions, parsed), resolved)
    plan = make_plan(resolved, LabState(lab.name))
    return [c.resource_id for c in plan.changes], {k: r.input_hash for k, r in plan.resources.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labs())
def test_random_valid_labs_plan_to_an_acyclic_deterministic_dag(data: dict[str, Any]) -> None:
    order, hashes = _plan_ids(data)
    again_order, again_hashes = _plan_ids(data)
    assert order == again_order
    assert hashes == again_hashes
    assert len(order) == len(set(order))
    position = {rid: i for i, rid in enumerate(order)}
    buffer = io.StringIO()
    YAML().dump(data, buffer)
    parsed, positions = parse_yaml(buffer.getvalue(), "lab.yaml")
    resources = build_resources(resolve(validate_data(parsed, positions)))
    assert set(resources) == set(order)
    for rid, resource in resources.items():
        assert all(position[dep] < position[rid] for dep in resource.deps)  # every edge points forward
    nodes = sum(g["count"] for g in data["groups"].values())
    assert sum(1 for rid in order if rid.startswith("machine:")) == nodes


def _load_all(text: str) -> None:
    parsed, positions = parse_yaml(text, "lab.yaml")
    lab = validate_data(parsed, positions)
    resolved = resolve(lab)
    check_lab(LoadedLab(lab, Path("lab.yaml"), positions, parsed), resolved)


def _only_config_errors(text: str) -> None:
    """Loading ``text`` either works or raises ConfigError with messages; anything else fails the test."""
    problems = []
    try:
        _load_all(text)
    except ConfigError as exc:
        problems = exc.problems
        assert problems, "a ConfigError without problems"
    assert all(p.message for p in problems)


SEED = """name: lab1
providers:
  local: {kind: libvirt, accel: auto}
images:
  deb: {build: {distro: debian, release: bookworm}}
networks:
  mgmt: {provider: local, mode: user}
  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}
defaults: {provider: local, image: deb, cpus: 2, memory: 2GiB, disk: 20GiB, networks: [mgmt, labnet]}
groups:
  control: {count: 1, roles: [k8s-control-plane], networks: [mgmt, {network: labnet, ip: 10.20.0.5}],
            ports: [{guest: 443, host: 8443}]}
  workers: {count: 2, memory: 4GiB, roles: [k8s-worker], ports: [80]}
nodes:
  workers-2: {gpus: [{pci: "0000:3b:00.0"}]}
kubernetes:
  version: "1.36"
  control_plane: control
  workers: workers
  cni: {cilium: {version: 1.17.0}}
  runtimes: [runc, gvisor]
  apt: {repo: "http://mirror.internal/k8s/v{version}/deb/ /"}
ansible: [{hosts: all, roles: [lab_baseline]}]
verify:
  - {name: api ready, hosts: control, run: "true", expect: ok}
mirrors: {files: "http://files.internal/", checksums: {runsc: "SHA_A", containerd-shim-runsc-v1: "SHA_B"}}
""".replace("SHA_A", "a" * 64).replace("SHA_B", "b" * 64)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_yaml_gives_only_config_errors(data: st.DataObject) -> None:
    text = SEED
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        piece = data.draw(st.sampled_from([":", "-", " ", "\n", "{", "}", "[", "]", "'", '"', "0", "x",
                                           "&a", "*a", "!!int", "#", "\t", "10.20.0.300", "GiB", "null"]))
        if action == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 8)):]
        elif action == "insert":
            text = text[:at] + piece + text[at:]
        else:
            text = text[:at] + piece + text[at + len(piece):]
    _only_config_errors(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_only_config_errors(text: str) -> None:
    _only_config_errors(text)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
KEYS = st.sampled_from(["name", "providers", "images", "networks", "defaults", "groups", "nodes",
                        "kubernetes", "ansible", "verify", "mirrors", "ttl"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KEYS, JSONISH, max_size=8))
def test_random_data_structures_give_only_config_errors(data: dict[str, Any]) -> None:
    buffer = io.StringIO()
    YAML().dump(data, buffer)
    _only_config_errors(buffer.getvalue())


def test_seed_is_valid() -> None:
    _load_all(SEED)
