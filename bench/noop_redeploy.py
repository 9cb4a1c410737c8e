"""No-op re-deploy of a converged lab: our configure() vs ansible-playbook vs plain pyinfra (the floor).

    .venv/bin/python bench/noop_redeploy.py [--sizes 1,10] [--repeat 3] [--max-seconds 1800]

What is timed is configure alone on hosts that are already converged (no VM boot, no `deploy
up` around it, no verify): how fast each tool confirms that nothing needs changing.
N = 1: a real trixie VM under QEMU/TCG (image from the image cache, loopback port forward), roles
base + containerd: 14 operations today (hostname, /etc/hosts, apt lists, swap, modules, sysctls,
runtime packages, containerd package, handler binaries, config.toml, service, restart-on-change,
smoke-test image); the report prints the count it measured.
N > 1: N chroot test hosts (a converged trixie rootfs, each in its own mount and PID namespace
with its own sshd on a loopback port; tests/integration/configure_fixtures.py), role runtimes:
apt lists + runtime packages. They share the host's kernel, so no kernel-level operations.

Every host is converged first (configure(), untimed), then per repetition, side by side:
  ours    configure() on the converged hosts: one pass, zero changes (the gate needs no 2nd pass)
  floor   plain pyinfra: State/Inventory/connect_all/add_op/run_ops with the very same
          operations and arguments, no driver around them
  ansible ansible-playbook with the same tasks (builtin modules), pipelining on, forks = N
Prints the median times and ours/floor, ansible/ours. Target (issue 4): ours <= 1.2x floor and
ansible >= 5x ours. Stops by itself after --max-seconds (machines are torn down either way).
ansible-playbook comes from ansible-core in this venv (`make bench` installs it); without it the
benchmark says so in one line, measures ours and the floor, and exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.inventory import Inventory
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import State

from deploy.configure.deploys import OpSink, PlannedOp, step_function, steps_for_roles
from deploy.configure.deploys.base import MODULES, SYSCTLS, hosts_block
from deploy.configure.deploys.containerd import handler_dicts
from deploy.configure.deploys.runtimes import packages
from deploy.configure.driver import HostTarget, configure
from deploy.configure.inventory import host_data
from deploy.configure.operations import lines_text
from deploy.configure.operations.containerd import SMOKE_IMAGE, SMOKE_NAMESPACE, render_config, smoke_image_script
from deploy.configure.operations.system import HEADER
from deploy.configure.settings import ConfigureSettings
from tests.integration import configure_fixtures as fx

VM_SETTINGS = ConfigureSettings(
    hosts={"node1": "10.0.2.15", "node2": "10.0.2.16"}, runtimes=("runc", "crun", "wasmedge")
)
CHROOT_SETTINGS = ConfigureSettings(runtimes=("runc", "crun", "wasmedge"))
ANSIBLE_NEEDS = "python3-apt"  # ansible's apt module imports apt_pkg on the node


class Timeout(Exception):
    pass


@dataclass
class Lab:
    """Converged hosts, one known_hosts file for all, and the settings they were converged with."""

    targets: list[HostTarget]
    known_hosts: Path
    settings: ConfigureSettings
    kind: str


# --- the three contenders ---------------------------------------------------------------------


def run_ours(lab: Lab) -> float:
    start = time.monotonic()
    result = configure(lab.targets, lab.settings, known_hosts=lab.known_hosts, parallel=len(lab.targets)).check()
    seconds = time.monotonic() - start
    if result.changed:
        raise RuntimeError(f"ours: a converged lab changed: {result.changed}")
    return seconds


@dataclass
class _Later:
    """Stands for an operation's meta until the floor adds the operation (``_if`` callbacks use it)."""

    meta: Any = None

    def did_change(self) -> bool:
        return bool(self.meta.did_change())


@dataclass
class _RecordingSink(OpSink):
    """Runs our deploy steps only to learn which pyinfra operations (and arguments) they add."""

    calls: list[tuple[str, Any, dict[str, Any], _Later]] = field(default_factory=list)

    def add(self, name: str, op: Any, **kwargs: Any) -> Any:
        later = _Later()
        self.ops.append(PlannedOp(name, "", later))  # type: ignore[arg-type]
        self.calls.append((name, op, kwargs, later))
        return later


def floor_operations(lab: Lab) -> dict[str, list[tuple[str, Any, dict[str, Any], _Later]]]:
    """Per host, the operation calls our deploys make (recorded without connecting)."""
    inventory = Inventory(([(t.name, {}) for t in lab.targets], {}))  # type: ignore[no-untyped-call]
    state = State(inventory, Config())  # type: ignore[no-untyped-call]
    calls = {}
    for target in lab.targets:
        sink = _RecordingSink(state, inventory.get_host(target.name), target)
        for step in steps_for_roles(target.roles):
            step_function(step)(sink, lab.settings)
        calls[target.name] = sink.calls
    return calls


