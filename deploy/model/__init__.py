"""The lab model: schema (pydantic), loading with positions, resolution, semantic checks."""

from __future__ import annotations

from pathlib import Path

from deploy.model.checks import check_lab
from deploy.model.load import LoadedLab, load_lab
from deploy.model.resolve import ResolvedLab, resolve


def open_lab(path: Path) -> tuple[LoadedLab, ResolvedLab]:
    """Load, validate, resolve and check a lab file; one ConfigError lists every problem."""
    loaded = load_lab(path)
    resolved = resolve(loaded.lab)
    resolved.lab_dir = Path(path).parent
    check_lab(loaded, resolved)
    return loaded, resolved


__all__ = ["LoadedLab", "ResolvedLab", "open_lab"]
