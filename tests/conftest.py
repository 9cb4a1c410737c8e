"""Shared fixtures: a real sshd on loopback (tests/integration/sshd_fixtures.py)."""

from __future__ import annotations

pytest_plugins = ["tests.integration.sshd_fixtures", "tests.provider_plugin"]
