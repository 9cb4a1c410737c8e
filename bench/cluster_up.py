"""Cluster bootstrap: labdeploy's cluster steps vs a plain kubeadm script (the floor), on the same VMs, one run.

    .venv/bin/python bench/cluster_up.py [--lab labs/k8s/lab.yaml] [--state-dir DIR] [--keep] [--rounds 1]

The lab is brought up first (`deploy up --no-verify`, untimed; a converged lab is kept as it is), so
both sides start from the same configured TCG VMs. Then, per round:

  reset   on every node: kubeadm reset -f, the CNI conflist, cni0 and host-local's leases gone (untimed)
  floor   a plain script over SSH: kubeadm init --config /dev/stdin (the same documents and TCG patches) on
          the first control plane; per other node a fresh token and kubeadm join; the bridge CNI's conflist,
          routes and NAT rule per node; the RuntimeClasses by kubectl apply; then poll kubectl until every node
          is Ready and CoreDNS is available
  reset
  ours    `deploy up LAB --replace cluster:kubernetes --no-verify`: the cluster, member and add-on steps
          re-run (everything else is kept), from the command's start to its exit (its add-on step ends
          once every node is Ready and CoreDNS rolled out)

Prints the seconds of each and ours/floor (target: <= 1.10, i.e. orchestration overhead <= 10% of the
floor), then a converged re-run of the lab: its seconds and whether it printed "No changes". Without
--keep (and without --state-dir) the lab is destroyed at the end. Under TCG one side can draw a slow
kube-proxy or controller-manager start; --rounds N alternates the order and prints medians.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.cluster import bridge, kubeadm, runtimeclasses  # noqa: E402
from deploy.cluster.nodes import Member, cluster_of, handled_runtimes, members  # noqa: E402
from deploy.cluster.stage import ca_cert_hash  # noqa: E402
from deploy.model.load import load_lab  # noqa: E402
from deploy.model.resolve import ResolvedLab, resolve  # noqa: E402
from deploy.providers.base import SshEndpoint  # noqa: E402
from deploy.ssh import run_command  # noqa: E402

DEPLOY = [sys.executable, "-c", "import sys; from deploy.cli import main; sys.exit(main())"]
KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
RESET = ("kubeadm reset -f >/dev/null 2>&1; rm -rf /etc/cni/net.d/* /var/lib/cni {patches}; "
         "ip link delete cni0 2>/dev/null; true")


class Lab:
    def __init__(self, file: Path, state: Path) -> None:
        self.file, self.state = file, state
        self.resolved: ResolvedLab = resolve(load_lab(file).lab)

    def deploy(self, *args: str, timeout: float = 5400) -> subprocess.CompletedProcess[str]:
        command = [*DEPLOY, args[0], str(self.file), "--state-dir", str(self.state), *args[1:]]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)

    def sh(self, node: str, command: str, *, stdin: str | None = None, timeout: float = 2400) -> str:
        outputs = json.loads((self.state / "state.json").read_text())["resources"][f"machine:{node}"]["outputs"]
        result = run_command(SshEndpoint.from_outputs(outputs["ssh"]), command, known_hosts=self.state / "known_hosts",
                             alias=node, timeout=timeout, stdin=stdin.encode() if stdin is not None else None)
        if not result.ok:
            raise SystemExit(f"{node}: `{command[:80]}` failed ({result.rc}): {(result.stdout + result.stderr)[-800:]}")
        return result.stdout


def reset(lab: Lab, nodes: list[Member]) -> None:
    for m in nodes:
        lab.sh(m.node.name, RESET.format(patches=kubeadm.PATCHES_DIR), timeout=600)


def floor(lab: Lab, nodes: list[Member], tcg: bool) -> float:
    """The same bootstrap as a plain script: no plan, no state, no step engine, no waits of ours."""
    cluster = cluster_of(lab.resolved, tcg=tcg)
    first, others = nodes[0], nodes[1:]
    cp = first.node.name
    started = time.monotonic()
    patches = " && ".join(f"printf %s {shlex.quote(t)} > {kubeadm.PATCHES_DIR}/{n}"
                          for n, t in sorted(kubeadm.tcg_patches().items()))
    for m in nodes if tcg else ():
        lab.sh(m.node.name, f"mkdir -p {kubeadm.PATCHES_DIR} && {patches}")
    init = kubeadm.render_init(cluster, first.kubeadm, kubeadm.new_token())
    lab.sh(cp, "kubeadm init --config /dev/stdin", stdin=init)
    ca = ca_cert_hash(lab.sh(cp, "cat /etc/kubernetes/admin.conf"))
    for m in others:
        token = kubeadm.new_token()
        lab.sh(cp, "kubeadm token create --ttl 1h \"$(cat)\" >/dev/null", stdin=token.value)
        lab.sh(m.node.name, "kubeadm join --config /dev/stdin",
               stdin=kubeadm.render_join(cluster, m.kubeadm, kubeadm.JoinSecrets(token, (ca,))))
    cidrs = _until(lambda: _pod_cidrs(lab, cp, len(nodes)))
    table = {m.node.name: (m.kubeadm.address, cidrs[m.node.name]) for m in nodes}
    k8s = lab.resolved.lab.kubernetes
    assert k8s is not None
    for m in nodes:
        me = m.node.name
        conflist = shlex.quote(bridge.conflist(table[me][1]))
        script = [f"mkdir -p /etc/cni/net.d && printf %s {conflist} > {bridge.CONFLIST}",
                  *bridge.service_guard(k8s.service_cidr), *bridge.routes(me, table),
                  bridge.masquerade(table[me][1], k8s.pod_cidr)]
        lab.sh(me, " && ".join(script))
    manifests = json.dumps({"apiVersion": "v1", "kind": "List",
                            "items": runtimeclasses.manifests(handled_runtimes(lab.resolved))})
    lab.sh(cp, f"{KUBECTL} apply -f - >/dev/null", stdin=manifests)
    _until(lambda: _ready(lab, cp, len(nodes)))
    return time.monotonic() - started


def _pod_cidrs(lab: Lab, cp: str, count: int) -> dict[str, str] | None:
    path = "{range .items[*]}{.metadata.name}={.spec.podCIDR} {end}"
    out = lab.sh(cp, f"{KUBECTL} get nodes -o jsonpath='{path}'")
    found = dict(pair.split("=", 1) for pair in out.split() if pair.split("=", 1)[1])
    return found if len(found) == count else None


def _ready(lab: Lab, cp: str, count: int) -> bool | None:
    nodes = lab.sh(cp, f"{KUBECTL} get nodes --no-headers").split("\n")
    ready = sum(1 for line in nodes if line.split()[1:2] == ["Ready"])
    dns = lab.sh(cp, f"{KUBECTL} -n kube-system get deploy coredns -o jsonpath='{{.status.availableReplicas}}' "
                 "2>/dev/null || true").strip()
    return True if ready == count and dns not in ("", "0") else None


def _until(probe: Callable[[], object], timeout: float = 2400, interval: float = 5) -> object:
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"floor: still waiting after {timeout:g}s")
        time.sleep(interval)
    return value


def ours(lab: Lab) -> float:
    started = time.monotonic()
    proc = lab.deploy("up", "--replace", "cluster:kubernetes", "--no-verify")
    if proc.returncode != 0:
        raise SystemExit(f"deploy up --replace cluster:kubernetes -> {proc.returncode}\n{proc.stdout[-3000:]}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", type=Path, default=ROOT / "labs/k8s/lab.yaml")
    parser.add_argument("--state-dir", type=Path, help="an existing lab's state folder (its lab is kept)")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.state_dir:
        lab, keep = Lab(args.lab.resolve(), args.state_dir.resolve()), True
    else:
        folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
        name = f"bk8s{uuid.uuid4().hex[:4]}"
        file = folder / "lab.yaml"
        file.write_text(args.lab.read_text().replace("name: k8s\n", f"name: {name}\nttl: 3h\n"))
        lab, keep = Lab(file, folder / "state"), args.keep
    try:
        return _measure(lab, args.rounds)
    finally:
        if not keep:
            lab.deploy("destroy", timeout=900)


def _measure(lab: Lab, rounds: int) -> int:
    up = lab.deploy("up", "--no-verify")
    if up.returncode != 0:
        print(f"deploy up -> {up.returncode}\n{up.stdout[-3000:]}")
        return 1
    nodes = members(lab.resolved, handled_runtimes(lab.resolved))
    tcg = bool(json.loads((lab.state / "state.json").read_text())["resources"]["cluster:kubernetes"]["outputs"]
               .get("tcg"))
    times: dict[str, list[float]] = {"floor": [], "ours": []}
    for i in range(rounds):
        for side in (("floor", "ours") if i % 2 == 0 else ("ours", "floor")):
            reset(lab, nodes)
            seconds = floor(lab, nodes, tcg) if side == "floor" else ours(lab)
            times[side].append(seconds)
            print(f"round {i + 1}: {side:5} {seconds:7.1f} s", flush=True)
    f, o = statistics.median(times["floor"]), statistics.median(times["ours"])
    print(f"cluster bootstrap ({len(nodes)} nodes, {'TCG' if tcg else 'KVM'}): floor {f:.1f} s, ours {o:.1f} s, "
          f"ours/floor {o / f:.3f} (target <= 1.10: {'met' if o / f <= 1.10 else 'NOT met'})")
    if rounds % 2 == 0:  # floor ran last: labdeploy's state no longer matches the nodes
        reset(lab, nodes)
        ours(lab)
    started = time.monotonic()
    again = lab.deploy("up", "--no-verify")
    print(f"converged re-run: {time.monotonic() - started:.1f} s, "
          f"{'No changes' if 'No changes' in again.stdout else 'CHANGES: ' + again.stdout[-500:]}")
    return 0 if o / f <= 1.10 and "No changes" in again.stdout else 1


if __name__ == "__main__":
    sys.exit(main())
