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


def children(si: Any, root: Any, vimtype: type, recursive: bool = True) -> list[Any]:
    view = si.content.viewManager.CreateContainerView(root, [vimtype], recursive)
    try:
        return list(view.view)
    finally:
        view.DestroyView()


def by_name(si: Any, root: Any, vimtype: type) -> dict[str, Any]:
    return {obj.name: obj for obj in children(si, root, vimtype)}


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
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        traverse = vmodl.query.PropertyCollector.TraversalSpec(name="view", type=vim.view.ContainerView,
                                                               path="view", skip=False)
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine,
                                                                pathSet=["config.extraConfig"])])
        contents = si.content.propertyCollector.RetrieveContents([spec])
    finally:
        view.DestroyView()
    out = []
    for item in contents:
        extra = {o.key: str(o.value) for prop in item.propSet for o in (prop.val or [])
                 if o.key.startswith(TAG_PREFIX)}
        if extra:
            out.append((item.obj, extra))
    return out
