"""Can a node run VM sandboxes (Kata)? A probe over SSH, before any Kata pod or ``ctr run``.

Kata starts each sandbox as a QEMU/KVM guest, so its node needs ``/dev/kvm`` that root can open
read-write and a CPU that exposes hardware virtualization (``vmx`` on Intel, ``svm`` on AMD in
/proc/cpuinfo; inside a VM that is nested virtualization). A node that lacks either cannot start a
Kata pod however long a check waits, so :func:`require` fails at once (a ``final`` CheckFailure)
with "this host cannot run VM sandboxes: <node>: <reason>; ...".

Paravirtual KVM hosts (e.g. PVM) have a working /dev/kvm but no vmx/svm flag: stock guest kernels
hang there, and the probe says no (the same rule as the libvirt provider's ``accel: auto``).

    PROBE_COMMAND                the shell script run on a node (POSIX sh, bash or dash)
    parse_probe(node, text)      its output -> VmSupport (pure; tested with data fixtures)
    probe(ctx, targets)          VmSupport of each target, over the check context's shells
    require(ctx, targets)        raises CheckFailure unless every target can run VM sandboxes
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from deploy.verify.context import VerifyContext
from deploy.verify.model import VerifyTarget
from deploy.verify.retry import CheckFailure

# ``[ -c ]`` first: ``<>`` creates a missing file, and root must not leave a plain file at /dev/kvm.
PROBE_COMMAND = (
    "echo arch=$(uname -m); "
    "if [ -c /dev/kvm ]; then "
    "if err=$( (exec 3<>/dev/kvm) 2>&1 ); then echo kvm=open; else echo \"kvm=unopenable $err\"; fi; "
    "elif [ -e /dev/kvm ]; then echo kvm=not-a-device; else echo kvm=missing; fi; "
    "grep -m1 '^flags' /proc/cpuinfo || echo 'flags :'"
)
REPRODUCE = "ls -l /dev/kvm; grep -m1 -o -w -E 'vmx|svm' /proc/cpuinfo || echo 'no vmx/svm'"
VIRT_FLAGS = ("vmx", "svm")
X86 = ("x86_64", "i686", "i386", "amd64")
NEEDS = ("/dev/kvm that root opens read-write and a CPU with vmx or svm in /proc/cpuinfo "
         "(hardware virtualization; nested KVM when the node is itself a VM)")
PREFIX = "this host cannot run VM sandboxes: "


@dataclass(frozen=True)
class VmSupport:
    """What one node offers a VM sandbox, as its probe reported it."""

    node: str
    arch: str
    kvm: str  # open | missing | not-a-device | unopenable <error> | unknown
    flags: frozenset[str]

    @property
    def has_virt_flag(self) -> bool:
        if self.arch and self.arch not in X86:  # vmx/svm are x86 flags (arm64's KVM needs none)
            return True
        return bool(self.flags & set(VIRT_FLAGS))

    def reasons(self) -> list[str]:
        """Why this node cannot run VM sandboxes; empty when it can."""
        found = []
        if self.kvm == "missing":
            found.append("no /dev/kvm (no kvm module loaded, or no hardware virtualization)")
        elif self.kvm == "not-a-device":
            found.append("/dev/kvm is not a character device")
        elif self.kvm == "unknown":
            found.append("the probe reported nothing about /dev/kvm")
        elif self.kvm != "open":
            detail = self.kvm.removeprefix("unopenable").strip()
            found.append(f"/dev/kvm does not open read-write ({detail or self.kvm})")
        if not self.has_virt_flag:
            found.append("/proc/cpuinfo has neither vmx nor svm (nested virtualization is off)")
        return found

    def describe(self) -> str:
        """What the probe saw, for a failure's ``seen``."""
        virt = sorted(self.flags & set(VIRT_FLAGS)) or ["neither vmx nor svm"]
        guest = ", a VM (hypervisor flag)" if "hypervisor" in self.flags else ""
        return f"{self.node}: /dev/kvm {self.kvm}; CPU {self.arch}{guest}: {', '.join(virt)}"


def parse_probe(node: str, text: str) -> VmSupport:
    """The :class:`VmSupport` of ``node`` from :data:`PROBE_COMMAND`'s output."""
    arch, kvm, flags = "", "unknown", frozenset[str]()
    for line in text.splitlines():
        if line.startswith("arch="):
            arch = line.split("=", 1)[1].strip()
        elif line.startswith("kvm="):
            kvm = line.split("=", 1)[1].strip() or "unknown"
        elif line.startswith("flags") and ":" in line:
            flags = frozenset(line.split(":", 1)[1].split())
    return VmSupport(node, arch, kvm, flags)


def probe(ctx: VerifyContext, targets: Iterable[VerifyTarget]) -> list[VmSupport]:
    """Run the probe on each target (an unreachable node raises the shell's CheckFailure)."""
    found = []
    for t in targets:
        result = ctx.shell(t).run(PROBE_COMMAND, timeout=30)
        found.append(parse_probe(t.name, result.stdout))
    return found


def require(ctx: VerifyContext, targets: list[VerifyTarget], runtime: str = "kata") -> list[VmSupport]:
    """Every target's VmSupport; a final CheckFailure ("this host cannot run VM sandboxes: ...") when
    any of them cannot run VM sandboxes, since waiting cannot give a node KVM."""
    support = probe(ctx, targets)
    unable = [s.node for s in support if s.reasons()]
    if unable:
        first = next(t for t in targets if t.name == unable[0])
        failure = failure_of(support, runtime, ctx.shell(first).reproduce(REPRODUCE))
        assert failure is not None
        raise failure
    return support


def failure_of(support: list[VmSupport], runtime: str = "kata", reproduce: str = "") -> CheckFailure | None:
    """The CheckFailure naming every node of ``support`` that cannot run VM sandboxes, or None."""
    unable = [s for s in support if s.reasons()]
    if not unable:
        return None
    reasons = "; ".join(f"{s.node}: {', '.join(s.reasons())}" for s in unable)
    return CheckFailure(
        PREFIX + reasons,
        expected=f"{runtime} needs {NEEDS}",
        seen="; ".join(s.describe() for s in support),
        reproduce=reproduce,
        final=True,
    )
