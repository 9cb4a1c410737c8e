"""tests/conftest.py: under CI=true a skipped vm test fails the run; elsewhere it stays a skip."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CASES = """
import pytest

@pytest.mark.vm
def test_boots_a_vm():
    pytest.skip("no /dev/kvm and TCG disabled")

@pytest.fixture
def needs_libvirtd():
    pytest.skip("libvirtd is not running")

@pytest.mark.vm
def test_skips_in_its_fixture(needs_libvirtd):
    pass

@pytest.mark.vm
@pytest.mark.xfail(reason="known bug")
def test_expected_failure():
    raise AssertionError

def test_plain_skip_is_fine():
    pytest.skip("not a vm test")

@pytest.mark.vm
def test_vm_that_runs():
    pass
"""
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    vm: boots real virtual machines\n"


@pytest.fixture
def cases(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makepyfile(test_cases=CASES)
    return pytester


@pytest.mark.parametrize("value", ["true"])
def test_in_ci_a_skipped_vm_test_fails_the_run(
    cases: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    result = cases.runpytest("-p", "tests.conftest", "-rA")
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*vm test skipped in CI (CI=true), which fails the run: Skipped: no /dev/kvm and TCG disabled*",
            "*vm test skipped in CI (CI=true), which fails the run: Skipped: libvirtd is not running*",
        ]
    )


@pytest.mark.parametrize("value", [None, "false"])
def test_outside_ci_a_skipped_vm_test_is_a_skip(
    cases: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    result = cases.runpytest("-p", "tests.conftest")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
