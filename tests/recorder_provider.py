"""A provider for run-engine tests that records every call (it stands in for no real component).

Kind ``recorder``. Everything it knows lives in one work folder, so separate processes (a
``deploy up`` killed and started again) share it:

    config.json    behaviour, re-read on every call:
                     fail:  {"machine:web-1": "message", ...}   raise ProviderError for that step
                     sleep: {"image:deb": 30.0, ...}            sleep (after recording the creation)
                     ssh:   {"host", "port", "user", "key"}     endpoint every machine reports
                     ssh_nodes: {"web-1": {...}}                per-node endpoint override
                     leak_secret: true                          return the resolved password in outputs
    calls.jsonl    one line per call start and end: {"call", "key", "phase", "t", "pid"}
    machines.json  the machines it "created" (its hypervisor): name -> {lab, run_id, created}

Machine endpoints point at a real sshd (tests/integration/sshd_fixtures.py), so the engine's
``reachable`` stage really connects. Creation is idempotent like a real provider's: creating
an existing machine returns it and logs a ``reuse`` call.

It is a provider kind like any other: this module and its entry point are all it takes
(``tests/provider_plugin.py`` installs the entry point for the test session, as a package's
metadata would). Labs may say ``kind: recorder, workdir: DIR`` directly; tests that reuse a
libvirt lab swap the resolved provider specs for :class:`RecorderSpec` (:func:`use_recorder`);
a ``deploy`` subprocess does the same with ``python -m tests.recorder_provider WORKDIR -- ARGS``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from deploy.errors import ProviderError
from deploy.model.resolve import ResolvedLab
from deploy.model.resolved import ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.model.schema import SecretRef
from deploy.providers.base import Capabilities, MachineInfo, Provider, SshEndpoint, TaggedResource, Tags


class RecorderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["recorder"] = "recorder"
    workdir: str
    password: SecretRef | None = None


class RecorderProvider(Provider[RecorderSpec]):
    kind = "recorder"
    spec_model = RecorderSpec
    capabilities = Capabilities(network_modes=frozenset({"user", "isolated"}), image_sources=frozenset({"build"}),
                                host_reachable_modes=frozenset({"user"}))

    @property
    def workdir(self) -> Path:
        return Path(self.spec.workdir)

    # --- provider interface --------------------------------------------------------------

    def prepare_image(self, image: ResolvedImage) -> dict[str, Any]:
        with self._call("prepare_image", f"image:{image.name}"):
            return {"image": image.name}

    def create_network(self, net: ResolvedNetwork, tags: Tags) -> dict[str, Any]:  # noqa: ARG002
        with self._call("create_network", f"network:{net.name}"):
            out: dict[str, Any] = {"network": net.name}
            if self.spec.password is not None:
                secret = self.ctx.secret(self.spec.password)
                self.ctx.log(f"recorder: logging in with password {secret}")
                if self.config().get("leak_secret"):
                    out["login"] = f"admin:{secret}@recorder"
            return out

    def delete_network(self, name: str) -> None:
        with self._call("delete_network", f"network:{name}"):
            pass

    def create_machine(self, node: ResolvedNode, tags: Tags) -> MachineInfo:
        key = f"machine:{node.name}"
        with self._machines() as machines:
            fresh = node.name not in machines
            if fresh:
                machines[node.name] = {"lab": tags.lab, "run_id": tags.run_id, "created": time.time()}
        self._log("create" if fresh else "reuse", key, "event")
        with self._call("create_machine", key):
            return MachineInfo(node.name, "running", ssh=self._endpoint(node.name))

    def delete_machine(self, name: str) -> None:
        with self._call("delete_machine", f"machine:{name}"), self._machines() as machines:
            machines.pop(name, None)

    def status(self, name: str) -> MachineInfo:
        present = name in self.machines()
        self._log("status", f"machine:{name}", "event")
        return MachineInfo(name, "running" if present else "absent",
                           ssh=self._endpoint(name) if present else None)

    def find_resources(self, lab: str | None = None) -> list[TaggedResource]:
        return [TaggedResource("machine", name, Tags(m["lab"], m["run_id"], datetime.fromtimestamp(m["created"])),
                               self.name)
                for name, m in sorted(self.machines().items()) if lab in (None, m["lab"])]

    # --- helpers -------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        path = self.workdir / "config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def machines(self) -> dict[str, Any]:
        path = self.workdir / "machines.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @contextmanager
    def _machines(self) -> Iterator[dict[str, Any]]:
        with (self.workdir / "machines.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            machines = self.machines()
            yield machines
            tmp = self.workdir / f"machines.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(machines))
            os.replace(tmp, self.workdir / "machines.json")

    @contextmanager
    def _call(self, call: str, key: str) -> Iterator[None]:
        config = self.config()
        self._log(call, key, "start")
        time.sleep(float(config.get("sleep", {}).get(key, 0)))
        if key in config.get("fail", {}):
            self._log(call, key, "failed")
            raise ProviderError(f"recorder: {config['fail'][key]}")
        yield
        self._log(call, key, "end")

    def _log(self, call: str, key: str, phase: str) -> None:
        line = json.dumps({"call": call, "key": key, "phase": phase, "t": time.time(), "pid": os.getpid()})
        fd = os.open(self.workdir / "calls.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def _endpoint(self, name: str) -> SshEndpoint:
        config = self.config()
        ssh = config.get("ssh_nodes", {}).get(name) or config.get("ssh")
        if not ssh:
            raise ProviderError("recorder: config.json has no ssh endpoint")
        return SshEndpoint(ssh["host"], int(ssh["port"]), ssh.get("user", "root"), Path(ssh["key"]))


# --- test helpers --------------------------------------------------------------------------


def write_config(workdir: Path, **config: Any) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config))


def calls(workdir: Path, call: str | None = None, phase: str | None = None) -> list[dict[str, Any]]:
    path = workdir / "calls.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if (call is None or r["call"] == call) and (phase is None or r["phase"] == phase)]


def use_recorder(resolved: ResolvedLab, workdir: Path, password: SecretRef | None = None) -> None:
    """Swap every provider of ``resolved`` for a recorder keeping its files in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in list(resolved.providers):
        resolved.providers[name] = RecorderSpec(workdir=str(workdir), password=password)


def main(argv: list[str]) -> int:
    """``python -m tests.recorder_provider WORKDIR [--secret-env VAR] -- deploy-args...``"""
    import deploy.session
    from deploy.cli import main as deploy_main

    split = argv.index("--")
    workdir, options, args = Path(argv[0]), argv[1:split], argv[split + 1:]
    password = SecretRef(env=options[1]) if options[:1] == ["--secret-env"] else None
    real_open = deploy.session.open_lab

    def open_with_recorder(path: Path) -> Any:
        loaded, resolved = real_open(path)
        use_recorder(resolved, workdir, password)
        return loaded, resolved

    deploy.session.open_lab = open_with_recorder  # type: ignore[assignment]
    return deploy_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
