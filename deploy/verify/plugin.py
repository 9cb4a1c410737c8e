"""The pytest plugin that turns a lab into test items and gives user tests their fixtures.

Run in-process by :func:`deploy.verify.runner.run_verify` with ``pytest.main(..., plugins=[plugin])``.
Built-in checks and ``verify:`` shell entries become :class:`CheckItem` s under a sentinel file;
user pytest files named in ``verify:`` are collected as usual and get the fixtures ``lab``,
``host`` (one pytest-testinfra host per node), ``k8s`` and ``vsphere``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.verify.checks.pods import CheckSkipped
from deploy.verify.context import Check, VerifyContext
from deploy.verify.model import CheckResult, VerifyTarget
from deploy.verify.remote import testinfra_host
from deploy.verify.retry import CheckFailure, retry

SENTINEL = "lab.labverify"
VSPHERE_SKIP = (
    "the vsphere fixture needs the vSphere provider, which has not landed yet; "
    "it will yield a pyvmomi ServiceInstance then"
)


class CheckItem(pytest.Item):
    """One built-in check or ``verify:`` entry on one node."""

    def __init__(self, *, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.user_properties += [
            ("layer", check.layer),
            ("node", check.node or ""),
            ("check", check.name),
            ("reproduce", check.reproduce),
        ]

    def runtest(self) -> None:
        __tracebackhide__ = True
        try:
            retry(self.check.run, self.check.deadline)
        except CheckSkipped as skip:
            pytest.skip(str(skip))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CheckFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.check.test_id


class LabFile(pytest.File):
    """The sentinel file under which the lab's generated checks are collected."""

    checks: list[Check]

    def collect(self) -> Iterator[CheckItem]:
        for check in self.checks:
            yield CheckItem.from_parent(self, name=check.test_id, check=check)


def _capped(check: Check, max_wait: float | None) -> Check:
    """``check`` with its retry deadline cut to ``max_wait`` seconds (fail fast on a settled lab)."""
    if max_wait is None or check.deadline.timeout <= max_wait:
        return check
    return dataclasses.replace(check, deadline=dataclasses.replace(check.deadline, timeout=max_wait))


class LabPlugin:
    """Holds one verify run's context; collects its checks and records every outcome."""

    def __init__(self, ctx: VerifyContext, checks: list[Check]) -> None:
        self.ctx = ctx
        self.checks = [_capped(c, ctx.max_wait) for c in checks]
        self.results: dict[str, CheckResult] = {}

    # -- collection -------------------------------------------------------------------------
    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "hosts(selector): run a host test on these nodes (group, node or all)")

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> LabFile | None:
        if file_path.name != SENTINEL:
            return None
        lab_file = LabFile.from_parent(parent, path=file_path)
        lab_file.checks = self.checks
        return lab_file

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "host" not in metafunc.fixturenames:
            return
        marker = metafunc.definition.get_closest_marker("hosts")
        targets = self.ctx.select(marker.args[0] if marker else "all")
        metafunc.parametrize("host", targets, indirect=True, ids=[t.name for t in targets])

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            if isinstance(item, CheckItem):
                continue
            callspec = getattr(item, "callspec", None)
            target = callspec.params.get("host") if callspec else None
            node = target.name if isinstance(target, VerifyTarget) else ""
            path, line, _ = item.reportinfo()
            where = f"{path}:{(line or 0) + 1}"
            item.user_properties += [
                ("layer", "user"),
                ("node", node),
                ("check", item.name),
                ("reproduce", f"see the user test at {where}"),
            ]

    # -- fixtures for user tests -----------------------------------------------------------------
    @pytest.fixture(scope="session")
    def lab(self) -> VerifyContext:
        """The lab being verified: targets, entries, runtimes, cluster expectations."""
        return self.ctx

    @pytest.fixture
    def host(self, request: pytest.FixtureRequest) -> Any:
        """A pytest-testinfra host on one node, over the lab's key with the recorded host key."""
        __tracebackhide__ = True
        target: VerifyTarget = request.param
        return testinfra_host(self.ctx.shell(target))

    @pytest.fixture(scope="session")
    def k8s(self) -> Any:
        """The official kubernetes ``ApiClient`` on the lab's kubeconfig."""
        if self.ctx.kubeconfig is None:
            pytest.skip("the lab has no kubeconfig (no kubernetes: section and no --kubeconfig)")
        return self.ctx.api()

    @pytest.fixture(scope="session")
    def vsphere(self) -> Any:
        """A pyvmomi ServiceInstance of the lab's vCenter (not yet available)."""
        pytest.skip(VSPHERE_SKIP)

    # -- results -----------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        previous = self.results.get(report.nodeid)
        seconds = report.duration + (previous.seconds if previous else 0.0)
        outcome = _outcome(report, previous)
        failure = previous.failure if previous and previous.failure else ""
        if report.outcome in ("failed", "skipped") and not failure:
            failure = _failure_text(report)
        self.results[report.nodeid] = CheckResult(
            name=str(props.get("check", report.nodeid)),
            layer=str(props.get("layer", "user")),
            node=str(props.get("node") or "") or None,
            outcome=outcome,
            seconds=round(seconds, 3),
            failure=failure,
            reproduce=str(props.get("reproduce", "")) if outcome != "passed" else "",
            nodeid=report.nodeid,
        )

    def ordered_results(self) -> list[CheckResult]:
        return list(self.results.values())


def _outcome(report: pytest.TestReport, previous: CheckResult | None) -> str:
    if previous and previous.outcome in ("failed", "error", "skipped"):
        return previous.outcome
    if report.outcome == "failed":
        return "failed" if report.when == "call" else "error"
    if report.outcome == "skipped":
        return "skipped"
    return "passed"


def _failure_text(report: pytest.TestReport) -> str:
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return report.longreprtext
