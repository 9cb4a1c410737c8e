"""labdeploy: `deploy up --no-verify --output json` of a generated N-node lab, then `deploy destroy`.

The lab has the quickstart's shape (one user-mode NIC, 1 vCPU, 1 GiB, 8 GiB disk, the same
cached bookworm image). The time is taken to the moment the last node's `reachable` step
reported ok (SSH banner + key auth inside labdeploy); the whole `up` is recorded too.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from vm_scale_common import CPUS, DISK_GIB, MEMORY_MIB, Bench, run

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = str(ROOT / ".venv" / "bin" / "deploy")

LAB = """name: {name}
ttl: 1h
providers:
  local: {{kind: libvirt, uri: "qemu:///system", accel: tcg}}
images:
  debian12: {{build: {{distro: debian, release: bookworm}}}}
networks:
  mgmt: {{provider: local, mode: user}}
defaults: {{provider: local, image: debian12, cpus: {cpus}, memory: {mem}MiB, disk: {disk}GiB, networks: [mgmt]}}
groups:
  vm: {{count: {n}}}
"""

last_whole_up: dict[int, float] = {}


def _files(bench: Bench, n: int) -> tuple[Path, list[str]]:
    folder = bench.workdir / f"labdeploy-{n}-{time.time_ns()}"
    folder.mkdir(parents=True)
    name = f"{bench.tag}-ld{n}"
    lab = folder / "lab.yaml"
    lab.write_text(LAB.format(name=name, cpus=CPUS, mem=MEMORY_MIB, disk=DISK_GIB, n=n))
    return lab, ["--state-dir", str(folder / "state"), "--artifacts", str(folder / "artifacts")]


def measure(bench: Bench, n: int) -> float:
    """Seconds from `deploy up` to the last `reachable` ok; the lab is destroyed afterwards."""
    lab, opts = _files(bench, n)
    try:
        return _up(lab, opts, n, bench.deadline + 120)
    finally:
        run([DEPLOY, "destroy", str(lab), *opts[:2], "--quiet"], 300, check=False)


def _up(lab: Path, opts: list[str], n: int, timeout: float) -> float:
    cmd = [DEPLOY, "up", str(lab), *opts, "--no-verify", "--output", "json"]
    start = time.monotonic()
    reachable: list[float] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout, proc.terminate)  # deploy stops cleanly on SIGTERM
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if _is_reachable_ok(line):
                reachable.append(time.monotonic())
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
    if proc.returncode != 0 or len(reachable) < n:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"deploy up exited {proc.returncode} with {len(reachable)}/{n} reachable: {err[-800:]}")
    last_whole_up[n] = time.monotonic() - start
    return max(reachable) - start


def _is_reachable_ok(line: str) -> bool:
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("event") == "step" and event.get("stage") == "reachable" \
        and event.get("status") == "ok"


def cleanup_all(bench: Bench) -> None:
    """`deploy destroy` every lab this benchmark generated (a no-op for labs already destroyed)."""
    for lab in sorted(bench.workdir.glob("labdeploy-*/lab.yaml")):
        run([DEPLOY, "destroy", str(lab), "--state-dir", str(lab.parent / "state"), "--quiet"], 300, check=False)
