"""Add-ons re-run: a converged lab's five Helm releases kept by labdeploy vs five `helm upgrade --install` by hand.

    .venv/bin/python bench/addons.py [--lab LAB --state-dir DIR] [--rounds 3]

With --lab and --state-dir, LAB is a cluster lab that is up (kept as it is); without them a copy of labs/k8s is
brought up first (`deploy up --no-verify`, untimed) and destroyed at the end.
The benchmark writes five ConfigMap-only benchmark charts (no image to pull), packages them with the
bundle's helm into a chart folder, adds them to a copy of the lab as `addons:` and installs them with
`deploy up` (untimed; the nodes are not touched: mirrors.charts is the host's). Then, per round:

  ours    `deploy up COPY --no-verify` of the converged lab: it finds every release unchanged and runs no helm
  theirs  five `helm upgrade --install NAME CHART -n NS -f VALUES --wait` by hand, the same charts and values

Prints the seconds of each and ours/theirs (target: <= 0.3). At the end the releases are removed again
through the lab (`deploy up` of the lab without them plans and runs their uninstall).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.addons.helm import Helm  # noqa: E402
from deploy.bundle import ArtifactKey  # noqa: E402
from deploy.bundle.recipes_tools import HELM_VERSION  # noqa: E402
from deploy.bundle.store import BundleStore  # noqa: E402

DEPLOY = [sys.executable, "-c", "import sys; from deploy.cli import main; sys.exit(main())"]
COUNT = 5
NAMESPACE = "bench-addons"
CHART = """apiVersion: v2
name: {name}
description: a benchmark chart of bench/addons.py (one ConfigMap)
version: 0.1.0
"""
CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}}
data: {message: {{ .Values.message | quote }}}
"""


def charts(helm: Helm, folder: Path) -> list[str]:
    names = [f"bench-chart-{i}" for i in range(COUNT)]
    for name in names:
        src = folder.parent / "src" / name
        (src / "templates").mkdir(parents=True, exist_ok=True)
        (src / "Chart.yaml").write_text(CHART.format(name=name))
        (src / "values.yaml").write_text("message: default\n")
        (src / "templates" / "configmap.yaml").write_text(CONFIGMAP)
        helm.run(["package", str(src), "--destination", str(folder)], 60, f"packaging {name}")
    return names


def lab_with(lab: Path, folder: Path, names: list[str], into: Path) -> Path:
    entries = "".join(f"  - {{name: {n}, chart: {n}, version: 0.1.0, namespace: {NAMESPACE}, "
                      f"values: {{message: from-{n}}}}}\n" for n in names)
    text = lab.read_text().rstrip("\n") + f"\nmirrors: {{charts: {folder}}}\naddons:\n{entries}"
    into.write_text(text)
    return into


def deploy(lab: Path, state: Path, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([*DEPLOY, "up", str(lab), "--state-dir", str(state), "--no-verify", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"deploy up {lab} -> {done.returncode}\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds, done.stdout + done.stderr


def by_hand(helm: Helm, folder: Path, names: list[str], work: Path) -> float:
    started = time.monotonic()
    for name in names:
        values = work / f"{name}.yaml"
        values.write_text(f"message: from-{name}\n")
        helm.run(["upgrade", "--install", name, str(folder / f"{name}-0.1.0.tgz"), "--namespace", NAMESPACE,
                  "--create-namespace", "--values", str(values), "--wait", "--timeout", "300s"], 360,
                 f"helm upgrade --install {name}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", type=Path)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.lab is None or args.state_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="bench-addons-lab-"))
        lab = folder / "lab.yaml"
        text = (ROOT / "labs/k8s/lab.yaml").read_text()
        lab.write_text(text.replace("name: k8s\n", f"name: ba{uuid.uuid4().hex[:4]}\nttl: 3h\n"))
        try:
            deploy(lab, folder / "state")
            return measure(lab, folder / "state", args.rounds)
        finally:
            subprocess.run([*DEPLOY, "destroy", str(lab), "--state-dir", str(folder / "state")], cwd=ROOT,
                           capture_output=True, text=True, timeout=900, check=False)
    return measure(args.lab, args.state_dir, args.rounds)


def measure(lab: Path, state: Path, rounds: int) -> int:
    """Install the five releases through ``lab`` (a copy of it), time both sides, remove them again."""
    stored = BundleStore().get(ArtifactKey("helm", HELM_VERSION))
    if stored is None:
        raise SystemExit(f"helm {HELM_VERSION} is not in the bundle: deploy bundle build {lab}")
    kubeconfig = state / "kubeconfig"
    with tempfile.TemporaryDirectory(prefix="bench-addons-") as tmp:
        work = Path(tmp)
        helm = Helm(stored.path, work / "helm-home", kubeconfig)
        folder = work / "charts"
        folder.mkdir()
        names = charts(Helm(stored.path, work / "helm-home"), folder)
        copy = lab_with(lab, folder, names, lab.parent / f".bench-addons-{lab.name}")
        try:
            installed, _ = deploy(copy, state)
            print(f"installed {COUNT} releases through the lab: {installed:.1f} s (untimed setup)")
            ours, theirs, said = [], [], []
            for _ in range(rounds):
                seconds, out = deploy(copy, state)
                ours.append(seconds)
                said.append("No changes" in out)
                theirs.append(by_hand(helm, folder, names, work))
            o, t = statistics.median(ours), statistics.median(theirs)
            print(f"ours   (converged deploy up, {COUNT} releases kept): median {o:.2f} s  "
                  f"{[round(x, 2) for x in ours]}  'No changes' every round: {all(said)}")
            print(f"theirs ({COUNT} helm upgrade --install --wait by hand):  median {t:.2f} s  "
                  f"{[round(x, 2) for x in theirs]}")
            print(f"ours/theirs = {o / t:.3f}  (target <= 0.3)")
        finally:
            removed, _ = deploy(lab, state)
            print(f"releases uninstalled through the lab: {removed:.1f} s")
            copy.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
