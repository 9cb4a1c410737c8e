"""Node checks, verify: entries and user testinfra tests against a real sshd on loopback."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from deploy.verify import VerifyEntry, VerifyTarget, run_verify
from deploy.verify.checks import nodes, runtimes
from deploy.verify.context import VerifyContext
from deploy.verify.retry import CheckFailure
from tests.integration.sshd_fixtures import SshServer

pytestmark = pytest.mark.integration


def record_host_key(server: SshServer, path: Path) -> Path:
    key_type, key_b64 = server.host_key_path.with_name(server.host_key_path.name + ".pub").read_text().split()[:2]
    path.write_text(f"[{server.host}]:{server.port} {key_type} {key_b64}\n")
    return path


def target(server: SshServer, name: str, hostname: str, hosts: tuple[tuple[str, str], ...] = ()) -> VerifyTarget:
    return VerifyTarget(name, "workers", ("k8s-worker",), server.endpoint(), hostname, hosts)


def ctx_for(tmp_path: Path, known_hosts: Path, *targets: VerifyTarget, runtimes: tuple[str, ...] = ()) -> VerifyContext:
    return VerifyContext(tuple(targets), (), known_hosts, None, runtimes, frozenset({"nodes"}), tmp_path)


USER_TESTS = """\
import pytest


def test_hostname_file(host):
    assert host.file("/etc/hostname").exists


@pytest.mark.hosts("worker-1")
def test_echo(host):
    out = host.check_output("echo hello")
    assert out == "goodbye"
