"""RuntimeClass manifests: valid against the Kubernetes OpenAPI schema, handlers equal to the
containerd handlers and to what the verify checks expect, labels that place their pods."""

from __future__ import annotations

import kubernetes_validate
import pytest

from deploy.cluster import runtimeclasses as rc
from deploy.configure.catalog import handlers_for
from deploy.errors import PlanError
from deploy.verify.checks.runtimeclass import SANDBOXES

LAB_RUNTIMES = ("runc", "crun", "gvisor", "wasmedge", "kata")
VERSIONS = ("1.35.0", "1.36.0", "1.37.0")  # the supported minors


def test_manifests_are_valid_runtimeclasses() -> None:
    for version in VERSIONS:
        for obj in rc.manifests(LAB_RUNTIMES):
            kubernetes_validate.validate(obj, version, strict=True)


def test_names_and_handlers_match_the_verify_checks() -> None:
    made = {obj["metadata"]["name"]: obj["handler"] for obj in rc.manifests(LAB_RUNTIMES)}
    assert made == {name: sb.handler for name, sb in SANDBOXES.items()}
    assert all(sb.runtime_class == name for name, sb in SANDBOXES.items())
    assert made["gvisor"] == "runsc"


def test_handlers_are_the_ones_containerd_gets() -> None:
    checksums = {"containerd-shim-wasmedge-v1": "0" * 64}
    containerd = {h.name for h in handlers_for(LAB_RUNTIMES, checksums)}
    assert {obj["handler"] for obj in rc.manifests(LAB_RUNTIMES)} == containerd


def test_scheduling_selects_the_node_label_of_the_runtime() -> None:
    labels = rc.node_labels(["gvisor", "kata"])
    assert labels == {"runtime.labdeploy.io/gvisor": "true", "runtime.labdeploy.io/kata": "true"}
    for obj in rc.manifests(["gvisor", "kata"]):
        selector = obj["scheduling"]["nodeSelector"]
        assert selector == {f"runtime.labdeploy.io/{obj['metadata']['name']}": "true"}
        assert set(selector.items()) <= set(labels.items())
        assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "labdeploy"}


def test_only_kata_declares_overhead() -> None:
    by_name = {obj["metadata"]["name"]: obj for obj in rc.manifests(LAB_RUNTIMES)}
    assert by_name["kata"]["overhead"] == {"podFixed": {"memory": "160Mi", "cpu": "250m"}}
    assert [name for name, obj in by_name.items() if "overhead" in obj] == ["kata"]


def test_duplicates_collapse_in_lab_order() -> None:
    assert [o["metadata"]["name"] for o in rc.manifests(["crun", "runc", "crun"])] == ["crun", "runc"]


def test_unknown_runtime_is_a_plan_error_listing_the_known() -> None:
    with pytest.raises(PlanError, match=r"'youki'.*crun, gvisor, kata, runc, spin, wasmedge"):
        rc.manifests(["youki"])
    with pytest.raises(PlanError):
        rc.node_labels(["youki"])


def test_stale_lists_managed_classes_no_runtime_wants() -> None:
    assert rc.stale(["runc", "gvisor", "kata"], ["runc", "kata"]) == ["gvisor"]
    assert rc.stale(["runc"], ["runc", "crun"]) == []
    assert rc.stale([], []) == []
