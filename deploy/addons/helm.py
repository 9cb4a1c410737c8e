"""The helm binary of the bundle, run on the host against the lab's kubeconfig.

One :class:`Release` is what the lab asks of one add-on; :class:`Helm` turns it into the commands

    helm upgrade --install <name> <chart> -n <ns> --create-namespace -f <values> [--wait] --timeout <t>s [--atomic]
    helm uninstall <name> -n <ns> --wait --ignore-not-found   (a release already gone is no error)
    helm history <name> -n <ns> --max 5          (read into the error of a failed upgrade)
    helm template / helm lint                    (the same chart and values, no cluster)

Helm's own state (repository cache, registry config) lives under ``home``, never in the user's
~/.cache/helm, so a run is independent of what else the host's helm has seen.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.addons.charts import ChartSource
from deploy.errors import StageError

STAGE = "addons"
HISTORY_MAX = 5
SLACK = 60.0  # beyond helm's own --timeout, for its client-side work


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    chart: ChartSource
    values_file: Path
    wait: bool = True
    timeout: int = 300
    atomic: bool = False

    def chart_and_values(self) -> list[str]:
        return [*self.chart.args(), "--namespace", self.namespace, "--values", str(self.values_file)]


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def upgrade_args(self, release: Release) -> list[str]:
        args = ["upgrade", "--install", release.name, *release.chart_and_values(), "--create-namespace",
                "--timeout", f"{release.timeout}s"]
        return args + ["--wait"] * release.wait + ["--atomic"] * release.atomic

    def upgrade(self, release: Release) -> str:
        """``helm upgrade --install``; a failure's error carries the release's ``helm history``."""
        try:
            return self.run(self.upgrade_args(release), release.timeout + SLACK, f"installing add-on {release.name}")
        except StageError as exc:
            history = self.history(release.name, release.namespace)
            raise StageError(STAGE, f"{exc}\nhelm history {release.name} -n {release.namespace}:\n{history}",
                             hint="--atomic: true rolls a failed upgrade back; `helm rollback` by hand "
                             "with the lab's kubeconfig otherwise") from None

    def uninstall(self, name: str, namespace: str, timeout: int = 300) -> str:
        args = ["uninstall", name, "--namespace", namespace, "--wait", "--timeout", f"{timeout}s", "--ignore-not-found"]
        return self.run(args, timeout + SLACK, f"uninstalling add-on {name}")

    def history(self, name: str, namespace: str) -> str:
        """The last releases of ``name`` as helm prints them, or why helm could not say."""
        args = ["history", name, "--namespace", namespace, "--max", str(HISTORY_MAX)]
        try:
            return self.run(args, 60.0, f"reading the history of {name}").strip()
        except StageError as exc:
            return f"(unavailable: {exc})"

    def template(self, release: Release) -> str:
        return self.run(["template", release.name, *release.chart_and_values()], 120.0,
                        f"rendering add-on {release.name}")

    def lint(self, chart: Path, values_file: Path) -> str:
        return self.run(["lint", str(chart), "--values", str(values_file)], 120.0, f"linting chart {chart}")

    def run(self, args: list[str], timeout: float, what: str) -> str:
        command = [str(self.binary), *args]
        if self.kubeconfig is not None:
            command += ["--kubeconfig", str(self.kubeconfig)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=self._env(),
                                  check=False)
        except subprocess.TimeoutExpired:
            raise StageError(STAGE, f"{what}: helm did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise StageError(STAGE, f"{what}: cannot run {self.binary}: {exc.strerror}") from None
        if done.returncode != 0:
            said = "\n".join(t for t in (done.stderr.strip(), done.stdout.strip()) if t)[-2000:]
            raise StageError(STAGE, f"{what}: helm {args[0]} exited {done.returncode}: {said}")
        return done.stdout

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_") and k != "KUBECONFIG"}
        for part in ("cache", "config", "data"):
            env[f"HELM_{part.upper()}_HOME"] = str(self.home / part)
        return env
