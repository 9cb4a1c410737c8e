"""Writing a lab file into a test's folder and reading back what ``open_lab`` says of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.errors import ConfigError, Problem
from deploy.model import open_lab
from deploy.model.resolve import ResolvedLab


def lab_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        open_lab(lab_file(tmp_path, text))
    return info.value.problems


def only(tmp_path: Path, text: str) -> Problem:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def valid(tmp_path: Path, text: str) -> ResolvedLab:
    return open_lab(lab_file(tmp_path, text))[1]
