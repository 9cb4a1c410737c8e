"""A benchmark whose peer (ansible-playbook, kcli, vagrant) is missing says how to install it, in one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import noop_redeploy  # noqa: E402
import peers  # noqa: E402
import vm_scale  # noqa: E402
from vm_scale_common import Skip  # noqa: E402


@pytest.fixture
def empty_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The benchmark's venv bin directory and PATH hold none of the peers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setattr(peers, "VENV_BIN", bin_dir)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_each_missing_peer_names_make_bench_and_its_own_install_command(empty_venv: Path) -> None:
    assert peers.ANSIBLE.missing() == (
        f"ansible-playbook is not installed (in {empty_venv}): run `make bench`, "
        f"or `{peers.ANSIBLE.install}`"
    )
    assert peers.ANSIBLE.install.endswith("pip install ansible-core")
    assert peers.KCLI.install.endswith("pip install kcli")
    vagrant = peers.VAGRANT.missing()
    assert vagrant == (
        "vagrant is not installed (on PATH): run `make bench`, or `sudo apt-get install vagrant vagrant-libvirt`"
    )


def test_a_present_peer_is_not_missing(empty_venv: Path) -> None:
    program = empty_venv / "ansible-playbook"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert peers.ANSIBLE.missing() is None
    assert peers.ANSIBLE.path() == program


@pytest.mark.usefixtures("empty_venv")
def test_noop_redeploy_without_ansible_says_so_and_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert noop_redeploy.main(["--sizes", "", "--max-seconds", "60"]) == 3
    out = capsys.readouterr().out
    skip = [line for line in out.splitlines() if line.startswith("skip ansible:")]
    assert skip == [f"skip ansible: {peers.ANSIBLE.missing()}"]
    assert "Traceback" not in out


@pytest.mark.usefixtures("empty_venv")
def test_running_a_missing_ansible_is_its_message_not_file_not_found(tmp_path: Path) -> None:
    lab = noop_redeploy.Lab([], tmp_path / "known_hosts", noop_redeploy.CHROOT_SETTINGS, "chroot")
    with pytest.raises(RuntimeError, match=r"run `make bench`, or `.*pip install ansible-core`"):
        noop_redeploy.run_ansible(lab, tmp_path / "playbook.yml")


@pytest.mark.usefixtures("empty_venv")
def test_vm_scale_skips_missing_kcli_and_vagrant_with_their_install_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    skipped: dict[str, str] = {}
    bench: Any = None  # the availability checks look at nothing of the bench before the binaries
    vm_scale._check_tools(["kcli", "vagrant"], bench, skipped)
    assert skipped == {"kcli": peers.KCLI.missing(), "vagrant": peers.VAGRANT.missing()}
    out = capsys.readouterr().out.splitlines()
    assert out == [f"skip kcli: {skipped['kcli']}", f"skip vagrant: {skipped['vagrant']}"]


@pytest.mark.usefixtures("empty_venv")
def test_the_vm_scale_tools_raise_skip_not_file_not_found() -> None:
    for tool in ("kcli", "vagrant"):
        with pytest.raises(Skip, match="run `make bench`"):
            vm_scale.TOOLS[tool].available(None)
