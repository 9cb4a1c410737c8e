"""The typed interface of verification: what to check (targets, entries, cluster) and what came out.

``run_verify`` (in :mod:`deploy.verify.runner`) consumes these; the CLI turns a report with
``failed > 0`` into :class:`deploy.errors.VerificationError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.providers.base import SshEndpoint

LAYERS = ("nodes", "runtimes", "kubernetes", "cilium", "istio", "runtimeclass", "gpu", "user")


@dataclass(frozen=True)
class VerifyTarget:
    """One node to verify, as planned."""

    name: str
    group: str | None
    roles: tuple[str, ...]
    ssh: SshEndpoint
    hostname: str
    hosts_entries: tuple[tuple[str, str], ...] = ()  # (address, name) expected in /etc/hosts
    labels: dict[str, str] = field(default_factory=dict)  # expected Kubernetes node labels
    gpus: int = 0  # GPUs passed through; > 0 makes it a GPU node


@dataclass(frozen=True)
class VerifyEntry:
    """One ``verify:`` entry of the lab: a shell check (``run``) or a user pytest file (``pytest``)."""

    name: str
    hosts: str = "all"  # group name, node name or "all"
    run: str | None = None
    expect: str | None = None  # substring of stdout
    expect_regex: str | None = None
    expect_rc: int | None = None  # default 0 when neither expect nor expect_regex is set
    retries: int = 3
    timeout: float = 30.0
    pytest: str | None = None  # path relative to the lab file's folder


@dataclass(frozen=True)
class PodImages:
    """Images the cluster checks run; override them for mirrors or air-gapped labs."""

    shell: str = "busybox:1.36"
    curl: str = "curlimages/curl:8.10.1"
    wasm: str = "ghcr.io/containerd/runwasi/wasi-demo-app:latest"
    cuda: str = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0"
    http_tool: str = "curl"  # what the client image fetches with: curl, busybox's wget, or nc
    wasm_command: tuple[str, ...] | None = None  # None: the demo app echoes the check's marker
    wasm_prints: str | None = None  # what the module prints when it is not told the marker
    wasm_annotations: tuple[tuple[str, str], ...] = ()  # pod annotations the Wasm handler needs


def bundle_images(shell: str, wasm: str, wasm_prints: str, annotation: tuple[str, str]) -> PodImages:
    """The check images of a lab whose bundle supplies them (no registry): busybox fetches with nc (its
    wget is static glibc: the resolver crashes it, seen here as a segfault)."""
    return PodImages(shell=shell, curl=shell, wasm=wasm, http_tool="nc", wasm_command=(),
                     wasm_prints=wasm_prints, wasm_annotations=(annotation,))


@dataclass(frozen=True)
class ClusterExpect:
    """What the cluster should look like beyond the nodes (from the lab's ``kubernetes:``)."""

    kube_proxy_replacement: bool = False
    istio_mode: str = "sidecar"  # sidecar | ambient
    mtls_strict: bool = True
    mig_strategy: str | None = None  # none | single | mixed
    network_policy: bool = False  # the CNI (Cilium) or the bridge CNI's enforcer enforces NetworkPolicy
    namespace: str = "default"  # where test pods run (must exist)
    images: PodImages = field(default_factory=PodImages)
    pod_timeout: float = 180.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check or user test."""

    name: str
    layer: str
    node: str | None
    outcome: str  # passed | failed | skipped | error
    seconds: float
    failure: str = ""
    reproduce: str = ""
    nodeid: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    """Every result of a verify run and where the reports were written."""

    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    junit: Path | None = None
    html: Path | None = None
    json: Path | None = None

    def _count(self, *outcomes: str) -> int:
        return sum(1 for r in self.results if r.outcome in outcomes)

    @property
    def passed(self) -> int:
        return self._count("passed")

    @property
    def failed(self) -> int:
        return self._count("failed", "error")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def total(self) -> int:
        return len(self.results)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome in ("failed", "error")]
