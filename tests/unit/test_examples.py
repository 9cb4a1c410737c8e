"""Every example lab validates, plans, carries the schema comment and passes the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from deploy.model import open_lab
from deploy.plan import make_plan
from deploy.state import LabState

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "labs").glob("*/lab.yaml"))
SCHEMA_COMMENT = "# yaml-language-server: $schema=../../lab.schema.json"


def test_the_examples_are_there() -> None:
    names = {p.parent.name for p in EXAMPLES}
    assert {"quickstart", "existing-hosts", "k8s-sandbox", "nested-esxi", "k8s", "k8s-ha"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_validates_and_plans(path: Path) -> None:
    _loaded, resolved = open_lab(path)
    plan = make_plan(resolved, LabState(resolved.name))
    assert resolved.nodes
    counts = plan.count()
    assert counts["create"] + counts["unsupported"] == len(plan.resources)
    assert {c.kind for c in plan.unsupported} <= {"cluster", "addon", "ansible"}  # no stage runs them yet


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_starts_with_the_schema_comment(path: Path) -> None:
    assert path.read_text().splitlines()[0] == SCHEMA_COMMENT
    assert (path.parent / "../../lab.schema.json").resolve() == ROOT / "lab.schema.json"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_passes_the_json_schema(path: Path) -> None:
    schema = json.loads((ROOT / "lab.schema.json").read_text())
    data = json.loads(json.dumps(YAML(typ="safe").load(path.read_text())))
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    assert errors == []
