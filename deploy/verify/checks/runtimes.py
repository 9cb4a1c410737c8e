"""Container runtime checks: each configured containerd handler runs a smoke container; Wasm runs a module.

The commands and names are agreed with the configure layer (see the note in the design notes):
the image ``localhost/labdeploy/smoke:latest`` is imported into containerd's ``k8s.io`` namespace.
"""

from __future__ import annotations

import os
import shlex
from functools import partial

from deploy.verify import vmsandbox
from deploy.verify.context import Check, VerifyContext
from deploy.verify.model import VerifyTarget
from deploy.verify.retry import CheckFailure, Deadline
from deploy.verify.wasm import MARKER as WASM_MARKER
from deploy.verify.wasm import hello_module

SMOKE_IMAGE = "localhost/labdeploy/smoke:latest"
SMOKE_MARKER = "labdeploy-smoke-ok"
CONTAINER_ROLES = ("k8s-control-plane", "k8s-worker", "container-host")

# lab runtime name -> (containerd CRI handler name, `ctr run` flags selecting it)
HANDLERS: dict[str, tuple[str, str]] = {
    "runc": ("runc", "--runtime io.containerd.runc.v2"),
    "crun": ("crun", "--runtime io.containerd.runc.v2 --runc-binary /usr/bin/crun"),
    "gvisor": ("runsc", "--runtime io.containerd.runsc.v1"),
    "kata": ("kata", "--runtime io.containerd.kata.v2"),
}
WASM_RUNTIMES = ("wasmedge",)
VM_RUNTIMES = ("kata",)  # probed for KVM (deploy.verify.vmsandbox) before their smoke container


def container_nodes(ctx: VerifyContext) -> list[VerifyTarget]:
    """Nodes that run containerd: those with a Kubernetes/container role, else every node."""
    chosen = [t for t in ctx.targets if set(t.roles) & set(CONTAINER_ROLES)]
    return chosen or list(ctx.targets)


def checks(ctx: VerifyContext) -> list[Check]:
    found: list[Check] = []
    for t in container_nodes(ctx):
        for runtime in ctx.runtimes:
            found.append(_check_for(ctx, t, runtime))
    return found


def _check_for(ctx: VerifyContext, t: VerifyTarget, runtime: str) -> Check:
    shell = ctx.shell(t)
    deadline = Deadline(timeout=90, interval=5)
    if runtime in WASM_RUNTIMES:
        return Check(
            f"{runtime} runs a Wasm module",
            "runtimes",
            partial(check_wasm, ctx, t, runtime),
            t.name,
            shell.reproduce(wasm_command(runtime, "/tmp/labdeploy-verify.wasm")),
            deadline,
        )
    if runtime not in HANDLERS:
        return Check(f"{runtime} handler", "runtimes", partial(_unknown, t, runtime), t.name)
    return Check(
        f"{runtime} runs a container",
        "runtimes",
        partial(check_handler, ctx, t, runtime),
        t.name,
        shell.reproduce(smoke_command(runtime, "labdeploy-verify")),
        deadline,
    )


def _unknown(t: VerifyTarget, runtime: str) -> None:
    known = ", ".join([*HANDLERS, *WASM_RUNTIMES])
    raise CheckFailure(f"runtime {runtime!r}", node=t.name, expected=f"one of {known}", seen=runtime)


def handler_configured_command(runtime: str) -> str:
    handler = HANDLERS[runtime][0]
    pattern = r"containerd\.runtimes\.[\"']?" + handler + r"[\"']?\]"
    return f"containerd config dump | grep -E {shlex.quote(pattern)}"


# gVisor's shim does not finish `ctr run` (gVisor tests it through CRI only: google/gvisor#4544; here
# with containerd 2.4 ctr never sees the task exit): runsc itself runs a sandbox of the node's root
# instead, and the RuntimeClass check proves the containerd handler through Kubernetes.
SANDBOX_SMOKE = {"gvisor": f"runsc --network=none do /bin/echo {SMOKE_MARKER}"}


def smoke_command(runtime: str, container: str) -> str:
    if runtime in SANDBOX_SMOKE:
        return SANDBOX_SMOKE[runtime]
    flags = HANDLERS[runtime][1]
    return f"ctr -n k8s.io run --rm {flags} {SMOKE_IMAGE} {container} /bin/echo {SMOKE_MARKER}"


def wasm_command(runtime: str, path: str) -> str:
    return f"{runtime} {path}"


def check_handler(ctx: VerifyContext, t: VerifyTarget, runtime: str) -> None:
    if runtime in VM_RUNTIMES:  # no KVM: nothing else about the handler matters, and waiting cannot help
        vmsandbox.require(ctx, [t], runtime)
    shell = ctx.shell(t)
    configured = handler_configured_command(runtime)
    found = shell.run(configured)
    if found.rc != 0:
        raise CheckFailure(
            f"containerd runtime handler {HANDLERS[runtime][0]!r}",
            node=t.name,
            expected=f"a runtimes.{HANDLERS[runtime][0]} section in containerd's CRI config",
            seen=(found.stdout + found.stderr).strip() or "no such section",
            reproduce=shell.reproduce(configured),
        )
    command = smoke_command(runtime, f"labdeploy-verify-{runtime}-{os.getpid()}")
    result = shell.run(command, timeout=120)
    if result.rc != 0 or SMOKE_MARKER not in result.stdout:
        raise CheckFailure(
            f"smoke container under {runtime}",
            node=t.name,
            expected=f"rc 0 and {SMOKE_MARKER!r} on stdout",
            seen=f"rc {result.rc}: {result.stdout}{result.stderr}",
            reproduce=shell.reproduce(command),
        )


def check_wasm(ctx: VerifyContext, t: VerifyTarget, runtime: str) -> None:
    shell = ctx.shell(t)
    path = f"/tmp/labdeploy-verify-{os.getpid()}.wasm"
    shell.put(hello_module(), path, mode=0o644)
    command = wasm_command(runtime, path)
    result = shell.run(command)
    shell.run(f"rm -f {path}")
    if result.rc != 0 or WASM_MARKER not in result.stdout:
        raise CheckFailure(
            f"Wasm module under {runtime}",
            node=t.name,
            expected=f"rc 0 and {WASM_MARKER!r} on stdout",
            seen=f"rc {result.rc}: {result.stdout}{result.stderr}",
            reproduce=shell.reproduce(command),
        )
