"""Registers the test provider kind ``recorder`` the way any package would: an entry point.

A throw-away distribution (``labdeploy_test_providers``) with only an ``entry_points.txt`` is
put on ``sys.path`` (and on PYTHONPATH for ``deploy`` subprocesses); the registry then finds
``recorder`` through ``importlib.metadata`` exactly as it finds ``libvirt``. Nothing in
``deploy/`` knows this kind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ENTRY_POINTS = "[labdeploy.providers]\nrecorder = tests.recorder_provider:RecorderProvider\n"
METADATA = "Metadata-Version: 2.1\nName: labdeploy-test-providers\nVersion: 0\n"


def install(root: Path) -> Path:
    info = root / "labdeploy_test_providers-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(METADATA)
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture(autouse=True, scope="session")
def recorder_entry_point(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = install(tmp_path_factory.mktemp("plugins"))
    project = str(Path(__file__).resolve().parent.parent)
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), project, os.environ.get("PYTHONPATH")) if p)
    return root
