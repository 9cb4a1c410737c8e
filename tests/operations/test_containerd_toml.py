"""containerd's TOML files come from tomli-w: the same documents the hand-written emitter made.

The two texts below are what the former hand-written emitter wrote (the operation fixtures'
expected uploads before tomli-w); parsed with tomllib they must equal what is written now.
"""

from __future__ import annotations

import tomllib
from typing import Any

from deploy.configure.operations.containerd import config_document, render_config, render_hosts_toml

HANDLERS: list[dict[str, Any]] = [
    {"name": "runc", "runtime_type": "io.containerd.runc.v2", "binary_name": None, "config_path": None},
    {"name": "crun", "runtime_type": "io.containerd.runc.v2", "binary_name": "/usr/bin/crun", "config_path": None},
]
HAND_WRITTEN_CONFIG = (
    '# managed by labdeploy; local edits are overwritten\n'
    'version = 2\n'
    '\n'
    '[plugins."io.containerd.grpc.v1.cri".containerd]\n'
    '  default_runtime_name = "runc"\n'
    '\n'
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
    '  runtime_type = "io.containerd.runc.v2"\n'
    '\n'
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
    '  SystemdCgroup = true\n'
    '\n'
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]\n'
    '  runtime_type = "io.containerd.runc.v2"\n'
    '\n'
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]\n'
    '  BinaryName = "/usr/bin/crun"\n'
    '  SystemdCgroup = true\n'
    '\n'
    '[plugins."io.containerd.grpc.v1.cri".registry]\n'
    '  config_path = "/etc/containerd/certs.d"\n'
)
HAND_WRITTEN_HOSTS = (
    '# managed by labdeploy; local edits are overwritten\n'
    'server = "https://registry-1.docker.io"\n'
    '\n'
    '[host."http://registry.internal:5000"]\n'
    '  capabilities = ["pull", "resolve"]\n'
)


def test_config_means_what_the_hand_written_emitter_wrote() -> None:
    assert tomllib.loads(render_config(HANDLERS)) == tomllib.loads(HAND_WRITTEN_CONFIG)


def test_hosts_toml_means_what_the_hand_written_emitter_wrote() -> None:
    assert tomllib.loads(render_hosts_toml("docker.io", "registry.internal:5000")) == tomllib.loads(HAND_WRITTEN_HOSTS)


def test_awkward_strings_survive_the_round_trip() -> None:
    odd = [{"name": "odd", "runtime_type": "io.containerd.kata.v2", "config_path": '/opt/k"ata\\ä\nx/c.toml'}]
    text = render_config(odd, registry_config_path="/etc/ctr d/\\certs")
    assert text.startswith("# managed by labdeploy")
    assert tomllib.loads(text) == config_document(odd, registry_config_path="/etc/ctr d/\\certs")
    assert tomllib.loads(text)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["odd"] == {
        "runtime_type": "io.containerd.kata.v2",
        "options": {"ConfigPath": '/opt/k"ata\\ä\nx/c.toml'},
    }
