"""Accelerator choice from CPU flags, the KVM device and a probe (all passed in as data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.errors import ConfigError
from deploy.providers.accel import choose_accel, cpu_virt_flag, cpuinfo_from_capabilities, probe_kvm

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx ept\n"
AMD = "processor\t: 0\nflags\t\t: fpu vme svm npt\n"
NESTED_PVM = "processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n"


def works(_device: Path) -> str | None:
    return None


def fails(_device: Path) -> str | None:
    return "KVM_CREATE_VM on /dev/kvm failed: Invalid argument"


@pytest.fixture
def device(tmp_path: Path) -> Path:
    dev = tmp_path / "kvm"
    dev.touch()
    return dev


def test_flags_are_read_from_the_flags_line() -> None:
    assert cpu_virt_flag(INTEL) == "vmx"
    assert cpu_virt_flag(AMD) == "svm"
    assert cpu_virt_flag(NESTED_PVM) is None
    assert cpu_virt_flag("model name\t: vmx svm lookalike\n") is None


def test_auto_picks_kvm_only_when_flags_device_and_probe_agree(device: Path) -> None:
    assert choose_accel("auto", cpuinfo=INTEL, device=device, probe=works) == ("kvm", None)
    assert choose_accel("auto", cpuinfo=AMD, device=device, probe=works) == ("kvm", None)


@pytest.mark.parametrize(
    ("cpuinfo", "probe", "why"),
    [
        (NESTED_PVM, works, "neither vmx nor svm"),
        (INTEL, fails, "KVM_CREATE_VM"),
    ],
)
def test_auto_falls_back_to_tcg_with_one_line_warning(device: Path, cpuinfo: str, probe: object, why: str) -> None:
    accel, warning = choose_accel("auto", cpuinfo=cpuinfo, device=device, probe=probe)  # type: ignore[arg-type]
    assert accel == "tcg"
    assert warning is not None
    assert why in warning
    assert "\n" not in warning


def test_auto_without_device_is_tcg(tmp_path: Path) -> None:
    accel, warning = choose_accel("auto", cpuinfo=INTEL, device=tmp_path / "missing", probe=works)
    assert accel == "tcg"
    assert warning is not None
    assert "does not exist" in warning


def test_kvm_where_it_cannot_work_is_a_config_error(device: Path) -> None:
    with pytest.raises(ConfigError, match="neither vmx nor svm") as err:
        choose_accel("kvm", cpuinfo=NESTED_PVM, device=device, probe=works)
    assert "accel: kvm" in str(err.value)


def test_tcg_is_taken_as_asked_and_unknown_values_refused(device: Path) -> None:
    assert choose_accel("tcg", cpuinfo=NESTED_PVM, device=device, probe=fails) == ("tcg", None)
    with pytest.raises(ConfigError, match="auto, kvm, tcg"):
        choose_accel("hvf", cpuinfo=INTEL, device=device, probe=works)


def test_probe_of_a_non_kvm_device_reports_why(tmp_path: Path) -> None:
    not_kvm = tmp_path / "plain-file"
    not_kvm.write_text("")
    reason = probe_kvm(not_kvm)
    assert reason is not None
    assert str(not_kvm) in reason


def test_this_host_gets_tcg_on_auto() -> None:
    """The real host: /dev/kvm exists but the CPU has no vmx/svm, so auto must pick TCG."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if cpu_virt_flag(cpuinfo) is not None:
        pytest.skip("this host's CPU has vmx/svm; the nested-host fallback cannot be shown here")
    assert choose_accel("auto")[0] == "tcg"
    with pytest.raises(ConfigError):
        choose_accel("kvm")


def test_remote_flags_come_from_capabilities_xml() -> None:
    caps = "<capabilities><host><cpu><feature name='vmx'/><feature name='pdpe1gb'/></cpu></host></capabilities>"
    assert cpu_virt_flag(cpuinfo_from_capabilities(caps)) == "vmx"
