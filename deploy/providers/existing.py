"""The ``existing`` provider: machines that are already there, reached over SSH.

It owns nothing and therefore creates and deletes nothing: "creating" a machine checks that
it answers over SSH with the given key (and records its host key on first contact);
"deleting" leaves it alone. A lab file gives each such node its ``address``, ``ssh_user``,
``ssh_port`` and ``ssh_key`` (default: the lab's key).

Its spec is :class:`deploy.model.schema.ExistingProviderSpec` (``connect_timeout``: seconds to
wait for SSH in create_machine/status).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typing_extensions import override

from deploy.errors import ProviderError
from deploy.model.resolved import ResolvedNetwork, ResolvedNode
from deploy.model.schema import ExistingProviderSpec
from deploy.providers.base import (
    Capabilities,
    MachineInfo,
    Provider,
    ProviderContext,
    SshEndpoint,
    TaggedResource,
    Tags,
)
from deploy.ssh import HostKeyStore, known_hosts_path, wait_for_ssh
from deploy.ssh.keys import check_private_key_mode


class ExistingProvider(Provider[ExistingProviderSpec]):
    """Hosts that exist outside labdeploy; only their reachability is checked."""

    kind = "existing"
    spec_model = ExistingProviderSpec
    capabilities = Capabilities(network_modes=frozenset({"user", "isolated", "nat", "bridge"}),
                                host_reachable_modes=frozenset({"user", "isolated", "nat", "bridge"}),
                                machines=False)

    def __init__(self, name: str, spec: ExistingProviderSpec, ctx: ProviderContext) -> None:
        super().__init__(name, spec, ctx)
        self.connect_timeout = spec.connect_timeout
        self.known_hosts = HostKeyStore(known_hosts_path(ctx.state_dir))
        self._endpoints: dict[str, SshEndpoint] = {}

    @override
    def create_network(self, net: ResolvedNetwork, tags: Tags) -> dict[str, Any]:
        """Create nothing: the network of existing hosts is already there."""
        return {}

    @override
    def delete_network(self, name: str) -> None:
        """Delete nothing (by design: this provider owns no network)."""

    @override
    def create_machine(self, node: ResolvedNode, tags: Tags) -> MachineInfo:
        """Create nothing; check that ``node`` answers over SSH and report it running."""
        endpoint = self._endpoint(node)
        self.ctx.log(f"{node.name}: waiting for SSH at {endpoint.host}:{endpoint.port}")
        wait_for_ssh(endpoint, known_hosts=self.known_hosts, alias=node.name, timeout=self.connect_timeout)
        self._endpoints[node.name] = endpoint
        return MachineInfo(name=node.name, state="running", ssh=endpoint, addresses=self._addresses(node))

    @override
    def delete_machine(self, name: str) -> None:
        """Delete nothing (by design: the machine existed before the lab and outlives it)."""
        self._endpoints.pop(name, None)

    @override
    def status(self, name: str) -> MachineInfo:
        """``running`` when the machine answers over SSH, ``unknown`` otherwise.

        Nodes are known from :meth:`create_machine` or from the lab (``ctx.nodes``).
        """
        endpoint = self._endpoints.get(name)
        if endpoint is None and name in self.ctx.nodes:
            endpoint = self._endpoint(self.ctx.nodes[name])
        if endpoint is None:
            return MachineInfo(name=name, state="unknown", extra={"reason": "not a node of this lab"})
        try:
            wait_for_ssh(endpoint, known_hosts=self.known_hosts, alias=name, timeout=self.connect_timeout)
        except ProviderError as exc:
            return MachineInfo(name=name, state="unknown", ssh=endpoint, extra={"reason": exc.message})
        return MachineInfo(name=name, state="running", ssh=endpoint)

    @override
    def find_resources(self, lab: str | None = None) -> list[TaggedResource]:
        """Nothing: this provider creates no resources, so none can be left over."""
        return []

    def _endpoint(self, node: ResolvedNode) -> SshEndpoint:
        if not node.address:
            raise ProviderError(
                f"node {node.name!r} uses provider {self.name!r} (kind existing) but has no address",
                hint=f"set `address: <host or IP>` for {node.name!r} in the lab file",
            )
        key = self._key_path(node)
        return SshEndpoint(host=node.address, port=node.ssh_port, user=node.ssh_user, key_path=key)

    def _key_path(self, node: ResolvedNode) -> Path:
        if node.ssh_key:
            key = Path(node.ssh_key).expanduser()
        elif self.ctx.ssh_private_key is not None:
            key = self.ctx.ssh_private_key
        else:
            raise ProviderError(
                f"node {node.name!r} has no ssh_key and the lab has no SSH key",
                hint=f"set `ssh_key: <private key file>` for {node.name!r}",
            )
        check_private_key_mode(key)
        return key

    @staticmethod
    def _addresses(node: ResolvedNode) -> dict[str, str]:
        return {nic.network: nic.ip for nic in node.nics if nic.ip}
