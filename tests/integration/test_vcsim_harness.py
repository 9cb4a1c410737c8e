"""The vcsim harness itself: TLS with the session's CA, its refusal without it, method delays."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import pytest
from pyVim.connect import Disconnect, SmartConnect

from tests.integration.vcsim_fixtures import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


def test_serves_tls_on_loopback_with_the_test_ca(vcsim: Vcsim) -> None:
    si = SmartConnect(host=vcsim.host, port=vcsim.port, user="user", pwd="pass",
                      sslContext=_context(str(vcsim.ca_file)))
    try:
        about = si.RetrieveContent().about
        assert "govmomi simulator" in about.name or about.apiType == "VirtualCenter"
    finally:
        Disconnect(si)


def test_refuses_a_client_that_does_not_trust_the_ca(vcsim: Vcsim) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        SmartConnect(host=vcsim.host, port=vcsim.port, user="user", pwd="pass", sslContext=_context(None))


def test_method_delay_holds_the_named_method(vcsim_factory: Callable[..., Vcsim]) -> None:
    sim = vcsim_factory(method_delay={"CurrentTime": 0.5})
    si = SmartConnect(host=sim.host, port=sim.port, user="user", pwd="pass", sslContext=_context(str(sim.ca_file)))
    try:
        started = time.monotonic()
        si.CurrentTime()
        assert time.monotonic() - started >= 0.5
        started = time.monotonic()
        si.RetrieveContent()
        assert time.monotonic() - started < 0.5
    finally:
        Disconnect(si)
