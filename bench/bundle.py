"""Bundle build times per artifact and the store's size, side by side in one run.

    .venv/bin/python bench/bundle.py [--kubernetes 1.36] [--runtimes runc,crun,gvisor,wasmedge] [--cold]

For the artifacts a lab with that Kubernetes minor and those runtimes needs (what
``deploy bundle build`` builds today), in fresh stores in a temporary folder:

  fill    every artifact built into an empty store with the machine's warm Go caches
          (~/.cache/labdeploy/go): a relink, what a second lab on this machine costs
  no-op   the same build again, in process: the store answers "cached"
  cli     `deploy bundle build` again as a user runs it (Python start-up included): the
          target is <= 2 s for a fully built lab
  cold    with --cold: an empty Go build cache too (the module cache stays shared, so no
          download is timed): what a fresh machine costs; slow (minutes per Kubernetes binary)

Prints a table per artifact, the store's size and the no-op total against its 2 s target.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.bundle import BundleStore  # noqa: E402
from deploy.bundle.build import Line, build, wanted  # noqa: E402

SHARED_GO = Path.home() / ".cache" / "labdeploy" / "go"
SHARED_WASM = Path.home() / ".cache" / "labdeploy" / "wasm"
TARGET_NOOP_S = 2.0


def _cache(root: Path, *, cold: bool) -> Path:
    """A LABDEPLOY_CACHE folder whose Go caches (and the Wasm build chroot) are the shared ones; cold:
    an empty Go build cache and a new chroot (the module cache stays shared: no download is timed)."""
    (root / "go").mkdir(parents=True)
    (root / "go" / "mod").symlink_to(SHARED_GO / "mod")
    if not cold:
        (root / "go" / "build").symlink_to(SHARED_GO / "build")
        if SHARED_WASM.is_dir():
            (root / "wasm").symlink_to(SHARED_WASM)
    return root


def _run(root: Path, args: argparse.Namespace) -> tuple[list[Line], float]:
    os.environ["LABDEPLOY_CACHE"] = str(root)
    want = wanted(args.kubernetes, [r for r in args.runtimes.split(",") if r])
    start = time.monotonic()
    lines = build(want, BundleStore(root / "bundle"), parallel=1)
    return lines, time.monotonic() - start


def _cli_noop(root: Path, args: argparse.Namespace) -> float:
    env = {**os.environ, "LABDEPLOY_CACHE": str(root)}
    command = [sys.executable, "-m", "deploy.cli", "bundle", "build", "--kubernetes", args.kubernetes,
               "--runtimes", args.runtimes, "--output", "json"]
    start = time.monotonic()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubernetes", default="1.36")
    parser.add_argument("--runtimes", default="runc,crun,gvisor,wasmedge")  # labs/k8s/lab.yaml's
    parser.add_argument("--cold", action="store_true", help="also build with an empty Go build cache (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ld-bench-bundle-") as tmp:
        warm = _cache(Path(tmp) / "warm", cold=False)
        fill, fill_s = _run(warm, args)
        noop, noop_s = _run(warm, args)
        cli_s = _cli_noop(warm, args)
        cold: dict[str, Line] = {}
        if args.cold:
            lines, _ = _run(_cache(Path(tmp) / "cold", cold=True), args)
            cold = {str(line.key): line for line in lines}
    failed = [line for line in fill if line.outcome == "failed"]
    print(f"{'artifact':<56} {'cold s':>8} {'fill s':>8} {'no-op s':>8} {'MiB':>7}")
    for first, again in zip(fill, noop, strict=True):
        c = cold.get(str(first.key))
        cold_s = f"{c.seconds:8.1f}" if c else f"{'-':>8}"
        print(f"{first.key!s:<56} {cold_s} {first.seconds:8.1f} {again.seconds:8.3f} {first.size / 2**20:7.1f}")
    size = sum(line.size for line in fill)
    print(f"store: {len(fill)} artifacts, {size / 2**20:.1f} MiB; fill {fill_s:.1f} s, in-process no-op "
          f"{noop_s:.2f} s, `deploy bundle build` no-op {cli_s:.2f} s = {cli_s / TARGET_NOOP_S:.2f}x the "
          f"{TARGET_NOOP_S:g} s target ({'met' if cli_s <= TARGET_NOOP_S else 'missed'}); "
          f"cli no-op / fill = {cli_s / fill_s:.3f}")
    for line in failed:
        print(f"failed: {line.key}: {line.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
