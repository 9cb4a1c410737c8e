"""govmomi's vCenter simulator over TLS on loopback, for the vSphere tests.

The program is our own ``go/vcsim/main.go`` around ``github.com/vmware/govmomi/simulator``
(``make vcsim`` builds it into ``$LABDEPLOY_CACHE/bin/vcsim``; the fixture builds it there itself
when it is missing). Every simulator serves a certificate for 127.0.0.1 signed by a CA the test
session generates, on a free loopback port it picks itself and prints (``VCSIM_URL=...``).

Fixtures:
    vcsim_ca       session-scoped CA and server certificate (``ca_file``, ``cert_file``, ``key_file``)
    vcsim          session-scoped running simulator (VPX model: DC0, cluster DC0_C0, datastore LocalDS_0,
                   port group "VM Network", one VM per host and pool, e.g. DC0_C0_RP0_VM0)
    vcsim_factory  function-scoped: ``vcsim_factory(method_delay={"CloneVM_Task": 0.2})`` starts a fresh one

A VM the simulator powers on reports VMware Tools running and the next address of ``GUEST_NET``,
``GUEST_DELAY`` after its power-on (``-guest-net``/``-guest-delay``; ``guest_net=None`` turns it off),
and incremental ``WaitForUpdatesEx`` calls block until a change as on vCenter, so the provider's
guest-IP wait meets a real PropertyCollector; nothing ever connects to those addresses.
"""

from __future__ import annotations

import datetime
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0
GUEST_NET = "192.0.2.0/24"  # what the simulated VMware Tools report (a documentation range: never contacted)
GUEST_DELAY = 0.3  # seconds after power-on: the provider's wait meets an incremental WaitForUpdatesEx


def _cache() -> Path:
    return Path(os.environ.get("LABDEPLOY_CACHE") or Path.home() / ".cache" / "labdeploy")


def vcsim_binary() -> Path:
    """The built simulator, built now (as ``make vcsim`` does) when missing or older than its sources."""
    binary = Path(os.environ.get("LABDEPLOY_VCSIM") or _cache() / "bin" / "vcsim")
    folder = ROOT / "go" / "vcsim"
    sources = [*folder.glob("*.go"), folder / "go.mod", folder / "go.sum"]
    if binary.exists() and binary.stat().st_mtime >= max(s.stat().st_mtime for s in sources):
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOMODCACHE=str(_cache() / "go" / "mod"), GOCACHE=str(_cache() / "go" / "build"),
               GOFLAGS="-mod=readonly", GOTOOLCHAIN="local")
    subprocess.run(["go", "build", "-trimpath", "-o", str(binary), "."], cwd=ROOT / "go" / "vcsim",
                   env=env, check=True)
    return binary


@dataclass(frozen=True)
class VcsimCA:
    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Vcsim:
    url: str
    host: str
    port: int
    ca_file: Path
    process: subprocess.Popen[bytes]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
                                        critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_ca(directory: Path) -> VcsimCA:
    """A CA and a certificate for 127.0.0.1 it signed, as PEM files in ``directory``."""
    ca_key, server_key = _key(), _key()
    ca_cert = _cert("labdeploy test CA", ca_key, None, ca=True)
    server_cert = _cert("127.0.0.1", server_key, (ca_cert.subject, ca_key), ca=False)
    out = VcsimCA(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    out.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    out.key_file.chmod(0o600)
    return out


def _read_url(process: subprocess.Popen[bytes]) -> str:
    """The ``VCSIM_URL=`` line the simulator prints once it serves, within START_TIMEOUT."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        if not selector.select(left):
            break
        line = process.stdout.readline().decode()
        if line.startswith("VCSIM_URL="):
            return line.removeprefix("VCSIM_URL=").strip()
        if not line:
            break
    process.kill()
    raise RuntimeError(f"vcsim did not print VCSIM_URL= within {START_TIMEOUT}s (exit {process.poll()})")


def start_vcsim(ca: VcsimCA, method_delay: dict[str, float] | None = None, datacenters: int = 1,
                vms: int = 1, *, guest_net: str | None = GUEST_NET, password: str | None = None) -> Vcsim:
    delays = ",".join(f"{name}={int(seconds * 1000)}ms" for name, seconds in (method_delay or {}).items())
    command = [str(vcsim_binary()), "-tlscert", str(ca.cert_file), "-tlskey", str(ca.key_file),
               "-dc", str(datacenters), "-vm", str(vms), "-method-delay", delays]
    if password:  # otherwise v0.18 accepts any
        command += ["-password", password]
    if guest_net:
        command += ["-guest-net", guest_net, "-guest-delay", f"{int(GUEST_DELAY * 1000)}ms"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    url = _read_url(process)
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    assert parts.port
    return Vcsim(url=url, host=parts.hostname, port=parts.port, ca_file=ca.ca_file, process=process)


def stop_vcsim(sim: Vcsim) -> None:
    sim.process.terminate()
    try:
        sim.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sim.process.kill()
        sim.process.wait()


@pytest.fixture(scope="session")
def vcsim_ca(tmp_path_factory: pytest.TempPathFactory) -> VcsimCA:
    return make_ca(tmp_path_factory.mktemp("vcsim-ca"))


@pytest.fixture(scope="session")
def vcsim(vcsim_ca: VcsimCA) -> Iterator[Vcsim]:
    sim = start_vcsim(vcsim_ca)
    yield sim
    stop_vcsim(sim)


@pytest.fixture
def vcsim_factory(vcsim_ca: VcsimCA) -> Iterator[Callable[..., Vcsim]]:
    started: list[Vcsim] = []

    def start(method_delay: dict[str, float] | None = None, datacenters: int = 1,
              guest_net: str | None = GUEST_NET, password: str | None = None) -> Vcsim:
        started.append(start_vcsim(vcsim_ca, method_delay, datacenters, guest_net=guest_net, password=password))
        return started[-1]

    yield start
    for sim in started:
        stop_vcsim(sim)
