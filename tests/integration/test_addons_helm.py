"""The bundle's real helm against test charts the tests write: values, chart archives, lint, failures.

No cluster: ``helm template`` and ``helm lint`` render locally; the failed upgrade goes to a closed
port on loopback. Installing on a real API server is tests/integration/test_addons_vm.py (a VM test).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from deploy.addons import charts, releases, values
from deploy.addons.helm import Helm, Release
from deploy.errors import StageError
from deploy.model import open_lab
from deploy.model.schema_addons import AddonSpec
from deploy.plan import build_resources
from tests.integration.helm_fixtures import CHART, package, write_test_chart

pytestmark = pytest.mark.integration

BASE = "replicaCount: 2\nlabels: {tier: web, team: blue}\nports: [80, 443]\nmessage: from-file\n"


def _docs(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


@pytest.fixture
def mirror(helm_binary: Path, tmp_path: Path) -> Path:
    """A mirrors.charts folder holding the test chart at 0.1.0 and 0.2.0, packaged by helm."""
    for version in ("0.1.0", "0.2.0"):
        package(helm_binary, write_test_chart(tmp_path / "src" / version, version), tmp_path / "charts")
    (tmp_path / "base.yaml").write_text(BASE)
    return tmp_path / "charts"


def _release(addon: AddonSpec, lab_dir: Path) -> Release:
    values_file = lab_dir / f"{addon.name}.values.yaml"
    values_file.write_text(values.render(addon, lab_dir))
    source = charts.source(addon, "charts", lab_dir)
    return Release(addon.name, addon.namespace, source, values_file)


def test_rendered_values_reach_the_manifests_from_the_mirror(helm_binary: Path, mirror: Path) -> None:
    lab_dir = mirror.parent
    addon = AddonSpec(name="web", chart=CHART, version="0.2.0", namespace="demo", values_files=["base.yaml"],
                      values={"replicaCount": 3, "labels": {"tier": None, "zone": "a"}, "ports": [8080]})
    helm = Helm(helm_binary, lab_dir / "helm-home")
    out = _docs(helm.template(_release(addon, lab_dir)))
    deployment = out["Deployment"]
    assert deployment["spec"]["replicas"] == 3  # inline over the file
    # maps merged; a null removes the chart's default (tier: web in its values.yaml)
    assert deployment["metadata"]["labels"] == {"team": "blue", "zone": "a"}
    assert [p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]] == [8080]
    assert deployment["metadata"]["namespace"] == "demo"
    assert out["ConfigMap"]["data"] == {"message": "from-file", "chart": "0.2.0"}  # the archive of that version


def test_one_rendered_file_renders_as_helm_merging_the_files_itself(helm_binary: Path, mirror: Path) -> None:
    """What labdeploy merges is what Helm would have made of the values files and --set given one by one."""
    lab_dir = mirror.parent
    (lab_dir / "over.yaml").write_text("replicaCount: 5\nlabels: {team: null, tier: null, zone: b}\nports: [9090]\n")
    addon = AddonSpec(name="web", chart=CHART, version="0.1.0", values_files=["base.yaml", "over.yaml"],
                      values={"message": "inline"})
    helm = Helm(helm_binary, lab_dir / "helm-home")
    ours = helm.template(_release(addon, lab_dir))
    archive = str(mirror / f"{CHART}-0.1.0.tgz")
    theirs = helm.run(["template", "web", archive, "--namespace", "default", "-f", str(lab_dir / "base.yaml"),
                       "-f", str(lab_dir / "over.yaml"), "--set", "message=inline"], 60, "rendering by hand")
    assert ours == theirs


def test_the_chart_digest_is_the_archives_and_changes_with_its_content(helm_binary: Path, mirror: Path,
                                                                       tmp_path: Path) -> None:
    addon = AddonSpec(name="web", chart=CHART, version="0.1.0")
    source = charts.source(addon, str(mirror), tmp_path)
    archive = mirror / f"{CHART}-0.1.0.tgz"
    assert source.ref == str(archive)
    assert source.digest == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert source.args() == [str(archive)]
    chart = write_test_chart(tmp_path / "changed", "0.1.0")
    (chart / "templates" / "extra.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: extra}\n")
    package(helm_binary, chart, mirror)  # the same version repackaged with other content
    assert charts.source(addon, str(mirror), tmp_path).digest != source.digest


def test_lint_passes_the_test_chart_and_names_a_broken_template(helm_binary: Path, tmp_path: Path) -> None:
    helm = Helm(helm_binary, tmp_path / "helm-home")
    chart = write_test_chart(tmp_path / "src")
    rendered = tmp_path / "values.yaml"
    rendered.write_text(values.render(AddonSpec(name="web", chart=CHART, version="0.1.0",
                                                values={"replicaCount": 2}), tmp_path))
    assert "1 chart(s) linted, 0 chart(s) failed" in helm.lint(chart, rendered)
    (chart / "templates" / "broken.yaml").write_text("metadata: {name: {{ .Values.nope.deeper }}}\n")
    with pytest.raises(StageError) as info:
        helm.lint(chart, rendered)
    assert "helm lint exited 1" in str(info.value)
    assert "broken.yaml" in str(info.value)


def test_a_failed_upgrade_reports_helm_history(helm_binary: Path, mirror: Path) -> None:
    lab_dir = mirror.parent
    kubeconfig = _closed_kubeconfig(lab_dir)
    helm = Helm(helm_binary, lab_dir / "helm-home", kubeconfig)
    addon = AddonSpec(name="web", chart=CHART, version="0.1.0", timeout="30s", atomic=True)
    release = _release(addon, lab_dir)
    with pytest.raises(StageError) as info:
        helm.upgrade(release)
    message = str(info.value)
    assert message.startswith("addons: installing add-on web: helm upgrade exited 1")
    assert "connection refused" in message
    assert "unknown flag" not in message  # every flag upgrade_args builds is one helm v3.22 has
    assert "\nhelm history web -n default:\n(unavailable: addons: reading the history of web" in message
    assert info.value.hint.startswith("--atomic: true rolls a failed upgrade back")


# --- the step: what `deploy up` runs for addon:<name>, up to the API server ----------------------


def _ctx(tmp_path: Path, kubeconfig: Path, *, destroying: bool = False) -> SimpleNamespace:
    """The parts of a StepContext the add-on step reads (the resolved lab, its file, state and outputs)."""
    resolved = open_lab(tmp_path / "lab.yaml")[1]
    recorded = {"cluster:kubernetes": {"kubeconfig": str(kubeconfig)},
                "addon:web": {"release": "web", "namespace": "demo"}, "addon:cni": {"pod_cidrs": {}}}
    return SimpleNamespace(resolved=resolved, lab_file=tmp_path / "lab.yaml", state_dir=tmp_path / "state",
                           destroying=destroying, outputs_of=lambda rid: recorded.get(rid, {}))


STEP_LAB = """name: lab1
groups: {cp: {}}
kubernetes: {version: "1.36", control_plane: cp, cni: {bridge: {}}}
mirrors: {charts: charts}
addons:
  - {name: web, chart: labdeploy-test-web, version: 0.2.0, namespace: demo, timeout: 20s, values: {message: hi}}
