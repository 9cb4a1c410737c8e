"""labdeploy: one declarative lab file to a working, verified virtualization lab."""

from __future__ import annotations

__version__ = "0.1.0"
