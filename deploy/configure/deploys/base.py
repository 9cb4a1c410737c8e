"""base: hostname, /etc/hosts, apt mirror, swap off, kernel modules, sysctls, time sync."""

from __future__ import annotations

from io import StringIO

from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from deploy.configure.deploys import OpSink
from deploy.configure.operations import system
from deploy.configure.settings import ConfigureSettings

MODULES = ["overlay", "br_netfilter"]
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}


def hosts_block(settings: ConfigureSettings) -> str:
    """/etc/hosts lines for every lab node (short name, and FQDN when the lab has a domain)."""
    lines = []
    for name, address in sorted(settings.hosts.items()):
        names = f"{name}.{settings.domain} {name}" if settings.domain else name
        lines.append(f"{address} {names}")
    return "\n".join(lines)


def debian_sources(mirror: str, codename: str) -> str:
    """deb822 sources for Debian ``codename`` from ``mirror`` (security from the same mirror tree)."""
    mirror = mirror.rstrip("/")
    return (
        f"{system.HEADER}\n"
        f"Types: deb\nURIs: {mirror}\nSuites: {codename} {codename}-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def deploy(ops: OpSink, settings: ConfigureSettings) -> None:
    ops.add("hostname", system.hostname, hostname=ops.target.name)
    if settings.hosts:
        ops.add(
            "lab nodes in /etc/hosts",
            files.block,
            path="/etc/hosts",
            content=hosts_block(settings),
            marker="# {mark} labdeploy lab nodes",
        )
    _apt(ops, settings)
    ops.add("swap off", system.swap_off)
    ops.add("kernel modules", system.kernel_modules, modules=MODULES)
    ops.add("kubernetes sysctls", system.sysctls, values=SYSCTLS)
    _time(ops, settings)


def _apt(ops: OpSink, settings: ConfigureSettings) -> None:
    if settings.mirrors_apt:
        codename = ops.fact(LinuxDistribution)["release_meta"].get("VERSION_CODENAME") or "stable"
        sources = ops.add("apt mirror", system.apt_sources, text=debian_sources(settings.mirrors_apt, codename))
        ops.add("apt update after mirror change", apt.update, _if=sources.did_change)
    ops.apt_lists()


def _time(ops: OpSink, settings: ConfigureSettings) -> None:
    if settings.timezone:
        ops.add("timezone", server.timezone, timezone=settings.timezone)
    if not settings.ntp_servers:
        return  # time sync stays as the image has it: no default pool servers are contacted
    ops.add("time sync package", apt.packages, packages=["systemd-timesyncd"], no_recommends=True)
    conf = "[Time]\nNTP=" + " ".join(settings.ntp_servers) + "\nFallbackNTP=\n"
    written = ops.add(
        "time sync servers",
        files.put,
        src=StringIO(conf),
        dest="/etc/systemd/timesyncd.conf.d/labdeploy.conf",
        create_remote_dir=True,
    )
    ops.add("time sync running", systemd.service, service="systemd-timesyncd", running=True, enabled=True)
    ops.add(
        "time sync restart on change",
        systemd.service,
        service="systemd-timesyncd",
        restarted=True,
        _if=written.did_change,
    )
