"""The bundle's real helm binary, and test charts the tests write themselves (no chart is downloaded).

``helm_binary`` takes helm from the bundle store when the store's copy was built by today's recipe,
else builds it from go/helm-<version>/ through the Go module proxy (a warm cache only links).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.bundle.recipes_tools import helm as helm_recipe
from deploy.bundle.store import BundleStore
from tests.integration.bundle_fixtures import build_one

CHART = "labdeploy-test-web"  # a test chart: written by write_test_chart, packaged by the real helm

CHART_YAML = """apiVersion: v2
name: {name}
description: a test chart of labdeploy's add-on tests
version: {version}
appVersion: "1.0"
"""
VALUES_YAML = """replicaCount: 1
labels: {tier: web}
ports: [80]
message: hello
"""
DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- toYaml .Values.labels | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1.0
          ports:
          {{- range .Values.ports }}
            - containerPort: {{ . }}
          {{- end }}
"""
CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-message}
data:
  message: {{ .Values.message | quote }}
  chart: {{ .Chart.Version | quote }}
"""


@pytest.fixture(scope="session")
def helm_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        pytest.skip("go is not installed: helm cannot be built")
    recipe = helm_recipe()
    stored = BundleStore().get(recipe.key)
    if stored is not None and stored.source.recipe_hash == recipe.recipe_hash():
        return stored.path
    return build_one(recipe, tmp_path_factory.mktemp("helm"))[0]


def write_test_chart(root: Path, version: str = "0.1.0", name: str = CHART, *, workload: bool = True) -> Path:
    """The test chart; without ``workload`` only its ConfigMap (no image to pull, for a real cluster here)."""
    chart = root / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(CHART_YAML.format(name=name, version=version))
    (chart / "values.yaml").write_text(VALUES_YAML)
    if workload:
        (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP)
    return chart


def package(helm: Path, chart: Path, into: Path) -> Path:
    """``helm package`` the chart into ``into``; the archive's path."""
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(helm), "package", str(chart), "--destination", str(into)],
                          capture_output=True, text=True, check=True, env={"HOME": str(into.parent), "PATH": ""})
    return Path(done.stdout.strip().rpartition(": ")[2])
