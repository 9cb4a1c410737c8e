"""The VM-sandbox probe's parser and verdicts, from probe outputs captured as data fixtures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy.verify.vmsandbox import PREFIX, PROBE_COMMAND, VmSupport, failure_of, parse_probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vmsandbox"
NO_FLAG = "/proc/cpuinfo has neither vmx nor svm (nested virtualization is off)"


def support(name: str, node: str = "workers-1") -> VmSupport:
    return parse_probe(node, (FIXTURES / f"{name}.txt").read_text())


@pytest.mark.parametrize("name", ["nested-vmx", "amd-metal", "arm64"])
def test_a_node_with_kvm_and_hardware_virtualization_can_run_vm_sandboxes(name: str) -> None:
    assert support(name).reasons() == []
    assert failure_of([support(name)]) is None


def test_paravirtual_kvm_without_vmx_or_svm_cannot() -> None:
    found = support("pvm-host")
    assert (found.arch, found.kvm) == ("x86_64", "open")
    assert "hypervisor" in found.flags
    assert found.reasons() == [NO_FLAG]
    assert found.describe() == "workers-1: /dev/kvm open; CPU x86_64, a VM (hypervisor flag): neither vmx nor svm"


def test_flags_are_whole_words() -> None:
    text = "arch=x86_64\nkvm=open\nflags\t\t: fpu vmxx svm_lock nsvm\n"
    assert parse_probe("n", text).reasons() == [NO_FLAG]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no-kvm", "no /dev/kvm (no kvm module loaded, or no hardware virtualization)"),
        ("kvm-plain-file", "/dev/kvm is not a character device"),
        ("kvm-permission-dash",
         "/dev/kvm does not open read-write (dash: 1: cannot create /dev/kvm: Permission denied)"),
        ("kvm-permission-bash", "/dev/kvm does not open read-write (bash: line 1: /dev/kvm: Permission denied)"),
    ],
)
def test_dev_kvm_missing_or_not_openable(name: str, reason: str) -> None:
    assert support(name).reasons()[0] == reason


def test_no_kvm_and_no_flag_gives_both_reasons() -> None:
    assert support("no-kvm").reasons() == ["no /dev/kvm (no kvm module loaded, or no hardware virtualization)", NO_FLAG]


def test_empty_output_is_not_taken_for_a_capable_node() -> None:
    assert parse_probe("n", "").reasons() == ["the probe reported nothing about /dev/kvm", NO_FLAG]


def test_failure_names_each_unable_node_and_what_kata_needs() -> None:
    nodes = [support("nested-vmx", "workers-1"), support("pvm-host", "workers-2"), support("no-kvm", "workers-3")]
    failure = failure_of(nodes, "kata", reproduce="ssh workers-2 ls -l /dev/kvm")
    assert failure is not None
    assert failure.final  # retrying cannot give a node KVM
    assert failure.what == (
        PREFIX + f"workers-2: {NO_FLAG}; workers-3: no /dev/kvm (no kvm module loaded, or no hardware "
        f"virtualization), {NO_FLAG}"
    )
    assert str(failure).startswith("this host cannot run VM sandboxes: workers-2: ")
    assert failure.expected.startswith("kata needs /dev/kvm that root opens read-write and a CPU with vmx or svm")
    assert "workers-1: /dev/kvm open; CPU x86_64, a VM (hypervisor flag): vmx" in failure.seen
    assert "reproduce: ssh workers-2 ls -l /dev/kvm" in str(failure)


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_probe_never_creates_a_missing_dev_kvm(shell: str, tmp_path: Path) -> None:
    # the probe opens /dev/kvm with <>, which creates missing files: its [ -c ] guard must come first
    script = PROBE_COMMAND.replace("/dev/kvm", str(tmp_path / "kvm"))
    out = subprocess.run([shell, "-c", script], capture_output=True, text=True, check=True).stdout
    assert parse_probe("n", out).kvm == "missing"
    assert not (tmp_path / "kvm").exists()
