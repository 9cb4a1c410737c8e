"""The configure stage on a real TCG VM from the trixie image: containerd handlers, WasmEdge, faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.configure.driver import ConfigureResult, configure
from deploy.configure.settings import ConfigureSettings
from deploy.errors import StageError
from tests.integration.configure_fixtures import (
    TcgVm,
    boot_tcg_vm,
    busybox_oci_archive,
    hello_wasm,
    static_busybox,
    stop_tcg_vm,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800), pytest.mark.usefixtures("converged")]

SETTINGS = ConfigureSettings(hosts={"node1": "10.0.2.15"}, runtimes=("runc", "crun", "wasmedge"))
IMAGE = "docker.io/library/labdeploy-busybox:1"


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcgVm]:
    machine = boot_tcg_vm(tmp_path_factory.mktemp("configure-vm"))
    yield machine
    stop_tcg_vm(machine)


@pytest.fixture(scope="module")
def converged(vm: TcgVm) -> tuple[ConfigureResult, list[dict[str, Any]], float]:
    events: list[dict[str, Any]] = []
    start = time.monotonic()
    result = configure([vm.target], SETTINGS, known_hosts=vm.known_hosts, on_event=events.append)
    return result, events, time.monotonic() - start


def test_converges_and_second_pass_changes_nothing(
    converged: tuple[ConfigureResult, list[dict[str, Any]], float],
) -> None:
    result, events, _ = converged
    changed = result.changed["node1"]
    assert {"containerd package", "containerd config", "kernel modules"} <= set(changed)
    assert result.recheck is not None
    assert result.recheck["node1"].changed == []
    assert [e["changed"] for e in events if e["event"] == "pass"] == [len(changed), 0]


def test_busybox_image_runs_under_each_handler(vm: TcgVm, tmp_path: Path) -> None:
    archive = busybox_oci_archive(static_busybox(tmp_path), IMAGE)
    (tmp_path / "img.tar").write_bytes(archive)
    _upload(vm, tmp_path / "img.tar", "/tmp/img.tar")
    status, out, err = vm.run("ctr -n labtest image import /tmp/img.tar && ctr -n labtest image ls -q")
    assert status == 0, err
    assert IMAGE in out
    for handler, binary in (("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")):
        status, out, err = vm.run(
            f"ctr -n labtest run --rm --runc-binary {binary} {IMAGE} t-{handler} /bin/busybox echo hello-{handler}"
        )
        assert (status, out.strip()) == (0, f"hello-{handler}"), err
    status, out, _ = vm.run("containerd config dump")
    assert "runtimes.crun]" in out
    assert 'BinaryName = "/usr/bin/crun"' in out


def test_wasmedge_runs_a_module_built_from_wat(vm: TcgVm, tmp_path: Path) -> None:
    (tmp_path / "hello.wasm").write_bytes(hello_wasm("hello from wasm\n"))
    _upload(vm, tmp_path / "hello.wasm", "/tmp/hello.wasm")
    status, out, err = vm.run("wasmedge /tmp/hello.wasm")
    assert (status, out) == (0, "hello from wasm\n"), err


def test_handler_without_binary_fails_then_converges_after_fix(vm: TcgVm) -> None:
    assert vm.run("mv /usr/bin/crun /usr/bin/crun.away")[0] == 0
    with pytest.raises(StageError) as caught:
        configure([vm.target], SETTINGS, known_hosts=vm.known_hosts)
    assert caught.value.host == "node1"
    assert "'handler crun binary' failed" in caught.value.message
    assert "needs /usr/bin/crun, which is not on the node" in caught.value.message
    assert vm.run("mv /usr/bin/crun.away /usr/bin/crun")[0] == 0
    assert configure([vm.target], SETTINGS, known_hosts=vm.known_hosts).changed == {}


def test_missing_package_fails_then_converges(vm: TcgVm) -> None:
    broken = ConfigureSettings(**{**SETTINGS.__dict__, "extra_packages": ("labdeploy-no-such-package",)})
    with pytest.raises(StageError) as caught:
        configure([vm.target], broken, known_hosts=vm.known_hosts, idempotence_check=False)
    assert "Unable to locate package labdeploy-no-such-package" in caught.value.message
    assert configure([vm.target], SETTINGS, known_hosts=vm.known_hosts).changed == {}


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
