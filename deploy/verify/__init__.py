"""Post-deploy verification: built-in checks per layer, ``verify:`` entries, user pytest files, reports.

The narrow interface for the run engine and CLI::

    report = run_verify(targets, entries, known_hosts=..., kubeconfig=..., runtimes=(...),
                        layers={...}, out_dir=..., lab_file_dir=...)
    if report.failed: raise VerificationError(...)
"""

from __future__ import annotations

from deploy.verify.model import (
    LAYERS,
    CheckResult,
    ClusterExpect,
    PodImages,
    VerifyEntry,
    VerifyReport,
    VerifyTarget,
)
from deploy.verify.runner import run_verify

__all__ = [
    "LAYERS",
    "CheckResult",
    "ClusterExpect",
    "PodImages",
    "VerifyEntry",
    "VerifyReport",
    "VerifyTarget",
    "run_verify",
]
