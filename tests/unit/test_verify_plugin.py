"""The in-process pytest plugin: user files, fixtures, and failures that point at the user's line."""

from __future__ import annotations

import textwrap
from pathlib import Path

from deploy.verify import VerifyEntry, run_verify
from deploy.verify.plugin import VSPHERE_SKIP

USER_TESTS = """\
def test_lab_fixture(lab):
    assert lab.runtimes == ("runc",)


def test_arithmetic_is_wrong():
    expected = 4
    assert 2 + 3 == expected


def test_vsphere(vsphere):
    pass


def test_k8s_without_kubeconfig(k8s):
    pass
"""


def _run(tmp_path: Path, entries: list[VerifyEntry]):  # type: ignore[no-untyped-def]
    return run_verify(
        [],
        entries,
        known_hosts=tmp_path / "known_hosts",
        kubeconfig=None,
        runtimes=("runc",),
        layers=set(),
        out_dir=tmp_path / "out",
        lab_file_dir=tmp_path,
    )


def test_user_file_runs_with_lab_fixtures_and_failures_point_at_user_line(tmp_path: Path) -> None:
    (tmp_path / "checks").mkdir()
    user = tmp_path / "checks" / "extra.py"
    user.write_text(USER_TESTS)
    report = _run(tmp_path, [VerifyEntry(name="extra", pytest="checks/extra.py")])
    by_name = {r.name: r for r in report.results}
    assert by_name["test_lab_fixture"].outcome == "passed"
    failed = by_name["test_arithmetic_is_wrong"]
    assert failed.outcome == "failed"
    assert failed.layer == "user"
    line = USER_TESTS.splitlines().index("    assert 2 + 3 == expected") + 1
    assert f"{user}:{line}" in failed.failure or f"extra.py:{line}" in failed.failure
    assert "deploy/verify" not in failed.failure  # no framework frames
    assert "extra.py:5" in failed.reproduce  # the test's definition line
    assert by_name["test_vsphere"].outcome == "skipped"
    assert VSPHERE_SKIP in by_name["test_vsphere"].failure
    assert by_name["test_k8s_without_kubeconfig"].outcome == "skipped"
    assert (report.passed, report.failed, report.skipped) == (1, 1, 2)
    assert (tmp_path / "out" / "junit.xml").exists()
    assert (tmp_path / "out" / "report.html").exists()


def test_missing_user_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    report = _run(tmp_path, [VerifyEntry(name="gone", pytest="checks/nope.py")])
    assert report.failed == 1
    assert str(tmp_path / "checks" / "nope.py") in report.results[0].failure


def test_entry_naming_no_node_fails(tmp_path: Path) -> None:
    report = _run(tmp_path, [VerifyEntry(name="api", hosts="control", run="true")])
    (result,) = report.results
    assert result.outcome == "failed"
    assert "hosts: 'control' matches no node" in result.failure


def test_project_conftest_is_not_picked_up(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("raise RuntimeError('project conftest loaded')\n")
    (tmp_path / "t.py").write_text(
        textwrap.dedent("""\
        def test_ok():
            pass
    """)
    )
    report = _run(tmp_path, [VerifyEntry(name="t", pytest="t.py")])
    assert [(r.name, r.outcome) for r in report.results] == [("test_ok", "passed")]
