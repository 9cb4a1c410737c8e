"""``run_verify``: run the built-in checks, ``verify:`` entries and user pytest files in-process."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from deploy.errors import VerificationError
from deploy.verify.checks import builtin_checks
from deploy.verify.context import VerifyContext
from deploy.verify.entries import checks as entry_checks
from deploy.verify.model import CheckResult, ClusterExpect, VerifyEntry, VerifyReport, VerifyTarget
from deploy.verify.plugin import SENTINEL, LabPlugin
from deploy.verify.reports import write_reports

# installed pytest plugins that must not take part: testinfra's own `host` fixture, kmock's server
BLOCKED_PLUGINS = (
    "asyncio",
    "testinfra",
    "pytest11.testinfra",
    "kmock",
    "cacheprovider",
    "hypothesispytest",
    "typeguard",
)


def run_verify(
    targets: Iterable[VerifyTarget],
    entries: Iterable[VerifyEntry],
    *,
    known_hosts: Path,
    kubeconfig: Path | None,
    runtimes: tuple[str, ...],
    layers: set[str],
    out_dir: Path,
    junit: Path | None = None,
    html: Path | None = None,
    lab_file_dir: Path,
    cluster: ClusterExpect | None = None,
    max_wait: float | None = None,
) -> VerifyReport:
    """Verify a lab; the report's ``failed`` > 0 means it does not work as planned.

    ``layers`` picks the built-in layers (nodes, runtimes, kubernetes, cilium, istio, runtimeclass,
    gpu); ``verify:`` entries always run. Raises VerificationError only when pytest itself breaks.
    """
    ctx = VerifyContext(
        tuple(targets),
        tuple(entries),
        known_hosts,
        kubeconfig,
        tuple(runtimes),
        frozenset(layers),
        lab_file_dir,
        cluster or ClusterExpect(),
        max_wait,
    )
    start = time.monotonic()
    try:
        plugin = LabPlugin(ctx, builtin_checks(ctx) + entry_checks(ctx))
        user_files, missing = _user_files(ctx)
        _run_pytest(plugin, user_files, out_dir)
        results = plugin.ordered_results() + missing
    finally:
        ctx.close()
    report = VerifyReport(results=results, seconds=time.monotonic() - start)
    write_reports(report, out_dir, junit=junit, html_path=html)
    return report


def _user_files(ctx: VerifyContext) -> tuple[list[Path], list[CheckResult]]:
    found: list[Path] = []
    missing: list[CheckResult] = []
    for entry in ctx.entries:
        if entry.pytest is None:
            continue
        path = (ctx.lab_file_dir / entry.pytest).resolve()
        if path.is_file():
            found.append(path)
        else:
            missing.append(
                CheckResult(
                    entry.name,
                    "user",
                    None,
                    "error",
                    0.0,
                    failure=f"pytest file {entry.pytest!r} not found: expected {path}",
                    reproduce=f"ls {path}",
                )
            )
    return found, missing


def _run_pytest(plugin: LabPlugin, user_files: list[Path], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="labdeploy-verify-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")
        (root / SENTINEL).write_text("# the lab's generated checks are collected from here\n")
        args = [
            "-c",
            str(root / "pytest.ini"),
            "--rootdir",
            str(root),
            "--confcutdir",
            str(root),
            "--import-mode=importlib",
            "--noconftest",
            "--tb=short",
            "-q",
            "-p",
            "no:randomly",
        ]
        for name in BLOCKED_PLUGINS:
            args += ["-p", f"no:{name}"]
        args += [str(root / SENTINEL), *(str(p) for p in user_files)]
        with (
            (out_dir / "pytest.log").open("w", encoding="utf-8") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            code = pytest.main(args, plugins=[plugin])
        from deploy.secrets import redact_file

        redact_file(out_dir / "pytest.log")  # user checks may print what they read on a node
    if code in (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        raise VerificationError(
            f"the verification run itself failed (pytest exit code {int(code)})",
            hint=f"see {out_dir / 'pytest.log'}",
        )
