"""Reports: JUnit XML that parses, a self-contained HTML page naming every check, JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from deploy.verify.model import CheckResult, VerifyReport
from deploy.verify.reports import write_reports

RESULTS = [
    CheckResult("ssh with recorded host key", "nodes", "cp-1", "passed", 0.12),
    CheckResult(
        "hostname",
        "nodes",
        "worker-1",
        "failed",
        1.5,
        failure="hostname on worker-1\n  expected: worker-1\n  seen:     debian <b>",
        reproduce="ssh -p 2201 root@127.0.0.1 hostname",
    ),
    CheckResult("API /readyz", "kubernetes", None, "passed", 0.3),
    CheckResult("pod-to-pod across nodes", "kubernetes", None, "skipped", 0.0, failure="needs two nodes"),
    CheckResult("test_custom", "user", "worker-1", "error", 0.2, failure="fixture failed"),
]


def test_reports(tmp_path: Path) -> None:
    report = VerifyReport(results=list(RESULTS), seconds=2.1)
    write_reports(report, tmp_path / "out", junit=tmp_path / "ci" / "verify.xml")
    assert report.junit == tmp_path / "ci" / "verify.xml"
    root = ET.parse(report.junit).getroot()
    assert root.get("tests") == "5"
    assert root.get("failures") == "2"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == ["nodes", "kubernetes", "user"]
    failure = suites["nodes"].find("testcase[@name='hostname']/failure")
    assert failure is not None
    assert failure.get("message") == "hostname on worker-1"
    assert "reproduce: ssh -p 2201 root@127.0.0.1 hostname" in (failure.text or "")
    assert suites["kubernetes"].find("testcase/skipped") is not None
    assert suites["user"].find("testcase/error") is not None

    assert report.html is not None
    page = report.html.read_text()
    for result in RESULTS:
        assert result.name in page
    assert "debian &lt;b&gt;" in page
    assert "<link" not in page
    assert "<script" not in page
    assert "ssh -p 2201 root@127.0.0.1 hostname" in page

    assert report.json is not None
    data = json.loads(report.json.read_text())
    assert data["failed"] == 2
    assert data["results"][1]["node"] == "worker-1"
