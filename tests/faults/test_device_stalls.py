"""Stalls, drops and leftovers, each against a real listener or a real sshd on 127.0.0.1: every stall ends
within its stated deadline (devices.toml) with its own message and exit code, and nothing edgekit started is
left running on the device (checked in the process table)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from edgekit.errors import DeviceConnectionLost, DeviceError, DeviceStalled, DeviceUnreachable
from edgekit.fleet import fleet_error
from edgekit.transport.ssh import SSHTransport
from tests.faults._device import cli, device_for, device_with, verify_on, wait_for_runner
from tests.listeners import BannerThenSilence, Blackhole, SilentListener
from tests.sshd import alive, free_port, processes_in, ssh_session_of

# A stalled stage must end within its deadline; this much more is allowed for a loaded 2-core CI machine.
SLACK_S = 4


def fails_within(device, error_class: type[DeviceError], deadline: float) -> DeviceError:
    """Connect to ``device``; it must fail with ``error_class`` within ``deadline`` (+ slack) seconds."""
    started = time.monotonic()
    with pytest.raises(error_class) as info:
        SSHTransport(device).open()
    elapsed = time.monotonic() - started
    assert deadline - 0.5 <= elapsed < deadline + SLACK_S, f"gave up after {elapsed:.1f} s, deadline {deadline} s"
    return info.value


# --- each stage of a connection ----------------------------------------------------------------


def test_blackhole_at_connect_ends_at_connect_timeout(sshd, tmp_path):
    with Blackhole() as hole:
        if not hole.stalls():
            pytest.skip("this kernel answers connections beyond a full accept queue, so no blackhole can be made on loopback")
        error = fails_within(device_for(sshd, tmp_path, port=hole.port, connect_timeout=2), DeviceUnreachable, 2)
    assert error.exit_code == 7
    assert "is unreachable: no answer to the TCP connection within 2 s (connect_timeout)" in error.message


def test_server_that_never_sends_a_banner_ends_at_handshake_timeout(sshd, tmp_path):
    with SilentListener() as silent:
        error = fails_within(device_for(sshd, tmp_path, port=silent.port, handshake_timeout=2), DeviceStalled, 2)
    assert error.exit_code == 10
    assert "it accepted the TCP connection but sent no SSH banner within 2 s (handshake_timeout)" in error.message


def test_banner_then_silence_ends_at_handshake_timeout(sshd, tmp_path):
    with BannerThenSilence(sshd.port) as proxy:
        error = fails_within(device_for(sshd, tmp_path, port=proxy.port, handshake_timeout=2), DeviceStalled, 2)
    assert error.exit_code == 10
    assert "sent its banner (SSH-2.0-OpenSSH" in error.message and "key exchange did not finish within 2 s" in error.message


def test_authentication_that_never_answers_ends_at_auth_timeout(ssh_server, tmp_path):
    # A real sshd whose key lookup hangs (AuthorizedKeysCommand, as with a stuck LDAP or DNS lookup).
    server = ssh_server(extra_config="AuthorizedKeysFile none\nAuthorizedKeysCommand /bin/sleep 600\nAuthorizedKeysCommandUser nobody\n")
    error = fails_within(device_for(server, tmp_path, auth_timeout=2), DeviceStalled, 2)
    assert error.exit_code == 10
    assert "authentication got no answer within 2 s (auth_timeout)" in error.message


# --- a connection that goes silent or drops in the middle of a run -----------------------------


@pytest.mark.slow
def test_silent_connection_mid_run_ends_by_keepalive_and_the_run_is_reaped_next_time(built_superres, sshd, tmp_path):
    device = device_for(sshd, tmp_path, keepalive_interval=1, keepalive_count_max=2, run_timeout=600)
    errors: list[tuple[DeviceError, float]] = []

    def run() -> None:
        try:
            verify_on(built_superres, SSHTransport(device), runs=10**9)
        except DeviceError as exc:
            errors.append((exc, time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    runner, guard = wait_for_runner(sshd.work_dir)
    session = ssh_session_of(guard)
    assert session is not None, "the sshd process serving the run was not found"
    os.kill(session, signal.SIGSTOP)  # the device's sshd freezes: the connection goes silent, nothing is closed
    frozen_at = time.monotonic()
    try:
        thread.join(timeout=60)
        assert len(errors) == 1
        error, failed_at = errors[0]
        assert isinstance(error, DeviceStalled) and error.exit_code == 10
        assert "stopped answering while running edgekit_remote.pyz: 2 keepalives 1 s apart got no reply; given up after about 3 s" in error.message
        assert failed_at - frozen_at < 3 + SLACK_S
        assert alive(runner), "nothing could end the run yet: its sshd session is frozen"
        with SSHTransport(device) as second:  # the next connection reaps it
            assert second.facts["stale_runs_killed"] == 1 and second.facts["run_folders_removed"] == 1
        assert not alive(runner) and not alive(guard)
        assert processes_in(sshd.work_dir) == {}
    finally:
        os.kill(session, signal.SIGCONT)


_CLIENT = """
import sys
from pathlib import Path
from edgekit.devices import load_book, resolve_devices
from edgekit.transport.ssh import SSHTransport
from tests.faults._device import verify_on
(device,) = resolve_devices(["dev"], load_book(Path(sys.argv[1])))
verify_on(Path(sys.argv[2]), SSHTransport(device), runs=10**9)
"""


@pytest.mark.slow
def test_client_killed_mid_run_ends_the_run_and_the_next_connection_sweeps_its_folder(built_superres, sshd, tmp_path):
    device = device_for(sshd, tmp_path, run_timeout=600)
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(device.source), str(built_superres)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        runner, guard = wait_for_runner(sshd.work_dir)
        folder = Path(os.readlink(f"/proc/{runner}/cwd"))
    finally:
        client.kill()  # the client machine dies mid-run: its TCP connection closes
        client.wait()
    deadline = time.monotonic() + 10
    while (alive(runner) or alive(guard)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(runner) and not alive(guard), "the guard ends the run when its SSH channel closes"
    assert folder.is_dir(), "nobody was left to remove the run folder"
    with SSHTransport(device) as second:
        assert second.facts["run_folders_removed"] == 1 and second.facts["stale_runs_killed"] == 0
    assert not folder.exists()


def test_old_run_folders_are_swept_and_overdue_runs_killed(sshd, tmp_path):
    """Runs of another machine are left alone until their own deadline; folders older than a day go."""
    device = device_for(sshd, tmp_path)
    sshd.work_dir.mkdir(parents=True)
    stranger = {"host": "another-machine", "pid": 4242, "token": "t", "keep": False}
    folders = {}
    for name in ("old", "recent", "overdue"):
        folders[name] = sshd.work_dir / f"run.{name}"
        folders[name].mkdir()
        (folders[name] / ".edgekit-run.json").write_text(json.dumps(stranger))
    stuck = subprocess.Popen(["sleep", "1000"], cwd=folders["overdue"], start_new_session=True)  # a guard that never ended
    (folders["overdue"] / ".edgekit-guard.json").write_text(json.dumps({"guard_pid": stuck.pid, "runner_pgid": stuck.pid,
                                                                         "deadline": time.time() - 3600}))
    two_days_ago = time.time() - 2 * 86400
    os.utime(folders["old"], (two_days_ago, two_days_ago))
    try:
        with SSHTransport(device) as transport:
            assert transport.facts["stale_runs_killed"] == 1 and transport.facts["run_folders_removed"] == 2
        stuck.wait(timeout=10)
        assert not folders["old"].exists() and not folders["overdue"].exists()
        assert folders["recent"].is_dir(), "another machine's recent run may still be in use"
    finally:
        stuck.kill()


# --- nothing is left running, whatever hangs ---------------------------------------------------


@pytest.fixture
def hung_python(tmp_path):
    """A 'python' that hangs before anything of edgekit's runs (a broken interpreter or site-packages)."""
    marker = f"edgekit-hung-python-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "python-hangs"
    script.write_text(f"#!/bin/sh\nexec '{sys.executable}' -c 'import time; time.sleep(1000)' {marker}\n")
    script.chmod(0o755)
    return script, marker