def run_floor(lab: Lab) -> float:
    calls = floor_operations(lab)  # plain data: the same operations, made before the clock starts
    start = time.monotonic()
    names = [(t.name, host_data(t, lab.known_hosts)) for t in lab.targets]
    state = State(Inventory((names, {})), Config(PARALLEL=len(lab.targets), CONNECT_TIMEOUT=20))  # type: ignore[no-untyped-call]
    connect_all(state)
    metas = []
    for host in state.inventory:
        for name, op, kwargs, later in calls[host.name]:
            later.meta = add_op(state, op, name=name, host=host, **kwargs)[host]
            metas.append((host.name, name, later.meta))
    run_ops(state)
    disconnect_all(state)
    seconds = time.monotonic() - start
    changed = [(h, n) for h, n, meta in metas if meta.did_change() or meta.did_error()]
    if changed:
        raise RuntimeError(f"floor: a converged lab changed or failed: {changed}")
    return seconds


def ansible_tasks(lab: Lab) -> list[dict[str, Any]]:
    """The tasks our deploys perform, as ansible-core builtin modules."""
    s = lab.settings
    tasks: list[dict[str, Any]] = []
    if lab.kind == "vm":
        tasks += _ansible_base(s)
    tasks += [
        {"name": "apt package lists", "ansible.builtin.apt": {"update_cache": True, "cache_valid_time": 604800}},
        {"name": "packages", "ansible.builtin.apt": {"name": packages(s), "install_recommends": False}},
    ]
    if lab.kind == "vm":
        tasks += _ansible_containerd(s)
    return tasks


def _shell(name: str, script: str) -> dict[str, Any]:
    """A shell task that reports a change only when it printed CHANGED (as our operations decide)."""
    return {
        "name": name,
        "ansible.builtin.shell": script,
        "register": "out",
        "changed_when": "'CHANGED' in out.stdout",
    }


def _ansible_base(s: ConfigureSettings) -> list[dict[str, Any]]:
    keys = sorted(SYSCTLS)
    sysctl_text = lines_text([HEADER, *(f"{k} = {SYSCTLS[k]}" for k in keys)])
    sets = " ".join(f"{k}={SYSCTLS[k]}" for k in keys)
    return [
        {"name": "hostname", "ansible.builtin.hostname": {"name": "{{ inventory_hostname }}", "use": "debian"}},
        {
            "name": "lab nodes in /etc/hosts",
            "ansible.builtin.blockinfile": {
                "path": "/etc/hosts",
                "block": hosts_block(s),
                "marker": "# {mark} labdeploy lab nodes",
            },
        },
        _shell("swap off", 'if [ -n "$(tail -n +2 /proc/swaps)" ]; then swapoff -a; echo CHANGED; fi'),
        {
            "name": "kernel modules persisted",
            "ansible.builtin.copy": {
                "dest": "/etc/modules-load.d/labdeploy.conf",
                "content": lines_text([HEADER, *MODULES]),
            },
        },
        _shell(
            "kernel modules loaded",
            f"for m in {' '.join(MODULES)}; do test -d /sys/module/$m || {{ modprobe $m; echo CHANGED; }}; done",
        ),
        {
            "name": "kubernetes sysctls persisted",
            "ansible.builtin.copy": {"dest": "/etc/sysctl.d/90-labdeploy.conf", "content": sysctl_text},
        },
        _shell(
            "kubernetes sysctls set",
            f"for kv in {sets}; do k=${{kv%=*}}; v=${{kv#*=}}; "
            '[ "$(sysctl -n $k 2>/dev/null)" = "$v" ] || { sysctl -qw "$kv"; echo CHANGED; }; done',
        ),
    ]


def _ansible_containerd(s: ConfigureSettings) -> list[dict[str, Any]]:
    handlers = handler_dicts(s)
    tasks: list[dict[str, Any]] = [
        {"name": "containerd package", "ansible.builtin.apt": {"name": "containerd", "install_recommends": False}},
    ]
    for h in handlers:
        tasks.append(
            {
                "name": f"handler {h['name']} binary",
                "ansible.builtin.command": f"test -x {h['binary']}",
                "changed_when": False,
            }
        )
    tasks += [
        {
            "name": "containerd config",
            "ansible.builtin.copy": {"dest": "/etc/containerd/config.toml", "content": render_config(handlers)},
            "notify": "containerd restart on config change",
        },
        _shell(
            "smoke test image",
            f"ctr -n {SMOKE_NAMESPACE} image ls -q | grep -qxF {SMOKE_IMAGE} || "
            f"{{ sh -c {shlex.quote(smoke_image_script(SMOKE_IMAGE, SMOKE_NAMESPACE))}; echo CHANGED; }}",
        ),
        {
            "name": "containerd running",
            "ansible.builtin.systemd_service": {"name": "containerd", "state": "started", "enabled": True},
        },
    ]
    return tasks


