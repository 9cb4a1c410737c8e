"""The committed lab.schema.json is what the models generate; `deploy schema` prints the same."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from deploy.cli import main
from deploy.model.jsonschema import lab_schema, schema_text

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_matches_the_models() -> None:
    committed = (ROOT / "lab.schema.json").read_text()
    assert committed == schema_text(), "lab.schema.json drifted: run `deploy schema -o lab.schema.json`"


def test_schema_is_a_valid_json_schema() -> None:
    schema = lab_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["name"]  # a small lab is small: everything else has a default


def test_schema_rejects_what_the_models_reject() -> None:
    validator = jsonschema.Draft202012Validator(lab_schema())
    good = {"name": "a", "providers": {"local": {"kind": "libvirt"}}}
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors({**good, "grups": {}}))  # unknown key
    assert list(validator.iter_errors({**good, "providers": {"local": {"kind": "libvirt", "urii": "x"}}}))
    # other kinds belong to packages registered at run time: the editor schema lets them through and
    # `deploy validate` checks them against the registry (tests/unit/test_provider_plugins.py)
    assert not list(validator.iter_errors({**good, "providers": {"local": {"kind": "docker"}}}))


def test_deploy_schema_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(schema_text())
    target = tmp_path / "s.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert target.read_text() == schema_text()