def _still_running(marker: str) -> str:
    return subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("killer", ["timeout", "shell-watchdog"])
def test_hanging_python_probe_ends_at_the_device_deadline_and_is_killed(built_superres, ssh_server, tmp_path, monkeypatch, hung_python, killer):
    script, marker = hung_python
    extra = ""
    if killer == "shell-watchdog":  # a device without `timeout`: DEADLINE_SH's own watchdog does the killing
        bare = tmp_path / "bare-bin"
        bare.mkdir()
        for tool in ("sh", "sleep", "cat", "mv", "rm", "mkdir"):
            (bare / tool).symlink_to(shutil.which(tool))
        extra = f"SetEnv PATH={bare}\n"
    server = ssh_server(extra_config=extra)
    if killer == "shell-watchdog":
        found = subprocess.run(["ssh", "-i", str(server.user_key), "-p", str(server.port), "-o", f"UserKnownHostsFile={server.known_hosts}",
                                "-o", "BatchMode=yes", f"{server.user}@127.0.0.1", "command -v timeout || echo none"],
                               capture_output=True, text=True, timeout=60).stdout
        assert found.strip().endswith("none"), f"the device still has timeout: {found}"
    name = device_with(server, tmp_path, monkeypatch, python=str(script), run_timeout=3)
    started = time.monotonic()
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 10, result.stderr
    assert f"the probe of python '{script}' did not finish within 3 s; it was stopped on the device" in result.stderr
    assert time.monotonic() - started < 60
    time.sleep(1)
    assert _still_running(marker) == "", "the hung interpreter must not be left running on the device"