def ansible_workdir(lab: Lab, workdir: Path) -> Path:
    """Inventory, ansible.cfg and playbook for ``lab``; returns the playbook."""
    lines = ["[lab]"]
    for t in lab.targets:
        ssh = t.ssh
        lines.append(
            f"{t.name} ansible_host={ssh.host} ansible_port={ssh.port} ansible_user={ssh.user} "
            f"ansible_ssh_private_key_file={ssh.key_path} "
            f"ansible_ssh_common_args='-o UserKnownHostsFile={lab.known_hosts} -o IdentitiesOnly=yes'"
        )
    (workdir / "inventory.ini").write_text("\n".join(lines) + "\n")
    (workdir / "ansible.cfg").write_text(
        "[defaults]\n"
        f"forks = {len(lab.targets)}\nhost_key_checking = True\ninterpreter_python = /usr/bin/python3\n"
        f"inventory = {workdir / 'inventory.ini'}\nretry_files_enabled = False\n"
        "[ssh_connection]\npipelining = True\n"
    )
    play: dict[str, Any] = {"hosts": "all", "gather_facts": False, "tasks": ansible_tasks(lab)}
    if lab.kind == "vm":
        play["handlers"] = [
            {
                "name": "containerd restart on config change",
                "ansible.builtin.systemd_service": {"name": "containerd", "state": "restarted"},
            }
        ]
    playbook = workdir / "playbook.yml"
    playbook.write_text(json.dumps([play], indent=1))  # JSON is YAML
    return playbook


