"""The clone spec of a lab machine: placement, size, NICs, nested HV, cloud-init and the lab's tags."""

from __future__ import annotations

import base64
import json
from typing import Any

from pyVmomi import vim as _vim

from deploy.errors import ProviderError
from deploy.model.resolved import ResolvedNode
from deploy.providers.base import Tags
from deploy.providers.vsphere_inventory import tags_extra_config

vim: Any = _vim  # pyvmomi's stubs leave the data objects untyped


def _encoded(key: str, text: str) -> list[Any]:
    data = base64.b64encode(text.encode()).decode()
    return [vim.option.OptionValue(key=f"guestinfo.{key}", value=data),
            vim.option.OptionValue(key=f"guestinfo.{key}.encoding", value="base64")]


def cloud_init(node: ResolvedNode, vm_name: str, ssh_public_key: str | None) -> list[Any]:
    """``guestinfo.metadata``/``userdata`` for cloud-init's VMware datasource."""
    metadata = json.dumps({"instance-id": vm_name, "local-hostname": node.name})
    userdata = "#cloud-config\n" + json.dumps({"users": [{"name": node.ssh_user,
                                                            "ssh_authorized_keys": [ssh_public_key]}]}
                                                if ssh_public_key else {})
    return _encoded("metadata", metadata) + _encoded("userdata", userdata)


def nic_spec(network: Any, index: int) -> Any:
    """A new vmxnet3 NIC on a standard or distributed port group (new devices take negative keys)."""
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        port = vim.dvs.PortConnection(portgroupKey=network.key,
                                      switchUuid=network.config.distributedVirtualSwitch.uuid)
        backing: Any = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    else:
        backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=network.name, network=network)
    card = vim.vm.device.VirtualVmxnet3(key=-100 - index, backing=backing, addressType="generated")
    return vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=card)


def tags_spec(node: ResolvedNode, tags: Tags) -> Any:
    """The clone's own config: the lab's tags, so a clone that fails to reconfigure is still found."""
    return vim.vm.ConfigSpec(extraConfig=tags_extra_config(tags, node.name))


def config_spec(node: ResolvedNode, vm_name: str, tags: Tags, networks: list[Any],
                ssh_public_key: str | None) -> Any:
    """The reconfigure after the clone (vcsim's clone, unlike vCenter's, ignores a clone's config)."""
    extra = tags_extra_config(tags, node.name) + cloud_init(node, vm_name, ssh_public_key)
    return vim.vm.ConfigSpec(numCPUs=node.cpus, memoryMB=node.memory_mib,
                             nestedHVEnabled=node.nested_virtualization, extraConfig=extra,
                             deviceChange=[nic_spec(n, i) for i, n in enumerate(networks)])


def clone_spec(template: Any, *, mode: str, datastore: Any, pool: Any, config: Any) -> Any:
    """Linked (from the template's current snapshot) or full clone, powered off."""
    relocate = vim.vm.RelocateSpec(datastore=datastore, pool=pool)
    snapshot = None
    if mode == "linked":
        info = template.snapshot
        current = info.currentSnapshot if info is not None else None
        if current is None:
            raise ProviderError(f"template {template.name} has no snapshot to link clones from",
                                hint="take a snapshot of the template, or set clone: full")
        relocate.diskMoveType = "createNewChildDiskBacking"
        snapshot = current
    return vim.vm.CloneSpec(location=relocate, powerOn=False, template=False, config=config, snapshot=snapshot)