@pytest.mark.slow
def test_devices_check_probe_that_hangs_is_killed(ssh_server, tmp_path, monkeypatch):
    """`devices check` runs the runner's probe under the guard and the device's run_timeout."""
    marker = f"edgekit-hung-probe-{uuid.uuid4().hex[:8]}"
    wrapper = tmp_path / "python-probe-hangs"
    wrapper.write_text(f"#!/bin/sh\ncase \"$2\" in probe) exec '{sys.executable}' -c 'import time; time.sleep(1000)' {marker};; esac\n"
                       f"exec '{sys.executable}' \"$@\"\n")
    wrapper.chmod(0o755)
    name = device_with(ssh_server(), tmp_path, monkeypatch, python=str(wrapper), run_timeout=3)
    result = cli("devices", "check", name)
    assert result.returncode == 10, result.stderr
    assert "the probe did not finish within 3 s and was killed on device 'localhost-ssh'" in result.stderr
    time.sleep(1)
    assert _still_running(marker) == ""


# --- a fleet -----------------------------------------------------------------------------------


def test_fleet_exit_code_is_the_common_fault_or_6():
    unreachable = [(f"pi{i}", DeviceUnreachable(f"pi{i} is unreachable")) for i in range(2)]
    assert fleet_error(unreachable, 6).exit_code == 7
    mixed = fleet_error([*unreachable, ("pi9", DeviceConnectionLost("lost"))], 6)
    assert mixed.exit_code == 6 and "3 of 6 devices could not verify (pi0: unreachable; pi1: unreachable; pi9: connection-lost)" in mixed.message
    assert fleet_error([], 6) is None


@pytest.mark.slow
def test_fleet_with_a_hung_and_an_unreachable_device(superres, sshd, tmp_path, monkeypatch):
    members = ["good-0", "hung", "good-1", "good-2", "gone", "good-3"]
    with SilentListener() as hung:
        tables = [sshd.device_table(f"good-{i}", work_dir=str(tmp_path / f"remote-{i}")) for i in range(4)]
        tables += [sshd.device_table("hung", port=hung.port, handshake_timeout=3), sshd.device_table("gone", port=free_port())]
        book = sshd.write_devices(tmp_path / "devices.toml", *tables, f"[groups]\nfleet = {json.dumps(members)}\n")
        env = {**os.environ, "EDGEKIT_DEVICES": str(book), "COLUMNS": "250"}
        out = tmp_path / "out"
        result = cli("build", str(superres), "--target", "arm", "--precision", "fp32", "--device", "fleet", "-o", str(out), env=env)
    assert result.returncode == 6, result.stderr  # two different faults: the family's code
    assert "2 of 6 devices could not verify (hung: stalled; gone: unreachable)" in result.stderr
    report = json.loads((out / "edgekit-report.json").read_text())
    by_device = {v["device"]: v for v in report["verifications"]}
    assert sorted(by_device) == sorted(members)
    assert all(by_device[f"good-{i}"]["status"] == "passed" and by_device[f"good-{i}"]["fault"] is None for i in range(4))
    assert by_device["hung"]["fault"]["kind"] == "stalled" and by_device["hung"]["fault"]["exit_code"] == 10
    assert "sent no SSH banner within 3 s" in by_device["hung"]["reason"]
    assert by_device["gone"]["fault"]["kind"] == "unreachable" and by_device["gone"]["fault"]["exit_code"] == 7
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 4}
    assert all("passed" in rows[f"good-{i}"] for i in range(4))
    assert "stalled (exit 10)" in rows["hung"] and "unreachable (exit 7)" in rows["gone"] and "connection refused" in rows["gone"]
