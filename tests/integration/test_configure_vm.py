"""The configure stage on a real TCG VM from the trixie image: containerd handlers, WasmEdge, faults.

One VM for the module. Its image has containerd and wasmedge baked in (apt under TCG is slow);
crun is not in the image, so the first pass must install it through apt for real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from deploy.bundle import ArtifactKey, BundleStore, catalog, oci
from deploy.bundle import build as bundle_build
from deploy.bundle.images import ImageRecipe
from deploy.configure.driver import ConfigureResult, HostTarget, configure
from deploy.configure.settings import ConfigureSettings
from deploy.errors import StageError
from deploy.providers.base import SshEndpoint
from tests.integration.configure_fixtures import (
    TcgVm,
    boot_tcg_vm,
    busybox_oci_archive,
    free_port,
    hello_wasm,
    static_busybox,
    stop_tcg_vm,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800), pytest.mark.usefixtures("converged")]

SETTINGS = ConfigureSettings(hosts={"node1": "10.0.2.15", "node2": "10.0.2.16"}, runtimes=("runc", "crun", "wasmedge"))
IMAGE = "localhost/labdeploy/busybox-test:1"
NS = "labtest"


@dataclass(frozen=True)
class Converged:
    result: ConfigureResult
    events: list[dict[str, Any]]
    seconds: float
    crun_before: str  # dpkg status of crun before the first pass


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcgVm]:
    machine = boot_tcg_vm(tmp_path_factory.mktemp("configure-vm"))
    yield machine
    stop_tcg_vm(machine)


@pytest.fixture(scope="session")
def converged(vm: TcgVm) -> Converged:
    _, crun_before, _ = vm.run("dpkg-query -W -f '${Status}' crun 2>/dev/null; true")
    events: list[dict[str, Any]] = []
    start = time.monotonic()
    result = configure([vm.target], SETTINGS, known_hosts=vm.known_hosts, on_event=events.append)
    return Converged(result, events, time.monotonic() - start, crun_before)


def test_first_pass_installs_and_second_pass_changes_nothing(converged: Converged, vm: TcgVm) -> None:
    result, events = converged.result, converged.events
    changed = result.changed["node1"]
    assert {"packages", "containerd config", "kernel modules", "kubernetes sysctls", "smoke test image"} <= set(changed)
    assert result.recheck is not None
    assert result.recheck is not result.hosts
    assert result.recheck["node1"].changed == []
    assert [e["changed"] for e in events if e["event"] == "pass"] == [len(changed), 0]
    assert converged.crun_before != "install ok installed"  # crun came from configure, not the image
    status, out, _ = vm.run("dpkg-query -W -f '${Status}\\n' crun; lsmod | grep -c -E '^(overlay|br_netfilter) '")
    assert (status, out.split()[-1]) == (0, "2")
    assert out.startswith("install ok installed")
    status, out, _ = vm.run("sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; grep node2 /etc/hosts")
    assert out.split("\n")[:3] == ["1", "1", "10.0.2.16 node2"]


def test_busybox_image_runs_under_each_handler(vm: TcgVm, tmp_path: Path) -> None:
    status, dump, err = vm.run("containerd config dump")
    assert status == 0, err
    binaries = {"runc": "/usr/sbin/runc", "crun": "/usr/bin/crun"}
    for handler, binary in binaries.items():
        assert f"containerd.runtimes.{handler}]" in dump
        assert f'BinaryName = "{binary}"' in dump or handler == "runc"
    archive = tmp_path / "img.tar"
    archive.write_bytes(busybox_oci_archive(static_busybox(tmp_path), IMAGE))
    _upload(vm, archive, "/tmp/img.tar")
    status, out, err = vm.run(f"ctr -n {NS} image import /tmp/img.tar && ctr -n {NS} image ls -q")
    assert status == 0, err
    assert IMAGE in out.split()
    for handler, binary in binaries.items():
        command = f"ctr -n {NS} run --rm --runc-binary {binary} {IMAGE} t-{handler} /bin/busybox echo hello-{handler}"
        status, out, err = vm.run(command)
        assert (status, out.strip()) == (0, f"hello-{handler}"), err


def test_smoke_image_for_verify_runs_under_each_handler(vm: TcgVm) -> None:
    """The image the verify stage's runtime checks use, run exactly as they run it."""
    for handler, binary in (("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")):
        command = (
            f"ctr -n k8s.io run --rm --runc-binary {binary} localhost/labdeploy/smoke:latest "
            f"labdeploy-test-{handler} /bin/echo labdeploy-smoke-ok"
        )
        status, out, err = vm.run(command)
        assert (status, out) == (0, "labdeploy-smoke-ok\n"), err


def test_wasmedge_runs_a_module_built_from_wat(vm: TcgVm, tmp_path: Path) -> None:
    (tmp_path / "hello.wasm").write_bytes(hello_wasm("hello from wasm\n"))
    _upload(vm, tmp_path / "hello.wasm", "/tmp/hello.wasm")
    status, out, err = vm.run("wasmedge /tmp/hello.wasm")
    assert (status, out) == (0, "hello from wasm\n"), err