"""


def _step_lab(mirror: Path) -> tuple[Path, Path]:
    lab_dir = mirror.parent
    (lab_dir / "lab.yaml").write_text(STEP_LAB)
    return lab_dir, _closed_kubeconfig(lab_dir)


def test_the_step_installs_with_the_bundles_helm_and_a_private_values_file(mirror: Path) -> None:
    from deploy.addons import step
    from deploy.bundle.recipes_tools import helm as recipe
    from deploy.bundle.store import BundleStore

    if BundleStore().get(recipe().key) is None:
        pytest.skip("helm is not in the bundle store (deploy bundle build --kubernetes 1.36)")
    lab_dir, kubeconfig = _step_lab(mirror)
    ctx = _ctx(lab_dir, kubeconfig)
    resource = next(r for r in build_resources(ctx.resolved).values() if r.id == "addon:web")
    with pytest.raises(StageError) as info:
        step.install(resource, ctx)
    assert "installing add-on web: helm upgrade exited 1" in str(info.value)
    assert "connection refused" in str(info.value)
    assert info.value.left == releases.outputs(resource.inputs)  # recorded: dropping the entry uninstalls it
    written = lab_dir / "state" / "addons" / "web.values.yaml"
    assert written.read_text() == "message: hi\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    env = step.helm_for(ctx).run(["env"], 30, "reading helm's env")  # its cache and config: the lab's own
    assert f'HELM_CACHE_HOME="{lab_dir / "state" / "helm" / "cache"}"' in env
    assert f'HELM_REPOSITORY_CONFIG="{lab_dir / "state" / "helm" / "config" / "repositories.yaml"}"' in env
    with pytest.raises(StageError, match="uninstalling add-on web: helm uninstall exited 1"):
        step.teardown_addon(None, "web", ctx)  # a removed entry is uninstalled through the same helm
    step.teardown_addon(None, "web", _ctx(lab_dir, kubeconfig, destroying=True))  # the cluster goes whole
    step.teardown_addon(None, "cni", ctx)  # a typed add-on is no Helm release: nothing to uninstall
    (lab_dir / "lab.yaml").write_text(STEP_LAB.replace("namespace: demo", "namespace: elsewhere"))
    moved = _ctx(lab_dir, kubeconfig)  # the recorded release is in demo
    with pytest.raises(StageError, match="uninstalling add-on web: helm uninstall exited 1"):
        step.install(resource, moved)  # a release moved to another namespace is uninstalled from the old first
    (lab_dir / "lab.yaml").write_text("name: lab1\ngroups: {cp: {}}\n")  # kubernetes: and addons: both gone
    with pytest.raises(StageError, match="uninstalling add-on web: helm uninstall exited 1"):
        step.teardown_addon(None, "web", _ctx(lab_dir, kubeconfig))


def _closed_kubeconfig(lab_dir: Path) -> Path:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = lab_dir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                  "insecure-skip-tls-verify": True}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        "users": [{"name": "lab", "user": {"token": "not-a-secret"}}]}))
    kubeconfig.chmod(0o600)
    return kubeconfig


@pytest.fixture
def chart_repository(helm_binary: Path, mirror: Path) -> Iterator[str]:
    """The mirror folder indexed by ``helm repo index`` and served over HTTP on loopback (stopped after)."""
    Helm(helm_binary, mirror.parent / "helm-home").run(["repo", "index", str(mirror)], 60, "indexing the mirror")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_chart_repository_mirror_serves_the_pinned_version(helm_binary: Path, mirror: Path,
                                                             chart_repository: str) -> None:
    lab_dir = mirror.parent
    for version in ("0.1.0", "0.2.0"):
        addon = AddonSpec(name="web", chart=CHART, version=version, values={"message": "over http"})
        source = charts.source(addon, chart_repository, lab_dir)
        values_file = lab_dir / "web.values.yaml"
        values_file.write_text(values.render(addon, lab_dir))
        out = _docs(Helm(helm_binary, lab_dir / "helm-home").template(Release("web", "demo", source, values_file)))
        assert out["ConfigMap"]["data"] == {"message": "over http", "chart": version}
    missing = AddonSpec(name="web", chart=CHART, version="0.3.0")
    with pytest.raises(StageError, match=r"helm template exited 1: .*0\.3\.0"):
        Helm(helm_binary, lab_dir / "helm-home").template(
            Release("web", "demo", charts.source(missing, chart_repository, lab_dir), values_file))
