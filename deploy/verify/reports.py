"""Reports of a verify run: JUnit XML, a self-contained HTML page and JSON.

Every text of a result (name, node, failure, reproduction) is redacted before it is escaped
for XML or HTML or serialised to JSON, so a resolved secret quoted in a check's output never
reaches a report in any spelling.
"""

from __future__ import annotations

import dataclasses
import html
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

from deploy.atomic import atomic_write
from deploy.secrets import redact_text
from deploy.verify.model import LAYERS, CheckResult, VerifyReport


def redacted(report: VerifyReport) -> VerifyReport:
    """A copy of ``report`` whose results carry no registered secret in any text field."""
    return dataclasses.replace(report, results=[_redacted_result(r) for r in report.results])


def _redacted_result(result: CheckResult) -> CheckResult:
    changes: dict[str, Any] = {f.name: redact_text(value) for f in dataclasses.fields(result)
               if isinstance(value := getattr(result, f.name), str)}
    return dataclasses.replace(result, **changes)


def by_layer(results: list[CheckResult]) -> dict[str, list[CheckResult]]:
    """Results grouped by layer, in the order of :data:`LAYERS` (unknown layers last)."""
    groups: dict[str, list[CheckResult]] = defaultdict(list)
    for result in results:
        groups[result.layer].append(result)
    order = [layer for layer in LAYERS if layer in groups] + sorted(set(groups) - set(LAYERS))
    return {layer: groups[layer] for layer in order}


def _failure_body(result: CheckResult) -> str:
    text = result.failure
    if result.reproduce and result.reproduce not in text:
        text += f"\nreproduce: {result.reproduce}"
    return text


def junit_xml(report: VerifyReport) -> str:
    """JUnit XML: one testsuite per layer, one testcase per check and node."""
    report = redacted(report)
    root = ET.Element(
        "testsuites",
        name="labdeploy verify",
        tests=str(report.total),
        failures=str(report.failed),
        skipped=str(report.skipped),
        time=f"{report.seconds:.3f}",
    )
    for layer, results in by_layer(report.results).items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=layer,
            tests=str(len(results)),
            failures=str(sum(r.outcome == "failed" for r in results)),
            errors=str(sum(r.outcome == "error" for r in results)),
            skipped=str(sum(r.outcome == "skipped" for r in results)),
            time=f"{sum(r.seconds for r in results):.3f}",
        )
        for result in results:
            _testcase(suite, result)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _testcase(suite: ET.Element, result: CheckResult) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        classname=f"{result.layer}.{result.node or 'cluster'}",
        name=result.name,
        time=f"{result.seconds:.3f}",
    )
    props = ET.SubElement(case, "properties")
    for key, value in (
        ("node", result.node or ""),
        ("reproduce", result.reproduce),
        ("nodeid", result.nodeid),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    if result.outcome in ("failed", "error"):
        first = (result.failure.strip().splitlines() or [result.outcome])[0]
        tag = "failure" if result.outcome == "failed" else "error"
        ET.SubElement(case, tag, message=first).text = _failure_body(result)
    elif result.outcome == "skipped":
        ET.SubElement(case, "skipped", message=result.failure)


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;width:100%} td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;
vertical-align:top} th{background:#f3f3f3}
.passed{color:#17692a}.failed,.error{color:#b00020;font-weight:bold}.skipped{color:#8a6d00}
pre{white-space:pre-wrap;margin:0;font-size:.9em} .summary span{margin-right:1.5em}
"""


def html_report(report: VerifyReport, title: str = "labdeploy verify") -> str:
    """A single HTML page with inline CSS: summary, then per layer a table by node with timings."""
    report = redacted(report)
    title = redact_text(title)
    esc = html.escape
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>",
        "<p class='summary'>"
        + "".join(
            f"<span class='{k}'>{k}: {v}</span>"
            for k, v in (("passed", report.passed), ("failed", report.failed), ("skipped", report.skipped))
        )
        + f"<span>total: {report.total}</span><span>time: {report.seconds:.1f}s</span></p>",
    ]
    for layer, results in by_layer(report.results).items():
        parts.append(
            f"<h2 id='layer-{esc(layer)}'>{esc(layer)} "
            f"({sum(r.outcome == 'passed' for r in results)}/{len(results)} passed)</h2>"
        )
        parts.append(
            "<table><tr><th>node</th><th>check</th><th>result</th><th>seconds</th>"
            "<th>failure and reproduction</th></tr>"
        )
        for r in sorted(results, key=lambda r: (r.node or "", r.name)):
            detail = f"<pre>{esc(_failure_body(r))}</pre>" if r.outcome != "passed" else ""
            parts.append(
                f"<tr><td>{esc(r.node or 'cluster')}</td><td>{esc(r.name)}</td>"
                f"<td class='{r.outcome}'>{r.outcome}</td><td>{r.seconds:.2f}</td><td>{detail}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def json_report(report: VerifyReport) -> str:
    report = redacted(report)
    return (
        json.dumps(
            {
                "passed": report.passed,
                "failed": report.failed,
                "skipped": report.skipped,
                "total": report.total,
                "seconds": round(report.seconds, 3),
                "results": [r.to_json() for r in report.results],
            },
            indent=2,
        )
        + "\n"
    )


def write_reports(
    report: VerifyReport, out_dir: Path, *, junit: Path | None = None, html_path: Path | None = None
) -> None:
    """Write the three reports (default names in ``out_dir``) and record their paths on ``report``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report.junit = junit or out_dir / "junit.xml"
    report.html = html_path or out_dir / "report.html"
    report.json = out_dir / "report.json"
    for path, text in (
        (report.junit, junit_xml(report)),
        (report.html, html_report(report)),
        (report.json, json_report(report)),
    ):
        atomic_write(path, redact_text(text).encode("utf-8"), 0o644)