_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run_ansible(lab: Lab, playbook: Path, check_noop: bool = True) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(playbook.parent / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    binary = peers.ANSIBLE.path()
    if binary is None:
        raise RuntimeError(peers.ANSIBLE.missing())
    start = time.monotonic()
    proc = subprocess.run([str(binary), str(playbook)], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    recap = _RECAP.findall(proc.stdout)
    bad = [r for r in recap if check_noop and (r[2] != "0" or r[3] != "0" or r[4] != "0")]
    if proc.returncode != 0 or bad or len(recap) != len(lab.targets):
        raise RuntimeError(f"ansible-playbook: rc={proc.returncode} recap={recap}\n{proc.stdout[-3000:]}")
    return seconds


# --- converged labs -----------------------------------------------------------------------------


@contextmanager
def vm_lab(workdir: Path, log: Callable[[str], None]) -> Iterator[Lab]:
    start = time.monotonic()
    vm = fx.boot_tcg_vm(workdir / "vm")
    try:
        log(f"  VM booted in {time.monotonic() - start:.0f} s; converging ...")
        lab = Lab([vm.target], vm.known_hosts, VM_SETTINGS, "vm")
        configure(lab.targets, lab.settings, known_hosts=lab.known_hosts).check()
        status, _, err = vm.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {ANSIBLE_NEEDS}", timeout=900)
        if status:
            raise RuntimeError(f"installing {ANSIBLE_NEEDS} for ansible failed: {err[-500:]}")
        log(f"  converged after {time.monotonic() - start:.0f} s")
        yield lab
    finally:
        fx.stop_tcg_vm(vm)


def converged_rootfs(workdir: Path, log: Callable[[str], None]) -> Path:
    """A trixie rootfs tarball with the runtimes role converged (cached; rebuilt after 6 days, when
    the apt lists would be stale for the 7-day cache time)."""
    tarball = fx.cache_dir() / "configure-bench-trixie.tar"
    if tarball.exists() and time.time() - tarball.stat().st_mtime < 6 * 86400:
        return tarball
    log("  building the converged chroot rootfs (once) ...")
    host = fx.start_chroot_host(workdir / "template", "template")
    try:
        configure([host.target], CHROOT_SETTINGS, known_hosts=host.known_hosts, idempotence_check=False).check()
        status, _, err = host.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 {ANSIBLE_NEEDS}")
        if status:
            raise RuntimeError(f"installing python3 for ansible failed: {err[-500:]}")
    finally:
        fx.stop_chroot_host(host)
    root = host.root
    for junk in [
        *root.glob("etc/ssh/ssh_host_*"),
        root / "root/.ssh/authorized_keys",
        root / "etc/ssh/sshd_config.d/labdeploy-test.conf",
    ]:
        junk.unlink(missing_ok=True)
    partial = tarball.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        tar.add(root, arcname=".")
    partial.rename(tarball)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
    return tarball


@contextmanager
def chroot_lab(n: int, workdir: Path, log: Callable[[str], None]) -> Iterator[Lab]:
    tarball = converged_rootfs(workdir, log)
    hosts: list[fx.ChrootHost] = []
    try:
        start = time.monotonic()
        for i in range(n):
            hosts.append(fx.start_chroot_host(workdir / f"h{i}", f"host{i + 1}", tarball=tarball))
        log(f"  {n} chroot hosts up in {time.monotonic() - start:.0f} s")
        known = workdir / "known_hosts"
        known.write_text("".join(h.known_hosts.read_text() for h in hosts))
        yield Lab([h.target for h in hosts], known, CHROOT_SETTINGS, "chroot")
    finally:
        for host in hosts:
            fx.stop_chroot_host(host)
        dirs = [str(workdir / f"h{i}") for i in range(n)]
        subprocess.run(["rm", "-rf", "--one-file-system", *dirs], check=False)


# --- measurement --------------------------------------------------------------------------------


def measure(
    lab: Lab, workdir: Path, repeat: int, log: Callable[[str], None], *, ansible: bool = True
) -> dict[str, float]:
    playbook = ansible_workdir(lab, workdir)
    if ansible:
        run_ansible(lab, playbook, check_noop=False)  # warm-up (untimed) and convergence of ansible's view
    run_ours(lab)
    run_floor(lab)
    times: dict[str, list[float]] = {"ours": [], "floor": [], **({"ansible": []} if ansible else {})}
    for i in range(repeat):
        times["ours"].append(run_ours(lab))
        times["floor"].append(run_floor(lab))
        if ansible:
            times["ansible"].append(run_ansible(lab, playbook))
        log(f"  rep {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    return {k: statistics.median(v) for k, v in times.items()}


def report(n: int, lab: Lab, ops: int, med: dict[str, float]) -> str:
    ours_floor = med["ours"] / med["floor"]
    line = f"N={n:<3} {lab.kind:<6} ops/host={ops:<3} ours {med['ours']:6.2f} s  floor {med['floor']:6.2f} s  "
    if "ansible" not in med:
        ok = "meets" if ours_floor <= 1.2 else "MISSES"
        return line + f"ansible   -      ours/floor {ours_floor:4.2f}  -> {ok} target (<=1.2; ansible not measured)"
    ansible_ours = med["ansible"] / med["ours"]
    ok = "meets" if ours_floor <= 1.2 and ansible_ours >= 5 else "MISSES"
    return line + (
        f"ansible {med['ansible']:6.2f} s  ours/floor {ours_floor:4.2f}  ansible/ours {ansible_ours:5.1f}  "
        f"-> {ok} target (<=1.2, >=5)"
    )


def bench_size(n: int, repeat: int, root: Path, log: Callable[[str], None], *, ansible: bool = True) -> str:
    workdir = root / f"n{n}"
    workdir.mkdir()
    log(f"N={n}: preparing converged hosts ...")
    with ExitStack() as stack:
        lab = stack.enter_context(vm_lab(workdir, log) if n == 1 else chroot_lab(n, workdir, log))
        ops = len(next(iter(floor_operations(lab).values())))
        line = report(n, lab, ops, measure(lab, workdir, repeat, log, ansible=ansible))
        log(line)
    return line


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise Timeout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10", help="comma-separated host counts (1 = a TCG VM)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-seconds", type=int, default=1800, help="stop (and tear down) after this long")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, flush=True)

    no_ansible = peers.ANSIBLE.missing()
    if no_ansible:
        log(f"skip ansible: {no_ansible}")
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.max_seconds)
    lines = []
    try:
        with tempfile.TemporaryDirectory(prefix="noop-redeploy-") as tmp:
            for n in (int(x) for x in args.sizes.split(",") if x):
                lines.append(bench_size(n, args.repeat, Path(tmp), log, ansible=not no_ansible))
    except Timeout:
        log(f"stopped: --max-seconds {args.max_seconds} reached")
        return 2
    finally:
        signal.alarm(0)
    log(f"\nsummary (median of {args.repeat}):\n" + "\n".join(lines))
    if no_ansible:
        log(f"incomplete: ansible was not measured ({no_ansible})")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
