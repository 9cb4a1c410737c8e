"""Finding things in a vCenter's inventory by name, and the lab's tags in a VM's ``extraConfig``.

A name that does not exist is a :class:`ProviderError` listing what does, nearest match first.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from deploy.errors import ProviderError
from deploy.providers.base import Tags

vim: Any = _vim  # pyvmomi's stubs leave the data objects untyped
vmodl: Any = _vmodl

TAG_PREFIX = "labdeploy."
NAME_KEY = TAG_PREFIX + "name"


def nearest_first(wanted: str, names: list[str]) -> list[str]:
    if not names:
        return []
    near = difflib.get_close_matches(wanted, names, n=len(names), cutoff=0.0)
    return near + sorted(set(names) - set(near))


def pick(kind: str, wanted: str, found: dict[str, Any], where: str) -> Any:
    """``found[wanted]``, or an error listing the names there are (nearest first)."""
    if wanted in found:
        return found[wanted]
    names = nearest_first(wanted, list(found))
    listing = ", ".join(names) if names else "none"
    raise ProviderError(f"unknown {kind} {wanted!r} in {where}; there are: {listing}",
                        hint=f"use one of the {kind}s listed")


def by_name(si: Any, root: Any, vimtype: type) -> dict[str, Any]:
    """Every ``vimtype`` under ``root`` by name, read in one PropertyCollector call (not one per object)."""
    return {str(props.get("name")): obj for obj, props in _contents(si, root, vimtype, ["name"])}


def _contents(si: Any, root: Any, vimtype: type, paths: list[str]) -> list[tuple[Any, dict[str, Any]]]:
    """(object, {path: value}) of every ``vimtype`` under ``root``: a container view read by RetrieveContents."""
    view = si.content.viewManager.CreateContainerView(root, [vimtype], True)
    try:
        traverse = vmodl.query.PropertyCollector.TraversalSpec(name="view", type=vim.view.ContainerView,
                                                               path="view", skip=False)
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vimtype, pathSet=paths)])
        contents = si.content.propertyCollector.RetrieveContents([spec])
    finally:
        view.DestroyView()
    return [(item.obj, {prop.name: prop.val for prop in item.propSet}) for item in contents]


def datacenter(si: Any, name: str) -> Any:
    return pick("datacenter", name, by_name(si, si.content.rootFolder, vim.Datacenter), "vCenter")


def tags_extra_config(tags: Tags, machine: str) -> list[Any]:
    values = {"lab": tags.lab, "run_id": tags.run_id, "created": tags.created.isoformat(),
              "expires": tags.expires.isoformat() if tags.expires else "", "state": tags.state or "",
              "name": machine}
    return [vim.option.OptionValue(key=TAG_PREFIX + key, value=value) for key, value in values.items()]


def tags_from(extra: dict[str, str]) -> Tags | None:
    if TAG_PREFIX + "lab" not in extra:
        return None
    expires = extra.get(TAG_PREFIX + "expires") or None
    return Tags(lab=extra[TAG_PREFIX + "lab"], run_id=extra.get(TAG_PREFIX + "run_id", ""),
                created=datetime.fromisoformat(extra[TAG_PREFIX + "created"]),
                expires=datetime.fromisoformat(expires) if expires else None,
                state=extra.get(TAG_PREFIX + "state") or None)


def tagged_vms(si: Any) -> list[tuple[Any, dict[str, str]]]:
    """Every VM in every datacenter with its labdeploy extraConfig, in one PropertyCollector call."""
    out = []
    for obj, props in _contents(si, si.content.rootFolder, vim.VirtualMachine, ["config.extraConfig"]):
        extra = {o.key: str(o.value) for o in (props.get("config.extraConfig") or []) if o.key.startswith(TAG_PREFIX)}
        if extra:
            out.append((obj, extra))
    return out
