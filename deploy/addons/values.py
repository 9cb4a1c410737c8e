"""An add-on's values: its values files merged in order, then its inline values, as one YAML file.

Helm is given exactly the file rendered here (one ``-f``), so the hash of that text is the hash of
what the release is installed with. Merging follows Helm's merging of several values files: maps merge
key by key, anything else (lists included) is replaced, and a ``null`` stays a null, which Helm then
takes as "remove the chart's default of this key" (tests/integration/test_addons_helm.py renders
both ways with the real helm and compares).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from deploy.errors import PlanError
from deploy.model.schema_addons import AddonSpec


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``: maps merged key by key, other values (``None`` too) replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"cannot read values file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PlanError(f"values file {path} is not a YAML mapping (it is a {type(data).__name__})",
                        hint="a values file maps value names to values, as a chart's values.yaml does")
    return data


def merged(addon: AddonSpec, base_dir: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in addon.values_files:
        values = merge(values, read_file(base_dir / name))
    return merge(values, addon.values)


def render(addon: AddonSpec, base_dir: Path) -> str:
    """The values file Helm is given: keys sorted, so the same values are the same text."""
    values = merged(addon, base_dir)
    return yaml.safe_dump(values, sort_keys=True, default_flow_style=False) if values else "{}\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
