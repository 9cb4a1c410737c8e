"""No secret in any file labdeploy writes: every writer, then a whole run, read back byte by byte.

The secrets are the awkward ones: non-ASCII (JSON escapes it to \\uXXXX), quote and backslash
(escaped by JSON and XML), multi-line (a key), regex metacharacters. A too-short one is refused.
"""

from __future__ import annotations

import html
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.artifacts import RunArtifacts
from deploy.errors import ConfigError, ProviderError, StageError
from deploy.model.schema import SecretRef
from deploy.secrets import resolve_secret, spellings
from deploy.state import LabState, ResourceRecord, RunRecord, StateStore
from deploy.verify.model import CheckResult, VerifyReport
from deploy.verify.reports import write_reports
from tests.integration.sshd_fixtures import SshServer
from tests.recorder_provider import calls
from tests.unit.test_run_engine import Rig

SECRETS = {
    "UMLAUT": "pässwörd-🔑-ß",
    "QUOTES": 'a"b\\c\'d<&>',
    "MULTILINE": ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
                  "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
                  "QyNTUxOQAAACDvQ8mXkz1oQnS0cKj6Yb7sGmP3tq3v2aG1kqX6b8nWbQAAAJgqk1xJKpNc\n"
                  "-----END OPENSSH PRIVATE KEY-----"),
    "REGEX": "p.a*s+s?(w)[o]{r}d|^$\\1",
}


def _forbidden(secret: str) -> set[str]:
    """Every spelling of ``secret`` (and of each long line of it) that must appear in no file."""
    pieces = {secret} | {line for line in secret.splitlines() if len(line) >= 8 and not line.startswith("-----")}
    return set().union(*(spellings(p) | {html.escape(p, quote=True).replace("&#x27;", "&apos;")}
                         for p in pieces))


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(data, list):
        for item in data:
            yield from _strings(item)


def _decoded(path: Path) -> list[str]:
    """The strings a reader of ``path`` sees after decoding its format."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return list(_strings(json.loads(text)))
    if path.suffix == ".jsonl":
        return [s for line in text.splitlines() if line.strip() for s in _strings(json.loads(line))]
    if path.suffix == ".xml":
        root = ET.fromstring(text)
        return [s for el in root.iter() for s in (el.text or "", el.tail or "", *el.attrib.values())]
    if path.suffix == ".html":
        return [html.unescape(text)]
    return [text]


def assert_no_secret_in(roots: list[Path], secrets: list[str]) -> list[Path]:
    files = sorted(p for root in roots for p in root.rglob("*") if p.is_file())
    assert files
    for path in files:
        raw = path.read_bytes()
        decoded = _decoded(path)
        for secret in secrets:
            for form in _forbidden(secret):
                assert form.encode() not in raw, (path, form)
                assert all(form not in s for s in decoded), (path, form)
    return files


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"T_{name}", value)
    return [resolve_secret(SecretRef(env=f"T_{name}")) for name in SECRETS]


def test_a_secret_too_short_to_mask_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_SHORT", "x9")
    with pytest.raises(ConfigError, match="shorter than 3"):
        resolve_secret(SecretRef(env="T_SHORT"))


def _write_state(root: Path, secrets: list[str]) -> None:
    store = StateStore(root, "lab1")
    state = LabState("lab1")
    for i, secret in enumerate(secrets):
        state.resources[f"network:n{i}"] = ResourceRecord(
            f"network:n{i}", "network", "h", "failed", "local",
            outputs={"login": f"admin:{secret}@host", secret: {"nested": [secret, 1]}},
            error=f"provider said: login with {secret!r} refused")
    state.runs.append(RunRecord("r1", f"up {secrets[0]}", 1.0))
    with store.locked("up"):
        store.save(state)
    assert store.load().resources["network:n0"].outputs["login"] == "admin:***@host"


def _write_artifacts(root: Path, secrets: list[str]) -> Path:
    artifacts = RunArtifacts(root, "lab1", "run1")
    artifacts.attach_log()
    log = logging.getLogger("deploy.test")
    try:
        for secret in secrets:
            artifacts.write_json(f"data-{len(secret)}.json", {"password": secret, secret: [secret],
                                                             "record": ResourceRecord("x", "y", secret, "ok")})
            artifacts.event({"event": "step", "id": "network:n", "error": f"bad {secret}", "seconds": 1.0})
            log.info("logging in with %s and %r", secret, secret)
            try:
                raise ProviderError(f"login with {secret} refused: {secret!r}")
            except ProviderError:
                log.exception("step failed")
        artifacts.write_text("plan.txt", "\n".join(f"~ {s}" for s in secrets))
        report = VerifyReport([CheckResult(f"login {s}", "nodes", f"node-{s}", "failed", 0.1,
                                           failure=f"expected {s}\n  seen: {s!r}", reproduce=f"ssh -p {s}")
                               for s in secrets], 1.0)
        write_reports(report, artifacts.dir / "verify")
    finally:
        artifacts.close()
    return artifacts.dir


def test_every_writer_keeps_every_secret_out(tmp_path: Path, resolved: list[str]) -> None:
    _write_state(tmp_path / "state", resolved)
    run_dir = _write_artifacts(tmp_path / "artifacts", resolved)
    files = assert_no_secret_in([tmp_path / "state", tmp_path / "artifacts"], resolved)
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {"state/state.json", "state/lock", "artifacts/lab1/run1/events.jsonl", "artifacts/lab1/run1/run.log",
            "artifacts/lab1/run1/plan.txt", "artifacts/lab1/run1/verify/junit.xml",
            "artifacts/lab1/run1/verify/report.html", "artifacts/lab1/run1/verify/report.json"} <= names
    run_log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "Traceback" in run_log  # the traceback is there, masked
    assert "ProviderError: login with *** refused: '***'" in run_log
    assert "logging in with *** and '***'" in run_log
    assert ET.parse(run_dir / "verify" / "junit.xml").getroot().get("failures") == str(len(resolved))


@pytest.fixture
def rig(tmp_path: Path, sshd: SshServer) -> Rig:
    return Rig(tmp_path, sshd)


@pytest.mark.parametrize("name", list(SECRETS))
def test_a_whole_run_leaves_the_secret_in_no_file(rig: Rig, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    secret = SECRETS[name]
    monkeypatch.setenv("RECORDER_PASSWORD", secret)
    # the provider uses the secret, logs it, returns it in its outputs and fails a step quoting it
    rig.configure(leak_secret=True, fail={"machine:db-1": f"login {secret!r} refused"})
    with pytest.raises(StageError, match="machines on db-1"):
        rig.session(password=SecretRef(env="RECORDER_PASSWORD")).up(parallel=4, verify=False)
    assert calls(rig.work, "create_network", "end")  # the provider did resolve and use the secret
    files = assert_no_secret_in([rig.tmp / "state", rig.tmp / "artifacts"], [secret])
    assert {"state.json", "run.log", "events.jsonl", "summary.json"} <= {p.name for p in files}
    state = json.loads((rig.tmp / "state" / "state.json").read_text())
    assert state["resources"]["network:labnet"]["outputs"]["login"] == "admin:***@recorder"
    assert state["resources"]["machine:db-1"]["error"] == "recorder: login '***' refused"
