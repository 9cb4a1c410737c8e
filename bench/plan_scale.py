"""How validate+plan scales: YAML text -> load -> resolve -> checks -> plan, for 10 ... 10,000 nodes.

    .venv/bin/python bench/plan_scale.py [--sizes 10,100,1000,10000] [--repeat 3] [--profile 1000]

Prints the best of ``--repeat`` times per size, each phase's share, and the growth ratio
time(10x nodes) / time(x) (10 means linear). Target: 1,000 nodes <= 1 s, linear growth.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.model.checks import check_lab
from deploy.model.load import LoadedLab, parse_yaml, validate_data
from deploy.model.resolve import resolve
from deploy.plan import make_plan
from deploy.state import LabState

TARGET_1000 = 1.0
ROLES = ("base", "containerd", "kvm-host")  # roles the engine knows (validate rejects others)


def lab_text(nodes: int) -> str:
    """A lab of ``nodes`` machines: groups of up to 50, every fourth with fixed IPs, a few overrides."""
    lines = [
        "name: scale",
        "providers:",
        "  local: {kind: libvirt}",
        "images:",
        "  deb: {build: {}}",
        "networks:",
        "  mgmt: {provider: local, mode: user}",
        "  labnet: {provider: local, mode: isolated, cidr: 10.64.0.0/14}",
        "  storage: {provider: local, mode: nat, cidr: 10.128.0.0/14}",
        "defaults: {image: deb, cpus: 2, memory: 2GiB, disk: 20GiB, networks: [mgmt, labnet, storage]}",
        "groups:",
    ]
    groups, left, fixed = 0, nodes, 1
    while left > 0:
        count = min(50, left)
        if groups % 4 == 0:
            ip = f"10.{64 + fixed // 65536}.{fixed // 256 % 256}.{fixed % 256}"
            lines.append(f"  g{groups}: {{count: {count}, roles: [{ROLES[groups % 3]}], memory: 4GiB, "
                         f"networks: [mgmt, {{network: labnet, ip: {ip}}}, storage]}}")
            fixed += count + 5
        else:
            lines.append(f"  g{groups}: {{count: {count}, roles: [{ROLES[groups % 3]}]}}")
        groups, left = groups + 1, left - count
    lines.append("nodes:")
    lines += [f"  g{g}-1: {{cpus: 4}}" for g in range(0, groups, 7)]
    lines += ["ansible: [{hosts: all, roles: [baseline]}, {hosts: base, roles: [extra]}]",
              "verify:", "  - {name: up, hosts: all, run: 'true'}"]
    return "\n".join(lines) + "\n"


def validate_and_plan(text: str) -> dict[str, float]:
    times: dict[str, float] = {}

    def timed(phase: str, call: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = call()
        times[phase] = time.perf_counter() - start
        return result

    data, positions = timed("load", lambda: parse_yaml(text, "lab.yaml"))  # type: ignore[misc]
    lab = timed("validate", lambda: validate_data(data, positions))
    resolved = timed("resolve", lambda: resolve(lab))  # type: ignore[arg-type]
    loaded = LoadedLab(lab, Path("lab.yaml"), positions, data)  # type: ignore[arg-type]
    timed("checks", lambda: check_lab(loaded, resolved))  # type: ignore[arg-type]
    plan = timed("plan", lambda: make_plan(resolved, LabState("scale")))  # type: ignore[arg-type, attr-defined]
    assert sum(1 for r in plan.resources if r.startswith("machine:")) == len(resolved.nodes)  # type: ignore[attr-defined]
    times["total"] = sum(times.values())
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, help="profile one size with cProfile and print the top")
    args = parser.parse_args()
    if args.profile:
        import cProfile
        import pstats

        text = lab_text(args.profile)
        cProfile.runctx("validate_and_plan(text)", globals(), {"text": text}, "/tmp/plan_scale.prof")
        pstats.Stats("/tmp/plan_scale.prof").sort_stats("cumulative").print_stats(25)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    best: dict[int, dict[str, float]] = {}
    heads = ("load", "valid", "resolve", "checks", "plan", "growth")
    print(f"{'nodes':>7} {'total s':>9} " + " ".join(f"{h:>7}" for h in heads))
    for size in sizes:
        text = lab_text(size)
        runs = [validate_and_plan(text) for _ in range(args.repeat if size < 10000 else 1)]
        best[size] = min(runs, key=lambda t: t["total"])
        t = best[size]
        previous = sizes[sizes.index(size) - 1] if sizes.index(size) else None
        growth = f"{t['total'] / best[previous]['total']:.1f}x" if previous else "-"
        print(f"{size:>7} {t['total']:>9.3f} {t['load']:>7.3f} {t['validate']:>7.3f} {t['resolve']:>7.3f} "
              f"{t['checks']:>7.3f} {t['plan']:>7.3f} {growth:>7}", flush=True)
    if 1000 in best:
        verdict = "meets" if best[1000]["total"] <= TARGET_1000 else "MISSES"
        print(f"1,000 nodes: {best[1000]['total']:.3f} s ({verdict} the {TARGET_1000:.0f} s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
