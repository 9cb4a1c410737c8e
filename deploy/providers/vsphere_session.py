"""One vCenter session per run: TLS (CA bundle, SHA-256 pinning, or an explicit opt-out), login, logout.

Every failure is a :class:`ProviderError` that says what was refused and how to fix it; the
password comes from a secret reference and appears in no message.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim as _vim

from deploy.errors import ProviderError
from deploy.model.schema import VsphereProviderSpec

vim: Any = _vim  # pyvmomi's stubs leave the data objects untyped

log = logging.getLogger(__name__)


def tls_context(spec: VsphereProviderSpec) -> ssl.SSLContext:
    """Verification on unless the lab says ``verify_tls: false``; ``ca_bundle`` adds the lab's CA."""
    if not spec.verify_tls or spec.thumbprint:
        if not spec.verify_tls:
            log.warning("vSphere %s: TLS verification is off (verify_tls: false); anyone on the path can "
                        "read the session", spec.host)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=spec.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ProviderError(f"vSphere {spec.host}: cannot read ca_bundle {spec.ca_bundle}: {exc}") from exc


def server_fingerprint(host: str, port: int, timeout: float = 10.0) -> str:
    """SHA-256 of the server's certificate as AA:BB:..., read without trusting it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True) or b""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _check_pin(spec: VsphereProviderSpec) -> None:
    if not spec.thumbprint:
        return
    seen = server_fingerprint(spec.host, spec.port)
    wanted = spec.thumbprint.upper().replace("-", ":")
    if seen != wanted:
        raise ProviderError(f"vSphere {spec.host}:{spec.port}: certificate SHA-256 {seen} is not the pinned "
                            f"thumbprint {wanted}", hint="check the vCenter's certificate, then update thumbprint")


def connect(spec: VsphereProviderSpec, password: str) -> Any:
    """A logged-in ServiceInstance, or a ProviderError naming TLS, login or reachability."""
    _check_pin(spec)
    where = f"vSphere {spec.host}:{spec.port}"
    try:
        return SmartConnect(host=spec.host, port=spec.port, user=spec.user, pwd=password,
                            sslContext=tls_context(spec), connectionPoolTimeout=-1)  # type: ignore[no-untyped-call]
    except ssl.SSLCertVerificationError as exc:
        raise ProviderError(f"{where}: its TLS certificate is not trusted ({exc.verify_message})",
                            hint="set ca_bundle to the PEM of the CA that signed it, or pin its SHA-256 "
                                 "thumbprint") from exc
    except vim.fault.InvalidLogin as exc:
        raise ProviderError(f"{where}: login refused for user {spec.user}",
                            hint="check the user and the secret the password refers to") from exc
    except OSError as exc:
        raise ProviderError(f"{where}: cannot connect: {exc}") from exc


def disconnect(si: Any) -> None:
    """Log out; a session already gone is not an error."""
    try:
        Disconnect(si)  # type: ignore[no-untyped-call]
    except (OSError, vim.fault.NotAuthenticated):
        log.debug("vSphere session already closed")
