from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from deploy.configure.catalog import handlers_for
from deploy.configure.deploys import ROLE_DEPLOYS, steps_for_roles
from deploy.configure.deploys.base import debian_sources, hosts_block
from deploy.configure.deploys.k8s_node import repo_line
from deploy.configure.deploys.runtimes import packages
from deploy.configure.driver import HostTarget, configure
from deploy.configure.operations.containerd import render_config, render_hosts_toml
from deploy.configure.settings import ConfigureSettings, validate_settings
from deploy.errors import ConfigError
from deploy.providers.base import SshEndpoint

SHA = "a" * 64


def test_gvisor_and_kata_without_files_mirror_are_reported_before_any_side_effect() -> None:
    problems = validate_settings(ConfigureSettings(runtimes=("runc", "gvisor", "kata")), {"n1": ("containerd",)})
    assert len(problems) == 2
    assert all("mirrors.files is not set" in p for p in problems)


def test_mirror_files_need_checksums() -> None:
    settings = ConfigureSettings(
        runtimes=("gvisor",), mirrors_files="http://files.internal/", file_checksums={"runsc": SHA}
    )
    problems = validate_settings(settings, {"n1": ("containerd",)})
    assert problems == [
        "runtime 'gvisor' needs the sha256 of 'containerd-shim-runsc-v1' (64 lowercase hex digits), "
        "got none; add it to mirrors.checksums"
    ]


def test_runtime_problems_only_matter_for_nodes_with_runtime_roles() -> None:
    assert validate_settings(ConfigureSettings(runtimes=("gvisor",)), {"n1": ("base", "lab_baseline")}) == []


def test_unknown_runtime_lists_the_supported_ones() -> None:
    (problem,) = validate_settings(ConfigureSettings(runtimes=("runx",)), {"n1": ("containerd",)})
    assert "unknown runtime 'runx'" in problem
    assert "crun, gvisor, kata, runc, spin, wasmedge" in problem


def test_k8s_node_needs_version_and_repo() -> None:
    problems = validate_settings(ConfigureSettings(), {"cp": ("k8s-control-plane",)})
    assert [p.split(" needs ")[0] for p in problems] == ["role k8s-node", "role k8s-node"]


def test_configure_raises_config_error_without_touching_hosts(tmp_path: Path) -> None:
    # port 9 on loopback: nothing is contacted, validation comes first
    target = HostTarget("n1", SshEndpoint("127.0.0.1", 9, "root", tmp_path / "key"), roles=("containerd",))
    with pytest.raises(ConfigError, match=r"mirrors\.files is not set"):
        configure([target], ConfigureSettings(runtimes=("kata",)), known_hosts=tmp_path / "known_hosts")


def test_roles_map_to_steps_in_dependency_order() -> None:
    assert steps_for_roles(("k8s-worker", "kvm-host")) == ["base", "runtimes", "containerd", "k8s_node", "kvm_host"]
    assert steps_for_roles(("containerd",)) == ["runtimes", "containerd"]
    assert steps_for_roles(("lab_baseline",)) == []
    assert {"base", "containerd", "k8s-node", "kvm-host"} <= set(ROLE_DEPLOYS)


def test_handlers_runc_first_and_wasmedge_only_with_its_shim() -> None:
    assert [h.name for h in handlers_for(("crun", "wasmedge"), {})] == ["runc", "crun"]
    with_shim = handlers_for(("crun", "wasmedge"), {"containerd-shim-wasmedge-v1": SHA})
    assert [h.name for h in with_shim] == ["runc", "crun", "wasmedge"]


def test_rendered_containerd_config_is_valid_toml_with_each_handler() -> None:
    handlers = [
        {"name": "runc", "runtime_type": "io.containerd.runc.v2", "binary_name": None},
        {"name": "kata", "runtime_type": "io.containerd.kata.v2", "config_path": "/opt/kata/c.toml"},
    ]
    doc = tomllib.loads(render_config(handlers))
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    runtimes = cri["containerd"]["runtimes"]
    assert runtimes["runc"]["options"] == {"SystemdCgroup": True}
    assert runtimes["kata"] == {"runtime_type": "io.containerd.kata.v2", "options": {"ConfigPath": "/opt/kata/c.toml"}}
    assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"


def test_registry_mirror_hosts_toml() -> None:
    doc = tomllib.loads(render_hosts_toml("docker.io", "registry.internal:5000"))
    assert doc["server"] == "https://registry-1.docker.io"
    assert doc["host"]["http://registry.internal:5000"]["capabilities"] == ["pull", "resolve"]


def test_hosts_block_lists_every_node_sorted_with_domain() -> None:
    settings = ConfigureSettings(hosts={"w1": "10.20.0.11", "cp": "10.20.0.10"}, domain="lab")
    assert hosts_block(settings) == "10.20.0.10 cp.lab cp\n10.20.0.11 w1.lab w1"


def test_debian_sources_and_kubernetes_repo_lines() -> None:
    assert "URIs: http://m/debian\nSuites: trixie trixie-updates\n" in debian_sources("http://m/debian/", "trixie")
    settings = ConfigureSettings(
        kubernetes_version="1.31.2",
        kubernetes_apt_repo="http://m/v{version}/deb/ /",
        kubernetes_apt_key="http://m/key.asc",
    )
    assert repo_line(settings) == "deb [signed-by=/etc/apt/keyrings/labdeploy-kubernetes.asc] http://m/v1.31/deb/ /\n"


def test_runtime_packages_include_runc_and_extras() -> None:
    settings = ConfigureSettings(runtimes=("crun", "wasmedge", "gvisor"), extra_packages=("jq",))
    assert packages(settings) == ["crun", "jq", "runc", "wasmedge"]
