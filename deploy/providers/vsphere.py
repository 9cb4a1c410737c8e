"""The ``vsphere`` provider: lab machines as VMs on a vCenter, through pyvmomi (``labdeploy[vsphere]``).

Its spec is :class:`deploy.model.schema.VsphereProviderSpec`. One session per run (opened on first
use, logged out by :meth:`close`, and logged in again once when vCenter says it is gone mid-operation);
every VM lives in a folder named after the lab and carries the lab's tags in ``extraConfig``
(``labdeploy.*``), so destroy and reap find it without local state. Machines are clones of
``image: {template: NAME}`` (linked from the template's current snapshot unless ``clone: full``).
Lab networks (mode bridge) are existing port groups, named by their ``bridge:`` (lab network names
are lower-case, port groups often are not: ``VM Network``). vCenter tasks go through
a :class:`TaskCap` and are awaited through the PropertyCollector.

After power-on the machine step waits, through the PropertyCollector, for VMware Tools to report
the guest running with an IPv4 address (``guest_timeout``); that address is the machine's SSH
endpoint (``ssh_user``@ip:``ssh_port``) and its address on the lab network of the NIC that holds it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pyVmomi import vim as _vim

from deploy.errors import ProviderError
from deploy.model.resolved import ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.model.schema import VsphereProviderSpec
from deploy.providers import vsphere_inventory as inv
from deploy.providers.base import (
    Capabilities,
    MachineInfo,
    Provider,
    ProviderContext,
    SshEndpoint,
    TaggedResource,
    Tags,
)
from deploy.providers.vsphere_clone import clone_spec, config_spec, tags_spec
from deploy.providers.vsphere_guest import GUEST_PATHS, guest_ready, guest_wanted
from deploy.providers.vsphere_session import connect, disconnect
from deploy.providers.vsphere_tasks import TaskCap, wait_for, wait_task

vim: Any = _vim  # pyvmomi's stubs leave the data objects untyped
log = logging.getLogger(__name__)
T = TypeVar("T")

_POWER = {"poweredOn": "running", "poweredOff": "stopped", "suspended": "stopped"}
_BAD_NAME_CHARS = set("%/\\")


class VsphereProvider(Provider[VsphereProviderSpec]):
    kind = "vsphere"
    spec_model = VsphereProviderSpec
    capabilities: ClassVar[Capabilities] = Capabilities(network_modes=frozenset({"bridge"}),
                                                        image_sources=frozenset({"template"}))

    def __init__(self, name: str, spec: VsphereProviderSpec, ctx: ProviderContext) -> None:
        super().__init__(name, spec, ctx)
        self._si: Any = None
        self.tasks = TaskCap(spec.max_tasks)
        self._folder_lock = threading.RLock()  # parallel creates and deletes share one lab folder
        self._session_lock = threading.RLock()
        self._placement: dict[str, Any] = {}  # datacenter, cluster, ... read once per session (see _once)

    # -- the operations, each renewing an expired session once ------------------------------
    def check(self) -> None:
        return self._renewing("checking the placement", self._check)

    def create_network(self, net: ResolvedNetwork, tags: Tags) -> dict[str, Any]:
        return self._renewing(f"finding port group {net.name}", lambda: self._create_network(net, tags))

    def prepare_image(self, image: ResolvedImage) -> dict[str, Any]:
        return self._renewing(f"finding template {image.name}", lambda: self._prepare_image(image))

    def create_machine(self, node: ResolvedNode, tags: Tags) -> MachineInfo:
        return self._renewing(f"creating {node.name}", lambda: self._create_machine(node, tags))

    def status(self, name: str) -> MachineInfo:
        return self._renewing(f"reading {name}", lambda: self._status(name))

    def delete_machine(self, name: str) -> None:
        return self._renewing(f"deleting {name}", lambda: self._delete_machine(name))

    def find_resources(self, lab: str | None = None) -> list[TaggedResource]:
        return self._renewing("listing tagged VMs", lambda: self._find_resources(lab))

    def reap_candidates(self) -> list[TaggedResource]:
        return self._renewing("listing tagged VMs", self._reap_candidates)

    def reap_remove(self, resource: TaggedResource) -> None:
        return self._renewing(f"reaping {resource.name}", lambda: self._reap_remove(resource))

    def add_host(self, cluster: str, login: Any) -> dict[str, Any]:
        """A (nested) ESXi host into ``cluster`` (``login``: a vsphere_hosts.HostLogin)."""
        from deploy.providers import vsphere_hosts

        return self._renewing(f"adding host {login.address}", lambda: vsphere_hosts.add_host(self, cluster, login))

    def remove_host(self, cluster: str, address: str) -> None:
        from deploy.providers import vsphere_hosts

        return self._renewing(f"removing host {address}", lambda: vsphere_hosts.remove_host(self, cluster, address))

    # -- session and placement -------------------------------------------------------------
    @property
    def si(self) -> Any:
        with self._session_lock:
            if self._si is None:
                self._si = connect(self.spec, self.ctx.secret(self.spec.password))
            return self._si

    def close(self) -> None:
        with self._session_lock:
            if self._si is not None:
                disconnect(self._si)
                self._si = None
            self._placement.clear()

    def _once(self, key: str, read: Callable[[], T]) -> T:
        """``read()`` the first time in a session, then what it returned: placement does not move during a
        run, and re-reading it for each of 500 VMs is most of their round trips. Errors are not kept."""
        with self._session_lock:
            if key not in self._placement:
                self._placement[key] = read()
            found: T = self._placement[key]
            return found

    def _renewing(self, what: str, call: Callable[[], T]) -> T:
        """``call()``; when vCenter says the session is gone (expired, or ended by an admin), log in once
        more and call it again (the operations are idempotent: a clone that started is found by its tags)."""
        used = self.si
        try:
            return call()
        except vim.fault.NotAuthenticated:
            with self._session_lock:
                if self._si is used:  # another thread may have renewed it already
                    log.info("vSphere %s: the session expired during %s; logging in again", self.spec.host, what)
                    self._si = None
                    self._placement.clear()  # its objects are bound to the old session
        try:
            return call()
        except vim.fault.NotAuthenticated as exc:
            raise ProviderError(f"vSphere {self.spec.host}: {what}: the session was refused again right after a "
                                "new login", hint="check the vCenter's session limits and the user's "
                                "permissions (Sessions.ValidateSession)") from exc

    def _datacenter(self) -> Any:
        return self._once("datacenter", lambda: inv.datacenter(self.si, self.spec.datacenter))

    def _cluster(self, dc: Any) -> Any:
        return self._once("cluster", lambda: self._read_cluster(dc))

    def _read_cluster(self, dc: Any) -> Any:
        clusters = inv.by_name(self.si, dc.hostFolder, vim.ComputeResource)
        if self.spec.cluster is None:
            return next(iter(clusters.values()))
        return inv.pick("cluster", self.spec.cluster, clusters, self._where)

    def _pool(self, cluster: Any) -> Any:
        return self._once("pool", lambda: self._read_pool(cluster))

    def _read_pool(self, cluster: Any) -> Any:
        root = cluster.resourcePool
        if self.spec.resource_pool is None:
            return root
        pools = {root.name: root} | inv.by_name(self.si, root, vim.ResourcePool)
        return inv.pick("resource pool", self.spec.resource_pool, pools, f"cluster {cluster.name}")

    def _datastore(self, dc: Any) -> Any:
        return self._once("datastore", lambda: inv.pick("datastore", self.spec.datastore,
                                                        {ds.name: ds for ds in dc.datastore}, self._where))

    def _parent_folder(self, dc: Any) -> Any:
        wanted = self.spec.folder
        if wanted is None:
            return self._once("vm folder", lambda: dc.vmFolder)
        return self._once("folder", lambda: inv.pick("folder", wanted, inv.by_name(self.si, dc.vmFolder, vim.Folder),
                                                     self._where))

    def _network(self, dc: Any, name: str) -> Any:
        networks = self._once("networks", lambda: inv.by_name(self.si, dc.networkFolder, vim.Network))
        return inv.pick("port group", name, networks, self._where)

    def _template(self, dc: Any, name: str) -> Any:
        vms = self._once("templates", lambda: inv.by_name(self.si, dc.vmFolder, vim.VirtualMachine))
        return inv.pick("template", name, vms, self._where)

    @property
    def _where(self) -> str:
        return f"datacenter {self.spec.datacenter}"

    def _check(self) -> None:
        dc = self._datacenter()
        self._pool(self._cluster(dc))
        self._datastore(dc)
        self._parent_folder(dc)

    # -- networks and images: port groups and templates must exist ---------------------------
    def _create_network(self, net: ResolvedNetwork, tags: Tags) -> dict[str, Any]:  # noqa: ARG002
        """A lab network of mode bridge is the port group its ``bridge:`` names (default: its own name)."""
        portgroup = net.bridge or net.name
        self._network(self._datacenter(), portgroup)
        return {"portgroup": portgroup}

    def _portgroup(self, network: str) -> str:
        """The port group of lab network ``network`` (its ``bridge:``, else its own name)."""
        net = self.ctx.networks.get(network)
        return (net.bridge if net is not None else None) or network

    def delete_network(self, name: str) -> None:
        """Port groups belong to the vCenter, not to the lab: nothing to delete."""

    def _prepare_image(self, image: ResolvedImage) -> dict[str, Any]:
        if image.source != "template" or not image.template:
            raise ProviderError(f"provider {self.name} (vsphere) boots templates only, not image {image.name} "
                                f"({image.source})", hint="use image: {template: NAME}")
        self._template(self._datacenter(), image.template)
        return {"image": image.name, "template": image.template}

    # -- machines ------------------------------------------------------------------------------
    def vm_name(self, machine: str) -> str:
        name = f"{self.ctx.lab}-{machine}"
        if len(name) > 80 or _BAD_NAME_CHARS & set(name):
            raise ProviderError(f"VM name {name!r} is not one vCenter accepts (at most 80 characters, "
                                "no % / \\)")
        return name

    def _lab_folder(self, dc: Any, create: bool, lab: str | None = None) -> Any:
        """The lab's folder (one SearchIndex call: no listing that a parallel delete can race)."""
        parent = self._parent_folder(dc)
        name = lab or self.ctx.lab
        with self._folder_lock:
            found = self.si.content.searchIndex.FindChild(parent, name)
            if found is not None or not create:
                return found
            return parent.CreateFolder(name)

    def _create_machine(self, node: ResolvedNode, tags: Tags) -> MachineInfo:
        found = self._find(node.name)
        if found is not None:
            return self._running(node.name, found)
        name = self.vm_name(node.name)
        dc = self._datacenter()
        image = self.ctx.images.get(node.image)
        template = self._template(dc, (image.template if image is not None else None) or node.image)
        networks = [self._network(dc, self._portgroup(nic.network)) for nic in node.nics]
        spec = clone_spec(template, mode=self.spec.clone, datastore=self._datastore(dc),
                          pool=self._pool(self._cluster(dc)), config=tags_spec(node, tags))
        config = config_spec(node, name, tags, networks, self.ctx.ssh_public_key)
        folder = self._lab_folder(dc, create=True)
        vm = self._task(lambda: template.CloneVM_Task(folder=folder, name=name, spec=spec), f"clone of {name}")
        with self._session_lock:
            self._lab_vms()[node.name] = vm  # tagged by the clone itself: a re-run finds it even if the rest fails
        self._task(lambda: vm.ReconfigVM_Task(spec=config), f"reconfigure of {name}")
        self._task(vm.PowerOnVM_Task, f"power-on of {name}")
        return self._running(node.name, vm)

    def _running(self, machine: str, vm: Any) -> MachineInfo:
        """``vm`` powered on (again, when it was found off) with its guest's address reported."""
        if str(vm.runtime.powerState) != "poweredOn":
            self._task(vm.PowerOnVM_Task, f"power-on of {vm.name}")
        guest = wait_for(self.si, vm, GUEST_PATHS, guest_ready, timeout=self.spec.guest_timeout,
                         collector=self._collector(),
                         what=f"VMware Tools in {vm.name} to report the guest running with an IPv4 address")
        return self._info(machine, vm, guest)

    def _task(self, start: Any, what: str) -> Any:
        with self.tasks.slot():
            return wait_task(self.si, start(), what=what, collector=self._collector())

    def _collector(self) -> Any:
        """This thread's PropertyCollector for waits, made once per session (waits in parallel threads
        must not see each other's updates, so each thread has its own)."""
        return self._once(f"collector {threading.get_ident()}",
                          lambda: self.si.content.propertyCollector.CreatePropertyCollector())  # noqa: PLW0108

    def _find(self, machine: str) -> Any:
        return self._lab_vms().get(machine)

    def _lab_vms(self) -> dict[str, Any]:
        """The lab's tagged VMs by machine name: one scan per session (not one per VM: 500 scans of 500 VMs),
        kept up to date by this provider's creates and deletes."""
        def scan() -> dict[str, Any]:
            return {extra[inv.NAME_KEY]: vm for vm, extra in inv.tagged_vms(self.si)
                    if extra.get(inv.TAG_PREFIX + "lab") == self.ctx.lab and inv.NAME_KEY in extra}

        return self._once("lab vms", scan)

    def _info(self, machine: str, vm: Any, guest: dict[str, Any] | None = None) -> MachineInfo:
        """What the lab records of ``vm``: power state, and where its guest is once Tools reported it."""
        state = _POWER.get(str(vm.runtime.powerState), "unknown")
        extra = {"vm": vm.name, "moid": vm._moId}
        node = self.ctx.nodes.get(machine)
        found = guest_wanted(guest if guest is not None else _guest_now(vm), self._lab_networks(node))
        if state != "running" or found is None or node is None or self.ctx.ssh_private_key is None:
            return MachineInfo(name=machine, state=state, extra=extra)
        ip, network = found
        ssh = SshEndpoint(ip, node.ssh_port, node.ssh_user, self.ctx.ssh_private_key)
        return MachineInfo(name=machine, state=state, ssh=ssh, addresses={network: ip}, extra=extra | {"ip": ip})

    def _lab_networks(self, node: ResolvedNode | None) -> dict[str, str]:
        """Port group -> lab network, for the node's NICs."""
        if node is None:
            return {}
        return {self._portgroup(nic.network): nic.network for nic in node.nics}

    def _status(self, name: str) -> MachineInfo:
        vm = self._find(name)
        return MachineInfo(name=name, state="absent") if vm is None else self._info(name, vm)

    def _delete_machine(self, name: str) -> None:
        vm = self._find(name)
        if vm is not None:
            self._destroy(vm)
        self._remove_empty_folder()

    def _destroy(self, vm: Any) -> None:
        if str(vm.runtime.powerState) == "poweredOn":
            self._task(vm.PowerOffVM_Task, f"power-off of {vm.name}")
        self._task(vm.Destroy_Task, f"destroy of {vm.name}")
        with self._session_lock:  # reap removes VMs of this lab too
            known = self._placement.get("lab vms") or {}
            for machine in [m for m, found in known.items() if found._moId == vm._moId]:
                del known[machine]

    def _remove_empty_folder(self, lab: str | None = None) -> None:
        with self._folder_lock:
            folder = self._lab_folder(self._datacenter(), create=False, lab=lab)
            if folder is not None and isinstance(folder, vim.Folder) and not folder.childEntity:
                self._task(folder.Destroy_Task, f"removal of folder {folder.name}")

    # -- tags ----------------------------------------------------------------------------------
    def _find_resources(self, lab: str | None = None) -> list[TaggedResource]:
        out = []
        for _vm, extra in inv.tagged_vms(self.si):
            tags = inv.tags_from(extra)
            if tags is not None and (lab is None or tags.lab == lab):
                out.append(TaggedResource(kind="machine", name=extra.get(inv.NAME_KEY, ""), tags=tags,
                                          provider=self.name))
        return out

    def _reap_candidates(self) -> list[TaggedResource]:
        return [TaggedResource(kind="machine", name=vm.name, tags=tags, provider=self.name)
                for vm, extra in inv.tagged_vms(self.si) if (tags := inv.tags_from(extra)) is not None]

    def _reap_remove(self, resource: TaggedResource) -> None:
        for vm, _extra in inv.tagged_vms(self.si):
            if vm.name == resource.name:
                self._destroy(vm)
        self._remove_empty_folder(resource.tags.lab)


def _guest_now(vm: Any) -> dict[str, Any]:
    """The guest's properties as one read of the VM reports them (``status`` of a machine made earlier)."""
    guest = vm.guest
    return {"guest.toolsRunningStatus": getattr(guest, "toolsRunningStatus", None),
            "guest.ipAddress": getattr(guest, "ipAddress", None), "guest.net": getattr(guest, "net", None)}
