"""The configure driver against a real sshd (a trixie chroot on loopback): real pyinfra, real apt."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deploy.configure.driver import ConfigureResult, HostTarget, configure
from deploy.configure.settings import ConfigureSettings, validate_settings
from deploy.errors import StageError
from deploy.providers.base import SshEndpoint
from tests.integration.configure_fixtures import ChrootHost, chroot_host, free_port, hello_wasm

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("converged")]
__all__ = ["chroot_host"]

RUNTIMES = ConfigureSettings(runtimes=("runc", "crun", "wasmedge"))


@pytest.fixture(scope="module")
def converged(chroot_host: ChrootHost) -> tuple[ConfigureResult, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    result = configure([chroot_host.target], RUNTIMES, known_hosts=chroot_host.known_hosts, on_event=events.append)
    return result, events


def test_first_pass_installs_and_second_pass_changes_nothing(
    converged: tuple[ConfigureResult, list[dict[str, Any]]], chroot_host: ChrootHost
) -> None:
    result, events = converged
    assert "packages" in result.changed[chroot_host.target.name]
    assert result.recheck is not None
    assert [op.op for op in result.recheck[chroot_host.target.name].ops if op.changed] == []
    ops = [e for e in events if e["event"] == "op"]
    assert {(e["pass"], e["op"]) for e in ops} >= {(1, "packages"), (2, "packages")}
    assert all(e["ok"] and e["seconds"] >= 0 for e in ops)
    status, out, _ = chroot_host.run("dpkg-query -W -f '${Status}\\n' crun runc wasmedge")
    assert status == 0
    assert out.split("\n")[:3] == ["install ok installed"] * 3


def test_wasmedge_runs_a_module_built_from_wat(chroot_host: ChrootHost) -> None:
    (chroot_host.root / "tmp/hello.wasm").write_bytes(hello_wasm("hello from wasm\n"))
    status, out, err = chroot_host.run("wasmedge /tmp/hello.wasm")
    assert (status, out) == (0, "hello from wasm\n"), err


def test_missing_package_fails_clearly_and_rerun_converges(chroot_host: ChrootHost) -> None:
    broken = ConfigureSettings(runtimes=RUNTIMES.runtimes, extra_packages=("labdeploy-no-such-package",))
    with pytest.raises(StageError) as caught:
        configure([chroot_host.target], broken, known_hosts=chroot_host.known_hosts, idempotence_check=False).check()
    assert caught.value.host == chroot_host.target.name
    assert "'packages' failed" in caught.value.message
    assert "labdeploy-no-such-package" in caught.value.message
    fixed = configure([chroot_host.target], RUNTIMES, known_hosts=chroot_host.known_hosts)
    assert fixed.changed == {}


def test_deploy_needing_systemd_on_a_host_without_it_names_the_cause(chroot_host: ChrootHost) -> None:
    target = HostTarget(chroot_host.target.name, chroot_host.target.ssh, roles=("containerd",))
    with pytest.raises(StageError) as caught:
        configure([target], RUNTIMES, known_hosts=chroot_host.known_hosts).check()
    assert caught.value.host == chroot_host.target.name
    assert "operation 'containerd running' of deploy 'containerd'" in caught.value.message
    assert "not been booted with systemd" in caught.value.message


def test_unreachable_host_is_a_stage_error(chroot_host: ChrootHost) -> None:
    ssh = chroot_host.target.ssh
    gone = HostTarget("gone", SshEndpoint("127.0.0.1", free_port(), "root", ssh.key_path), roles=("runtimes",))
    with pytest.raises(StageError) as caught:
        configure([gone], RUNTIMES, known_hosts=chroot_host.known_hosts).check()
    assert caught.value.host == "gone"
    assert "cannot reach over ssh" in caught.value.message


def test_unknown_host_key_is_refused(chroot_host: ChrootHost, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(StageError) as caught:
        configure([chroot_host.target], RUNTIMES, known_hosts=empty).check()
    assert "cannot reach over ssh" in caught.value.message


def test_runtime_files_from_the_bundle_are_uploaded_then_left_alone(chroot_host: ChrootHost, tmp_path: Path) -> None:
    """gVisor's files with ``bundle: {source: build}``: put from the host's store, no files mirror involved."""
    files = {}
    for name in ("runsc", "containerd-shim-runsc-v1"):
        path = tmp_path / name
        path.write_bytes(f"#!/bin/sh\necho {name} from the bundle\n".encode())
        files[name] = (str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    settings = replace(RUNTIMES, runtimes=("runc", "gvisor"), bundle_provides=frozenset(files), bundle_files=files)
    assert validate_settings(settings, {chroot_host.target.name: ("runtimes",)}) == []
    target = HostTarget(chroot_host.target.name, chroot_host.target.ssh, roles=("runtimes",))
    first = configure([target], settings, known_hosts=chroot_host.known_hosts).check()
    assert {"gvisor: runsc from the bundle", "gvisor: containerd-shim-runsc-v1 from the bundle"} <= set(
        first.changed[target.name])
    status, out, err = chroot_host.run("/usr/local/bin/runsc; stat -c %a /usr/local/bin/containerd-shim-runsc-v1")
    assert (status, out) == (0, "runsc from the bundle\n755\n"), err
    assert configure([target], settings, known_hosts=chroot_host.known_hosts).check().changed == {}
