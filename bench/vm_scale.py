"""Time to SSH-ready for N VMs of the same image: floor vs labdeploy vs kcli vs Vagrant.

    .venv/bin/python bench/vm_scale.py [--sizes 1,2,4] [--repeat 1] [--tools floor,labdeploy,kcli,vagrant]
                                      [--deadline 300] [--max-seconds 900]

Every tool boots N 1-vCPU / 1 GiB guests (QEMU TCG) from the cached bookworm image built by
deploy.images, with a NoCloud seed carrying the benchmark's key and a QEMU user-mode (SLIRP)
NIC whose SSH is forwarded to a loopback port; SSH-ready = banner + key auth on that port.
The host never sends a packet to a guest's private address (DESIGN.md traffic rule).

  floor      minimal libvirt-python script (bench/vm_scale_floor.py)
  labdeploy  `deploy up --no-verify` of a generated N-node lab, to its last `reachable` step
  kcli       `kcli create vm` from the image in a libvirt pool (bench/vm_scale_kcli.py)
  vagrant    `vagrant up --provider=libvirt` of a box made from the image (bench/vm_scale_vagrant.py)

Runs are interleaved (tool by tool inside each repetition) so host-load drift hits every tool
alike. Each VM wait has a deadline; the whole run stops by itself after --max-seconds; every
domain, volume, box and lab it made is removed, also on failure or Ctrl-C. Prints the median
seconds per tool and N, the ratios labdeploy/floor, kcli/labdeploy, vagrant/labdeploy, and the
load average. Target (issue 3): labdeploy <= 1.2x floor, faster than kcli and Vagrant.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import vm_scale_floor  # noqa: E402
import vm_scale_kcli  # noqa: E402
import vm_scale_labdeploy  # noqa: E402
import vm_scale_vagrant  # noqa: E402
from vm_scale_common import PREFIX, Bench, Skip, prepare  # noqa: E402

TOOLS: dict[str, ModuleType] = {
    "floor": vm_scale_floor,
    "labdeploy": vm_scale_labdeploy,
    "kcli": vm_scale_kcli,
    "vagrant": vm_scale_vagrant,
}
RATIOS = (("labdeploy", "floor", "<= 1.2"), ("kcli", "labdeploy", "> 1"), ("vagrant", "labdeploy", "> 1"))


class OutOfTime(Exception):
    pass


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,2,4", help="numbers of VMs (default 1,2,4)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool and size; the median is shown")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    parser.add_argument("--deadline", type=float, default=300, help="seconds one boot to SSH-ready may take")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop (and clean up) after this long")
    return parser.parse_args()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise OutOfTime("time budget used up" if signum == signal.SIGALRM else f"signal {signum}")


def main() -> int:
    args = _args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        print(f"unknown tools {unknown}; choose from {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    signal.alarm(int(args.max_seconds))
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    bench = prepare(workdir, args.deadline, f"{PREFIX}{os.getpid()}")
    times: dict[tuple[str, int], list[float]] = {}
    skipped: dict[str, str] = {}
    loads: list[float] = []
    try:
        _check_tools(tools, bench, skipped)
        _loop(bench, tools, sizes, args.repeat, times=times, skipped=skipped, loads=loads)
    except OutOfTime as exc:
        print(f"stopped early: {exc}; cleaning up", flush=True)
    finally:
        signal.alarm(0)
        _cleanup(bench, tools)
        shutil.rmtree(workdir, ignore_errors=True)
    _report(tools, sizes, times, skipped, loads)
    if skipped:
        print(f"incomplete: {', '.join(skipped)} not measured (see the skip lines above)")
        return 3
    return 0


def _check_tools(tools: list[str], bench: Bench, skipped: dict[str, str]) -> None:
    for tool in tools:
        check: Callable[[Bench], None] | None = getattr(TOOLS[tool], "available", None)
        try:
            if check:
                check(bench)
        except Skip as exc:
            skipped[tool] = str(exc)
            print(f"skip {tool}: {exc}", flush=True)


def _loop(bench: Bench, tools: list[str], sizes: list[int], repeat: int, *,
          times: dict[tuple[str, int], list[float]], skipped: dict[str, str], loads: list[float]) -> None:
    for n in sizes:
        for rep in range(repeat):
            for tool in tools:
                if tool in skipped:
                    continue
                loads.append(os.getloadavg()[0])
                seconds = _one(bench, tool, n, skipped)
                if seconds is not None:
                    times.setdefault((tool, n), []).append(seconds)
                    print(f"  {tool:<10} N={n} run {rep + 1}: {seconds:6.1f} s  "
                          f"(load {os.getloadavg()[0]:.1f}){_extra(tool, n)}", flush=True)


def _one(bench: Bench, tool: str, n: int, skipped: dict[str, str]) -> float | None:
    try:
        return float(TOOLS[tool].measure(bench, n))
    except Skip as exc:
        skipped[tool] = str(exc)
        print(f"skip {tool}: {exc}", flush=True)
    except (OutOfTime, KeyboardInterrupt):
        raise
    except Exception as exc:
        print(f"  {tool:<10} N={n} FAILED: {type(exc).__name__}: {exc}", flush=True)
        if os.environ.get("VM_SCALE_DEBUG"):
            traceback.print_exc()
    return None


def _extra(tool: str, n: int) -> str:
    whole = vm_scale_labdeploy.last_whole_up.get(n) if tool == "labdeploy" else None
    return f"  [whole `up --no-verify`: {whole:.1f} s]" if whole else ""


def _cleanup(bench: Bench, tools: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
    for tool in tools:
        cleanup_all: Callable[[Bench], None] | None = getattr(TOOLS[tool], "cleanup_all", None)
        try:
            if cleanup_all:
                cleanup_all(bench)
        except Exception as exc:
            print(f"cleanup of {tool} failed: {exc}", file=sys.stderr)


def _median(times: dict[tuple[str, int], list[float]], tool: str, n: int) -> float | None:
    runs = times.get((tool, n))
    return statistics.median(runs) if runs else None


def _report(tools: list[str], sizes: list[int], times: dict[tuple[str, int], list[float]],
            skipped: dict[str, str], loads: list[float]) -> None:
    print("\nmedian seconds to SSH-ready (all N VMs), runs in brackets")
    print(f"{'tool':<20}" + "".join(f"{'N=' + str(n):>16}" for n in sizes))
    for tool in tools:
        cells = [_cell(times, tool, n) for n in sizes]
        print(f"{tool:<20}" + "".join(f"{c:>16}" for c in cells))
    for num, den, target in RATIOS:
        if num in tools and den in tools:
            cells = [_ratio(_median(times, num, n), _median(times, den, n)) for n in sizes]
            print(f"{num + '/' + den:<20}" + "".join(f"{c:>16}" for c in cells) + f"   target {target}")
    for tool, reason in skipped.items():
        print(f"skipped {tool}: {reason}")
    if loads:
        print(f"1-min load average at the start of each run: min {min(loads):.1f}, median "
              f"{statistics.median(loads):.1f}, max {max(loads):.1f} (2 cores, shared host)")


def _cell(times: dict[tuple[str, int], list[float]], tool: str, n: int) -> str:
    runs = times.get((tool, n))
    return f"{statistics.median(runs):.1f} [{len(runs)}]" if runs else "-"


def _ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}x" if num and den else "-"


if __name__ == "__main__":
    sys.exit(main())
