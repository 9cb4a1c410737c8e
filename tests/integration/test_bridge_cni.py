"""The bridge network for real: the bundle's CNI plugins, our conflist and routes, in network namespaces.

Two "nodes" (namespaces joined by a veth pair, as the lab network joins VMs), each with one "pod"
namespace. The bundle's ``bridge`` plugin runs with our configuration, the routes between the nodes'
pod CIDRs are ours; then a TCP connection from the pod on node A to the pod on node B must arrive
with pod A's own address. All traffic stays inside namespaces this test creates and removes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.bundle import BundleStore, catalog
from deploy.bundle.recipes_runtimes import cni_plugins
from deploy.cluster import bridge
from deploy.errors import PlanError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("iptables") is None,
                       reason="iproute2 and iptables are needed"),
]
CLUSTER = "10.244.0.0/16"
NODES = {"a": ("10.77.0.10", "10.244.0.0/24"), "b": ("10.77.0.21", "10.244.1.0/24")}


def _run(*argv: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = cni_plugins(catalog.VERSIONS["1.36"].cni_plugins)[0]
    archive, _ = BundleStore().ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    folder = tmp_path_factory.mktemp("cni-bin")
    with tarfile.open(archive.path) as tar:
        tar.extractall(folder, filter="data")
    return folder


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    names = {role: f"ld-{role}-{tag}" for role in ("node-a", "node-b", "pod-a", "pod-b")}
    try:
        for name in names.values():
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        a, b = names["node-a"], names["node-b"]
        _run("ip", "link", "add", f"lda{tag}", "netns", a, "type", "veth", "peer", "name", f"ldb{tag}", "netns", b)
        for ns, dev, (address, _) in ((a, f"lda{tag}", NODES["a"]), (b, f"ldb{tag}", NODES["b"])):
            _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _add_pod(plugins: Path, node_ns: str, pod_ns: str, pod_cidr: str, state: Path) -> str:
    """Run the bridge plugin (CNI ADD) as containerd would, inside the node's namespace; the pod's IP."""
    listed = json.loads(bridge.conflist(pod_cidr, data_dir=str(state)))
    config = {"cniVersion": listed["cniVersion"], "name": listed["name"], **listed["plugins"][0]}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": pod_ns, "CNI_NETNS": f"/var/run/netns/{pod_ns}",
           "CNI_IFNAME": "eth0", "CNI_PATH": str(plugins), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    result = json.loads(_run("ip", "netns", "exec", node_ns, str(plugins / "bridge"), stdin=json.dumps(config),
                             env=env))
    return str(result["ips"][0]["address"]).split("/")[0]


def test_pods_on_two_nodes_reach_each_other_with_their_own_addresses(
        plugins: Path, namespaces: dict[str, str], tmp_path: Path) -> None:
    ips = {}
    for node in ("a", "b"):
        node_ns, pod_ns = namespaces[f"node-{node}"], namespaces[f"pod-{node}"]
        ips[node] = _add_pod(plugins, node_ns, pod_ns, NODES[node][1], tmp_path / f"ipam-{node}")
        for command in (*bridge.routes(node, NODES), bridge.masquerade(NODES[node][1], CLUSTER)):
            _run("ip", "netns", "exec", node_ns, "sh", "-c", command)
    assert ips == {"a": "10.244.0.2", "b": "10.244.1.2"}  # host-local's first address after the gateway
    assert "default via 10.244.0.1" in _run("ip", "-n", namespaces["pod-a"], "route")
    server = subprocess.Popen(
        ["ip", "netns", "exec", namespaces["pod-b"], "python3", "-c",
         "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
         "s.bind(('0.0.0.0', 8080)); s.listen(); s.settimeout(20); c, peer = s.accept(); "
         "c.sendall(peer[0].encode()); c.close()"])
    try:
        client = ("import socket, time\nfor _ in range(50):\n    try:\n"
                  f"        c = socket.create_connection(('{ips['b']}', 8080), timeout=2); break\n"
                  "    except OSError:\n        time.sleep(0.1)\nprint(c.recv(64).decode())")
        seen = _run("ip", "netns", "exec", namespaces["pod-a"], "python3", "-c", client).strip()
    finally:
        server.wait(timeout=30)
    assert seen == ips["a"]  # no NAT between pods: pod B sees pod A's own address


def test_routes_are_idempotent_and_refuse_a_shared_pod_cidr(namespaces: dict[str, str]) -> None:
    commands = bridge.routes("a", NODES)
    assert commands == ["ip route replace 10.244.1.0/24 via 10.77.0.21"]
    for _ in range(2):  # a second run of the same commands changes nothing and does not fail
        _run("ip", "netns", "exec", namespaces["node-a"], "sh", "-c", commands[0])
        _run("ip", "netns", "exec", namespaces["node-a"], "sh", "-c", bridge.masquerade("10.244.0.0/24", CLUSTER))
    assert _run("ip", "-n", namespaces["node-a"], "route").count("10.244.1.0/24") == 1
    rules = _run("ip", "netns", "exec", namespaces["node-a"], "iptables", "-t", "nat", "-S", "POSTROUTING")
    assert rules.count("labdeploy-pods") == 1
    with pytest.raises(PlanError, match="same pod CIDR"):
        bridge.routes("a", {**NODES, "c": ("10.77.0.30", "10.244.1.0/24")})
    with pytest.raises(PlanError, match=r"not inside kubernetes\.pod_cidr"):
        bridge.masquerade("10.99.0.0/24", CLUSTER)


def test_an_untranslated_cluster_ip_is_refused_and_a_translated_one_goes_through(
        plugins: Path, namespaces: dict[str, str], tmp_path: Path) -> None:
    """Before kube-proxy has synced, a ClusterIP must not leave the node; once DNAT exists it must work."""
    node, pod = namespaces["node-a"], namespaces["pod-a"]
    _add_pod(plugins, node, pod, NODES["a"][1], tmp_path / "ipam")
    _run("ip", "-n", node, "route", "add", "default", "via", "10.77.0.21")  # where a leak would go
    for _ in range(2):  # idempotent
        for command in bridge.service_guard("10.96.0.0/12"):
            _run("ip", "netns", "exec", node, "sh", "-c", command)
    rules = _run("ip", "netns", "exec", node, "iptables", "-S")
    assert rules.count("labdeploy-untranslated-service") == 2
    # a "kube-proxy" DNAT for 10.96.0.10:80 -> the node's own address, where a server listens
    _run("ip", "netns", "exec", node, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", "10.96.0.10/32", "-p", "tcp",
         "--dport", "80", "-j", "DNAT", "--to-destination", "10.244.0.1:8080")
    server = subprocess.Popen(
        ["ip", "netns", "exec", node, "python3", "-c",
         "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
         "s.bind(('10.244.0.1', 8080)); s.listen(); s.settimeout(20); c, _ = s.accept(); c.sendall(b'ok'); c.close()"])
    probe = ("import socket, sys, time\nfor _ in range(50):\n    try:\n"
             "        c = socket.create_connection((sys.argv[1], 80), timeout=3); print(c.recv(8).decode()); break\n"
             "    except ConnectionRefusedError as e:\n        last = e\n        if sys.argv[1] != '10.96.0.10': "
             "print('refused'); break\n        time.sleep(0.1)\n"
             "    except OSError as e:\n        print(type(e).__name__); break")
    try:
        assert _run("ip", "netns", "exec", pod, "python3", "-c", probe, "10.96.0.10").strip() == "ok"
    finally:
        server.wait(timeout=30)
    assert _run("ip", "netns", "exec", pod, "python3", "-c", probe, "10.96.0.99").strip() == "refused"
