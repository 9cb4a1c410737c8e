"""vSphere fan-out: `deploy up` and `deploy destroy` of N VMs against vcsim, in parallel and serially.

    .venv/bin/python bench/vsphere_fanout.py [--sizes 1,10,50,500] [--max-seconds 3000]

Each size is a lab of N `ssh: false` clones of the simulator's template (TLS vcsim from
tests/integration/vcsim_fixtures.py, a fresh simulator per run so inventories do not add up), with a
method delay that stands in for vCenter's task latency (CloneVM_Task 200 ms, ReconfigVM_Task 50 ms,
PowerOnVM_Task 100 ms, PowerOffVM_Task 50 ms, Destroy_Task 50 ms) and tools reporting the guest
0.3 s after power-on. Side by side in one run:

  parallel   deploy up --no-verify (the default step parallelism, the provider's default task cap)
  serial     deploy up --no-verify --parallel 1 and deploy destroy --parallel 1 (one VM after another)

Printed per size and mode: up and destroy seconds, seconds per VM, the speed-up parallel/serial,
the peak RSS of the `deploy` process (wait4), and SOAP calls per VM as the simulator counted them
(PropertyCollector calls apart: WaitForUpdatesEx, RetrieveProperties(Ex), CreateFilter,
Create/DestroyPropertyCollector). Targets (issue 11): speed-up >= 5x at 50 VMs, time per VM flat
from 50 to 500, PropertyCollector round trips per VM <= 3. The whole run stops after --max-seconds;
what it started is destroyed either way. All traffic goes to the simulator on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from ssl import create_default_context

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_deploy_vsphere import LAB as CLI_LAB  # noqa: E402
from tests.integration.vcsim_fixtures import Vcsim, make_ca, start_vcsim, stop_vcsim  # noqa: E402

TEMPLATE_VM = "DC0_C0_RP0_VM0"  # the VPX model's first VM: the template every clone is made from
DELAYS = {"CloneVM_Task": 0.2, "ReconfigVM_Task": 0.05, "PowerOnVM_Task": 0.1, "PowerOffVM_Task": 0.05,
          "Destroy_Task": 0.05}
GUEST_NET = "198.18.0.0/15"  # RFC 2544's benchmarking range: room for 500 guests, never contacted
COLLECTOR = {"WaitForUpdatesEx", "WaitForUpdates", "RetrievePropertiesEx", "RetrieveProperties", "CreateFilter",
             "CreatePropertyCollector", "DestroyPropertyCollector", "DestroyPropertyFilter"}
PASSWORD = "bench-password"

# the CLI test's lab (tests/integration/test_deploy_vsphere.py) with its one node made a group of N
LAB = CLI_LAB.replace("name: vslab-cli", "name: fanout").replace(
    "nodes:\n  vm1: {{provider: dc1, image: tmpl, networks: [vmnet], ssh: false}}\n",
    "groups:\n  vm: {{provider: dc1, image: tmpl, networks: [vmnet], ssh: false, count: {count}}}\n")


@dataclass
class Result:
    size: int
    mode: str
    up_s: float
    destroy_s: float
    peak_mib: float
    calls: int
    collector_calls: int


def _deploy(lab: Path, args: list[str], timeout: float) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one `deploy` run, read from its own wait4; it must succeed."""
    env = dict(os.environ, VSPHERE_PASSWORD=PASSWORD)
    log = lab.parent / f"{args[0]}.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args, str(lab)], cwd=lab.parent, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"deploy {' '.join(args)} failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def _calls(url: str, ca: Path) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}?reset=1", context=create_default_context(cafile=str(ca)),
                                timeout=10) as answer:
        counted: dict[str, int] = json.load(answer)
        return counted


def run_one(size: int, mode: str, work: Path, timeout: float) -> Result:
    ca = make_ca(work)
    sim = start_vcsim(ca, DELAYS, vms=1, guest_net=GUEST_NET)
    calls_url = f"https://{sim.host}:{sim.port}/labdeploy/calls"
    lab = work / f"{mode}-{size}" / "lab.yaml"
    lab.parent.mkdir(parents=True)
    lab.write_text(LAB.format(port=sim.port, ca=sim.ca_file, template=TEMPLATE_VM, count=size))
    parallel = ["--parallel", "1"] if mode == "serial" else []
    try:
        _snapshot(sim)
        _calls(calls_url, sim.ca_file)
        up_s, peak = _deploy(lab, ["up", "--no-verify", "--quiet", *parallel], timeout)
        counted = _calls(calls_url, sim.ca_file)
        destroy_s, peak_destroy = _deploy(lab, ["destroy", "--quiet", *parallel], timeout)
    finally:
        stop_vcsim(sim)
    return Result(size, mode, up_s, destroy_s, max(peak, peak_destroy), sum(counted.values()),
                  sum(n for m, n in counted.items() if m in COLLECTOR))


def _snapshot(sim: Vcsim) -> None:
    """A linked clone needs the template's current snapshot (as tests/integration/test_deploy_vsphere.py makes)."""
    from pyVim.connect import Disconnect, SmartConnect

    from deploy.providers.vsphere_tasks import wait_task

    si = SmartConnect(host=sim.host, port=sim.port, user="u", pwd="p",
                      sslContext=create_default_context(cafile=str(sim.ca_file)))
    template = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{TEMPLATE_VM}")
    wait_task(si, template.CreateSnapshot_Task(name="base", memory=False, quiesce=False), what="snapshot")
    Disconnect(si)


def report(results: list[Result]) -> None:
    print(f"{'VMs':>5} {'mode':>8} {'up s':>8} {'s/VM':>7} {'destroy s':>10} {'peak MiB':>9} "
          f"{'calls/VM':>9} {'PC calls/VM':>12}")
    for r in results:
        print(f"{r.size:>5} {r.mode:>8} {r.up_s:>8.1f} {r.up_s / r.size:>7.2f} {r.destroy_s:>10.1f} "
              f"{r.peak_mib:>9.0f} {r.calls / r.size:>9.1f} {r.collector_calls / r.size:>12.1f}")
    by = {(r.size, r.mode): r for r in results}
    for size in sorted({r.size for r in results}):
        if (size, "serial") in by and (size, "parallel") in by:
            speedup = by[size, "serial"].up_s / by[size, "parallel"].up_s
            print(f"speed-up at {size} VMs: {speedup:.1f}x (up), "
                  f"{by[size, 'serial'].destroy_s / by[size, 'parallel'].destroy_s:.1f}x (destroy)")
    flat = sorted(r.size for r in results if r.mode == "parallel" and r.size >= 50)
    if len(flat) >= 2:
        first, last = by[flat[0], "parallel"], by[flat[-1], "parallel"]
        print(f"time per VM {flat[0]} -> {flat[-1]}: {first.up_s / first.size:.2f} s -> "
              f"{last.up_s / last.size:.2f} s ({last.up_s / last.size / (first.up_s / first.size):.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50,500")
    parser.add_argument("--modes", default="parallel,serial")
    parser.add_argument("--max-seconds", type=float, default=3000)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="labdeploy-fanout-") as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            for mode in args.modes.split(","):
                left = deadline - time.monotonic()
                if left <= 0:
                    print(f"stopped at --max-seconds before {mode} {size}")
                    report(results)
                    return 2
                work = Path(tmp) / f"{mode}-{size}-run"
                work.mkdir()
                results.append(run_one(size, mode, work, left))
                r = results[-1]
                print(f"  {mode} {size}: up {r.up_s:.1f} s, destroy {r.destroy_s:.1f} s", flush=True)
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