"""


def test_verify_run_over_ssh(sshd: SshServer, tmp_path: Path) -> None:
    known = record_host_key(sshd, tmp_path / "known_hosts")
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "node_tests.py").write_text(USER_TESTS)
    here = socket.gethostname()
    entries = [
        VerifyEntry(name="kernel", run="uname -s", expect="Linux"),
        VerifyEntry(name="exit three", hosts="worker-1", run="exit 3", expect_rc=3),
        VerifyEntry(
            name="version regex", hosts="worker-1", run="echo v1.31.4", expect_regex=r"^v2\.", retries=1, timeout=5
        ),
        VerifyEntry(name="user tests", pytest="checks/node_tests.py"),
    ]
    targets = [target(sshd, "worker-1", here, (("127.0.0.1", "localhost"),)), target(sshd, "worker-2", here)]
    report = run_verify(
        targets,
        entries,
        known_hosts=known,
        kubeconfig=None,
        runtimes=(),
        layers={"nodes"},
        out_dir=tmp_path / "out",
        lab_file_dir=tmp_path,
        html=tmp_path / "page.html",
    )
    outcome = {(r.layer, r.name, r.node): r for r in report.results}
    assert outcome["nodes", "/etc/hosts", "worker-1"].outcome == "passed"
    assert ("nodes", "/etc/hosts", "worker-2") not in outcome  # no entries planned: the lab does not manage it
    for node in ("worker-1", "worker-2"):
        for check in ("ssh with recorded host key", "hostname", "clock in sync"):
            assert outcome["nodes", check, node].outcome == "passed", outcome["nodes", check, node].failure
        assert outcome["user", "kernel", node].outcome == "passed"
        assert outcome["user", f"test_hostname_file[{node}]", node].outcome == "passed"
    assert outcome["user", "exit three", "worker-1"].outcome == "passed"
    regex = outcome["user", "version regex", "worker-1"]
    assert regex.outcome == "failed"
    assert "expected: output matching /^v2\\./" in regex.failure
    assert "(after 2 attempt(s)" in regex.failure
    assert f"-p {sshd.port}" in regex.reproduce
    assert "echo v1.31.4" in regex.reproduce
    echo = outcome["user", "test_echo[worker-1]", "worker-1"]
    assert echo.outcome == "failed"
    assert "node_tests.py:11" in echo.failure
    assert ("user", "test_echo[worker-2]", "worker-2") not in outcome  # the hosts marker picked worker-1
    assert report.failed == 2
    assert "version regex" in (tmp_path / "page.html").read_text()


def test_planned_hostname_and_hosts_entries_are_enforced(sshd: SshServer, tmp_path: Path) -> None:
    known = record_host_key(sshd, tmp_path / "known_hosts")
    t = target(sshd, "worker-9", "worker-9", (("10.20.0.19", "worker-9"),))
    ctx = ctx_for(tmp_path, known, t)
    with pytest.raises(CheckFailure) as failure:
        nodes.check_hostname(ctx, t)
    assert f"hostname on worker-9\n  expected: worker-9\n  seen:     {socket.gethostname()}" in str(failure.value)
    assert "ssh -i" in str(failure.value)
    with pytest.raises(CheckFailure, match=r"lines mapping 10\.20\.0\.19 worker-9"):
        nodes.check_hosts(ctx, t)
    ctx.close()


def test_changed_host_key_is_refused_at_once(sshd_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = sshd_factory()
    known = record_host_key(server, tmp_path / "known_hosts")
    server.restart(new_host_key=True)
    t = target(server, "cp-1", "cp-1")
    ctx = ctx_for(tmp_path, known, t)
    (ssh_check,) = [c for c in nodes.checks(ctx) if c.name == "ssh with recorded host key"]
    from deploy.verify.retry import retry

    with pytest.raises(CheckFailure) as failure:
        retry(ssh_check.run, ssh_check.deadline)
    text = str(failure.value)
    assert "SSH host key check on cp-1 (after 1 attempt(s)" in text
    assert f"host key recorded in {known}" in text
    assert "StrictHostKeyChecking=yes" in text


def test_unknown_host_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = target(sshd, "cp-1", "cp-1")
    with pytest.raises(CheckFailure, match="not found in known_hosts"):
        nodes.check_ssh(ctx_for(tmp_path, empty, t), t)


def test_runtime_checks_fail_naming_handler_when_containerd_lacks_it(sshd: SshServer, tmp_path: Path) -> None:
    known = record_host_key(sshd, tmp_path / "known_hosts")
    t = target(sshd, "worker-1", "worker-1")
    ctx = ctx_for(tmp_path, known, t, runtimes=("crun", "wasmedge"))
    crun, wasm = runtimes.checks(ctx)
    with pytest.raises(CheckFailure) as failure:
        crun.run()
    assert "containerd runtime handler 'crun' on worker-1" in str(failure.value)
    assert "containerd config dump" in str(failure.value)
    with pytest.raises(CheckFailure) as failure:
        wasm.run()
    assert "Wasm module under wasmedge on worker-1" in str(failure.value)
    assert "wasmedge /tmp/labdeploy-verify-" in str(failure.value)
    assert sshd.process is not None
    ctx.close()


def test_sftp_upload_lands_module(sshd: SshServer, tmp_path: Path) -> None:
    from deploy.verify.wasm import hello_module

    known = record_host_key(sshd, tmp_path / "known_hosts")
    t = target(sshd, "worker-1", "worker-1")
    ctx = ctx_for(tmp_path, known, t)
    shell = ctx.shell(t)
    dest = tmp_path / "m.wasm"
    shell.put(hello_module(), str(dest), mode=0o644)
    assert dest.read_bytes() == hello_module()
    assert textwrap.dedent(shell.run(f"stat -c %a {dest}").stdout).strip() == "644"
    ctx.close()


def test_shell_reads_a_full_stderr_while_stdout_waits(sshd: SshServer, tmp_path: Path) -> None:
    """4 MiB on stderr before any stdout: reading stdout first would stall on the full window."""
    known = record_host_key(sshd, tmp_path / "known_hosts")
    t = target(sshd, "worker-1", "worker-1")
    ctx = ctx_for(tmp_path, known, t)
    result = ctx.shell(t).run("head -c 4194304 /dev/zero | tr '\\0' e >&2; echo done", timeout=30)
    assert (result.rc, result.stdout, len(result.stderr)) == (0, "done\n", 4194304)
    ctx.close()


def test_shell_timeout_is_one_deadline_and_keeps_the_connection(sshd: SshServer, tmp_path: Path) -> None:
    import time

    known = record_host_key(sshd, tmp_path / "known_hosts")
    t = target(sshd, "worker-1", "worker-1")
    ctx = ctx_for(tmp_path, known, t)
    shell = ctx.shell(t)
    first = shell.transport
    start = time.monotonic()
    # prints every 0.3 s: a per-read timeout would never fire, the command's deadline does
    with pytest.raises(CheckFailure) as failure:
        shell.run("while true; do echo tick; sleep 0.3; done", timeout=1.5)
    assert 1.4 <= time.monotonic() - start < 6
    assert "expected: it finishes within 2s" in str(failure.value)
    assert "seen:     still running" in str(failure.value)
    assert shell.run("echo again").stdout == "again\n"
    assert shell.transport is first  # one connection per node across commands
    ctx.close()


def test_reproduce_command_checks_the_host_key_with_openssh(sshd: SshServer, tmp_path: Path) -> None:
    """The printed command works as printed: OpenSSH logs in with the export, strictly."""
    import shlex
    import subprocess

    known = record_host_key(sshd, tmp_path / "known_hosts")
    t = target(sshd, "worker-1", "worker-1")
    line = ctx_for(tmp_path, known, t).shell(t).reproduce("echo from-openssh")
    assert "StrictHostKeyChecking=no" not in line
    words = shlex.split(line)
    done = subprocess.run([words[0], "-o", "BatchMode=yes", *words[1:]],
                          check=False, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "from-openssh\n"), done.stderr
    (tmp_path / "known_hosts").write_text("")
    refused = subprocess.run([words[0], "-o", "BatchMode=yes", *words[1:]],
                          check=False, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr
