"""What the plan knows of an add-on's Helm release: its checkpoint inputs and how a change reads.

The inputs of ``addon:<name>`` are the chart's identity (reference, version and, for an archive in
the mirror folder, its sha256), the sha256 of the rendered values and the helm flags: the same
lab keeps the release; another chart version plans ``update (upgrade 1.16.5 → 1.17.0)``, other
values ``update (values changed)``. The step records what it installed (``outputs``), which is
what a later plan compares with and what an uninstall needs once the entry is gone from the lab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.addons import charts, values
from deploy.model.schema_addons import AddonSpec


def inputs(addon: AddonSpec, mirror: str | None, lab_dir: Path) -> dict[str, Any]:
    source = charts.source(addon, mirror, lab_dir)
    return {"release": addon.name, "namespace": addon.namespace, "chart": source.identity(),
            "values": values.digest(values.render(addon, lab_dir)),
            "helm": {"wait": addon.wait, "timeout": addon.timeout, "atomic": addon.atomic}}


def outputs(wanted: dict[str, Any]) -> dict[str, Any]:
    """What the step records of an installed release (read back by :func:`update_reason`)."""
    chart = wanted["chart"]
    return {"release": wanted["release"], "namespace": wanted["namespace"], "chart_version": chart["version"],
            "chart_digest": chart["digest"], "values": wanted["values"]}


def update_reason(wanted: dict[str, Any], recorded: dict[str, Any]) -> str:
    """Why a recorded release is updated: the versions of an upgrade, else what else changed."""
    old, new = recorded.get("chart_version"), wanted["chart"]["version"]
    if old and old != new:
        return f"upgrade {old} → {new}"
    if recorded.get("namespace") not in (None, wanted["namespace"]):
        return f"namespace {recorded['namespace']} → {wanted['namespace']}"
    if recorded.get("chart_digest") != wanted["chart"]["digest"] and "chart_digest" in recorded:
        return f"chart {new} changed (another archive)"
    if recorded.get("values") not in (None, wanted["values"]):
        return "values changed"
    return "inputs changed"


def delete_reason(recorded: dict[str, Any]) -> str:
    if "release" in recorded:
        return f"no longer in the lab: helm uninstall {recorded['release']} -n {recorded['namespace']}"
    return "no longer in the lab"
