"""Objects labdeploy creates itself, checked against the Kubernetes OpenAPI types the official client was
generated from (``kubernetes.client.models``: each model's ``openapi_types`` and ``attribute_map``).

    errors(obj) -> list[str]     unknown fields and values of the wrong type, each with its path

Built-in kinds only (a CRD's schema, e.g. Istio's PeerAuthentication, is not in the client).
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes import client

_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float),
                                         "object": (object,), "datetime": (str,), "date": (str,)}


def model_of(obj: dict[str, Any]) -> str:
    """``V1ConfigMap`` for apiVersion v1, ``V1RuntimeClass`` for node.k8s.io/v1, ..."""
    version = str(obj["apiVersion"]).rpartition("/")[2]
    return f"{version[0].upper()}{version[1:]}{obj['kind']}"


def errors(obj: dict[str, Any]) -> list[str]:
    name = model_of(obj)
    if not hasattr(client, name):
        return [f"{obj['apiVersion']} {obj['kind']}: no such built-in kind (model {name})"]
    return _check(obj, name, obj["kind"])


def _check(value: Any, type_name: str, path: str) -> list[str]:  # noqa: PLR0911 -- one answer per type form
    if type_name in _SCALARS:
        ok = isinstance(value, _SCALARS[type_name]) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not {type_name}"]
    if match := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [e for i, item in enumerate(value) for e in _check(item, match.group(1), f"{path}[{i}]")]
    if match := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name):
        if not isinstance(value, dict):
            return [f"{path}: not a map"]
        inner = match.group(1) or match.group(2)
        return [e for k, item in value.items() for e in _check(item, inner, f"{path}.{k}")]
    model = getattr(client, type_name)
    if not isinstance(value, dict):
        return [f"{path}: not an object ({type_name})"]
    fields = {json_key: model.openapi_types[attr] for attr, json_key in model.attribute_map.items()}
    out = []
    for key, item in value.items():
        if key not in fields:
            out.append(f"{path}.{key}: no such field in {type_name}")
        else:
            out += _check(item, fields[key], f"{path}.{key}")
    return out
