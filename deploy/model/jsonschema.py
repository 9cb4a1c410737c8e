"""The lab file's JSON Schema, generated from the pydantic models (committed as lab.schema.json)."""

from __future__ import annotations

import json
from typing import Any

from deploy.model.schema import Lab


def lab_schema() -> dict[str, Any]:
    schema = Lab.model_json_schema()
    return {**schema, "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "labdeploy lab file"}


def schema_text() -> str:
    return json.dumps(lab_schema(), indent=2, sort_keys=True) + "\n"
