"""The ``addons:`` list of a lab file: Helm releases beside the typed add-ons (part of the schema).

An entry is one Helm chart at one version, installed as release ``name`` into ``namespace``.
``after:`` names the add-ons (generic or typed: ``cni``, ``mesh``, ``gpu``, ``runtimes``) it waits
for; every add-on waits for the CNI. The chart comes from ``mirrors.charts`` when the lab sets it,
else from ``repo:`` (an http(s) chart repository or an ``oci://`` registry path), or ``chart:``
is itself an ``oci://`` reference.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator

from deploy.model.strict import Strict

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$"
AddonName = Annotated[str, Field(pattern=NAME_RE, description="lower-case letters, digits and dashes")]
# SemVer 2 as Helm's Masterminds/semver reads a chart version (a leading v is tolerated, as Helm does)
SEMVER = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
_TIMEOUT = re.compile(r"^(\d+)(s|m|h)$")
TYPED_ADDONS = ("cni", "mesh", "gpu", "runtimes")  # the resource names of kubernetes.cni, .mesh, .gpu_operator, ...


def parse_timeout(value: object) -> int:
    """``300s`` / ``5m`` / ``1h`` (or a number of seconds) -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (match := _TIMEOUT.match(value.strip())):
        return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    raise ValueError(f"{value!r} is not a timeout; write it as 300s, 10m or 1h")


class AddonSpec(Strict):
    name: AddonName = Field(description="the Helm release name and the resource addon:<name>")
    chart: str = Field(min_length=1, description="chart name in the repository or mirror, or an oci:// reference")
    version: str = Field(description="the chart version (SemVer, e.g. 6.7.0): pinned, never a range")
    repo: str | None = Field(
        None, description="the chart's upstream repository: http(s) URL of a chart repository or oci://host/path; "
        "mirrors.charts, when set, is used instead")
    namespace: AddonName = "default"
    values: dict[str, Any] = Field(default_factory=dict, description="values, over those of values_files")
    values_files: list[str] = Field(
        default_factory=list, description="YAML values files relative to the lab file, merged in order")
    wait: bool = Field(True, description="helm --wait: the release is done when its resources are ready")
    timeout: Annotated[int, Field(json_schema_extra={"type": "string"})] = Field(
        300, description="helm --timeout, e.g. 5m")
    atomic: bool = Field(False, description="helm --atomic: roll a failed upgrade back (an install is removed)")
    after: list[AddonName] = Field(default_factory=list, description="add-ons this one is installed after")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"{value!r} is not a chart version; write the exact SemVer version, e.g. 1.17.0")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> int:
        return parse_timeout(value)