def test_handler_without_binary_fails_then_converges_after_fix(vm: TcgVm) -> None:
    assert vm.run("mv /usr/bin/crun /usr/bin/crun.away")[0] == 0
    try:
        with pytest.raises(StageError) as caught:
            configure([vm.target], SETTINGS, known_hosts=vm.known_hosts).check()
    finally:
        assert vm.run("mv /usr/bin/crun.away /usr/bin/crun")[0] == 0
    assert (caught.value.stage, caught.value.host) == ("configure", "node1")
    assert "'handler crun binary' failed" in caught.value.message
    assert "needs /usr/bin/crun, which is not on the node" in caught.value.message
    assert configure([vm.target], SETTINGS, known_hosts=vm.known_hosts).changed == {}


def test_missing_package_fails_then_converges(vm: TcgVm) -> None:
    broken = replace(SETTINGS, extra_packages=("labdeploy-no-such-package",))
    with pytest.raises(StageError) as caught:
        configure([vm.target], broken, known_hosts=vm.known_hosts).check()
    assert (caught.value.stage, caught.value.host) == ("configure", "node1")
    assert "operation 'packages' failed on node1" in caught.value.message
    assert "Unable to locate package labdeploy-no-such-package" in caught.value.message
    assert configure([vm.target], SETTINGS, known_hosts=vm.known_hosts).changed == {}


def test_unreachable_host_fails_then_rerun_is_one_noop_pass(vm: TcgVm) -> None:
    ssh = vm.target.ssh
    gone = HostTarget("node1", SshEndpoint("127.0.0.1", free_port(), ssh.user, ssh.key_path), vm.target.roles)
    with pytest.raises(StageError) as caught:
        configure([gone], SETTINGS, known_hosts=vm.known_hosts).check()
    assert (caught.value.stage, caught.value.host) == ("configure", "node1")
    assert "cannot reach over ssh" in caught.value.message
    assert f"root@127.0.0.1:{gone.ssh.port}" in caught.value.message
    events: list[dict[str, Any]] = []
    result = configure([vm.target], SETTINGS, known_hosts=vm.known_hosts, on_event=events.append)
    assert result.changed == {}
    assert [e["pass"] for e in events if e["event"] == "pass"] == [1]  # converged: no second pass needed
    assert result.recheck is result.hosts


def _upload(vm: TcgVm, local: Path, remote: str) -> None:
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(vm.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh = vm.target.ssh
    client.connect(ssh.host, ssh.port, ssh.user, key_filename=str(ssh.key_path), look_for_keys=False, allow_agent=False)
    try:
        client.open_sftp().put(str(local), remote)
    finally:
        client.close()


@pytest.fixture(scope="session")
def bundle_images() -> dict[str, tuple[str, str]]:
    """Every image a 1.36 lab needs, in the machine's real store (built once per machine, then cached)."""
    store = BundleStore()
    want = bundle_build.wanted("1.36", ["runc"], store)
    lines = bundle_build.build(want, store)
    assert [line.text() for line in lines if line.outcome == "failed"] == []
    found: dict[str, tuple[str, str]] = {}
    for recipe in want.recipes:
        artifact = store.get(recipe.key) if isinstance(recipe, ImageRecipe) else None
        if artifact is not None:
            found.update({name: (str(artifact.path), digest) for name, digest in oci.manifests(artifact.path).items()})
    return found


def test_bundle_images_import_pinned_under_the_names_kubeadm_lists(
        vm: TcgVm, bundle_images: dict[str, tuple[str, str]]) -> None:
    """The issue's proof: kubeadm (the bundle's, on the node) lists what containerd has, pinned, offline."""
    store = BundleStore()
    for key, remote in ((ArtifactKey("kubeadm", "v1.36.3"), "/usr/local/bin/kubeadm"),
                        (catalog.crictl().key, "/usr/local/bin/crictl")):
        artifact = store.get(key)
        assert artifact is not None, f"{key} is not in the bundle"
        _upload(vm, artifact.path, remote)
        assert vm.run(f"chmod 755 {remote}")[0] == 0
    settings = replace(SETTINGS, bundle_images=bundle_images)
    first = configure([vm.target], settings, known_hosts=vm.known_hosts).check()
    assert {f"image {name}" for name in bundle_images} <= set(first.changed["node1"])
    assert first.recheck is not None
    assert first.recheck["node1"].changed == []  # the second pass finds every image at its digest
    status, out, err = vm.run("kubeadm config images list --kubernetes-version v1.36.3")
    assert status == 0, err
    expected = out.split()
    assert len(expected) == 7
    status, out, err = vm.run("crictl --runtime-endpoint unix:///run/containerd/containerd.sock images -o json")
    assert status == 0, err
    seen = {tag: image.get("pinned", False) for image in json.loads(out)["images"] for tag in image["repoTags"]}
    assert {name: seen.get(name) for name in expected} == dict.fromkeys(expected, True)
    assert configure([vm.target], settings, known_hosts=vm.known_hosts).changed == {}
