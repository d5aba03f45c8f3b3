"""Device faults against the real test sshd: each ends in a clear DeviceError (exit 6, or its own code:
README "Exit codes") or a failed or skipped verification with the reason, and leaves nothing half-done
on the device."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import edgekit
from edgekit.devices import resolve_devices
from edgekit.errors import DeviceConnectionLost, DeviceError
from edgekit.remote.bundle import BUNDLE_NAME, bundle_bytes
from edgekit.transport.base import CommandResult
from edgekit.transport.ssh import SSHTransport, python_problem
from tests.faults._device import cli, device_with, verify_on, wait_for_runner
from tests.sshd import alive, processes_in

# --- connection and trust ----------------------------------------------------------------------


@pytest.mark.slow
def test_unknown_host_key_is_refused_then_trusted(built_superres, sshd, tmp_path, monkeypatch):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    name = device_with(sshd, tmp_path, monkeypatch, known_hosts=str(empty))
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 6
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_key.with_suffix(".pub"))], capture_output=True, text=True).stdout.split()[1]
    assert "unknown host key" in result.stderr and fingerprint in result.stderr and "edgekit devices trust" in result.stderr
    assert empty.read_text() == "", "never added silently"
    trusted = cli("devices", "trust", name, "--yes")
    assert trusted.returncode == 0 and fingerprint in trusted.stdout
    assert cli("verify", str(built_superres), "--device", name).returncode == 0


@pytest.mark.slow
def test_changed_host_key_is_refused(built_superres, sshd, tmp_path, monkeypatch):
    from tests.sshd import keygen

    impostor = keygen(tmp_path / "impostor").with_suffix(".pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}\n")
    name = device_with(sshd, tmp_path, monkeypatch, known_hosts=str(wrong))
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 6 and "host key CHANGED" in result.stderr and "ssh-keygen -R" in result.stderr


@pytest.mark.slow
def test_wrong_user_key(built_superres, sshd, tmp_path, monkeypatch):
    from tests.sshd import keygen

    name = device_with(sshd, tmp_path, monkeypatch, key_file=str(keygen(tmp_path / "stranger")))
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 8 and "authentication failed for user" in result.stderr and "not retried" in result.stderr
    assert sshd.log.read_text().count("Connection closed by authenticating user") == 1, "a refused key is never retried"


@pytest.mark.slow
def test_connection_refused_writes_a_skipped_report(superres, sshd, tmp_path, monkeypatch):
    from tests.sshd import free_port

    name = device_with(sshd, tmp_path, monkeypatch, port=free_port())
    out = tmp_path / "out"
    result = cli("build", str(superres), "--target", "arm", "--precision", "fp32", "--device", name, "-o", str(out))
    assert result.returncode == 7 and "is unreachable: connection refused" in result.stderr
    report = json.loads((out / "edgekit-report.json").read_text())
    assert report["verification"]["status"] == "skipped" and "unreachable" in report["verification"]["reason"]
    assert report["verification"]["fault"]["kind"] == "unreachable" and report["verification"]["fault"]["exit_code"] == 7
    assert (out / report["artifact"]).is_file(), "the good build is kept"


# --- transfers ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_sshd_killed_mid_upload(sshd, tmp_path, monkeypatch):
    name = device_with(sshd, tmp_path, monkeypatch)
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(48):
            handle.write(bytes(range(256)) * 4096 * 8)  # 384 MiB of real bytes
    (device,) = resolve_devices([name])
    transport = SSHTransport(device)
    transport.open()
    remote = Path(transport.remote_dir)
    killer = threading.Timer(0.4, sshd.kill)
    killer.start()
    try:
        with pytest.raises(DeviceConnectionLost, match="connection dropped while uploading big.bin.*retry failed") as info:
            transport.upload(big, "big.bin")
        assert info.value.exit_code == 9
    finally:
        killer.cancel()
        transport.close()
    assert not (remote / "big.bin").exists(), "nothing may appear under the final name"
    assert all(p.name.startswith(".") for p in remote.iterdir()) if remote.exists() else True


# --- the run itself ----------------------------------------------------------------------------


@pytest.mark.slow
def test_runner_failure_brings_back_remote_stderr(built_superres, sshd, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(built_superres, broken)
    report = json.loads((broken / "edgekit-report.json").read_text())
    (broken / report["artifact"]).write_bytes(b"\0" * 1000)
    report["artifact_sha256"] = edgekit.fsutil.sha256_tree(broken / report["artifact"])  # a consistent but broken build
    (broken / "edgekit-report.json").write_text(json.dumps(report))
    name = device_with(sshd, tmp_path, monkeypatch)
    result = cli("verify", str(broken), "--device", name, "--json")
    assert result.returncode == 1
    verification = json.loads(result.stdout)["verification"]
    assert verification["status"] == "failed" and "the runtime failed on device 'localhost-ssh'" in verification["reason"]
    assert "load_failed" in verification["reason"]


@pytest.fixture
def numpy_only_python(tmp_path) -> Path:
    """A real interpreter that sees numpy and nothing else: a board with no inference runtime."""
    import numpy

    site = tmp_path / "numpy-only"
    site.mkdir()
    numpy_dir = Path(numpy.__file__).parent
    (site / "numpy").symlink_to(numpy_dir)
    libs = numpy_dir.parent / "numpy.libs"
    if libs.exists():
        (site / "numpy.libs").symlink_to(libs)
    wrapper = tmp_path / "python-numpy-only"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH='{site}' exec '{sys.executable}' -S \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.slow
def test_runtime_missing_on_device_is_skipped_with_what_to_install(built_superres, sshd, tmp_path, monkeypatch, numpy_only_python):
    name = device_with(sshd, tmp_path, monkeypatch, python=str(numpy_only_python))
    result = cli("verify", str(built_superres), "--device", name, "--json")
    assert result.returncode == 0, result.stderr
    verification = json.loads(result.stdout)["verification"]
    assert verification["status"] == "skipped" and verification["where"] == "device"
    assert "not available on device 'localhost-ssh'" in verification["reason"] and "pip install ai-edge-litert" in verification["reason"]


@pytest.mark.slow
def test_numpy_missing_and_python_not_found(built_superres, sshd, tmp_path, monkeypatch):
    bare = tmp_path / "python-bare"
    bare.write_text(f"#!/bin/sh\nexec '{sys.executable}' -S -I \"$@\"\n")
    bare.chmod(0o755)
    name = device_with(sshd, tmp_path, monkeypatch, python=str(bare))
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 6 and "numpy is not installed" in result.stderr
    name = device_with(sshd, tmp_path, monkeypatch, python="/opt/no/such/python3")
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 6 and "was not found" in result.stderr


def test_python_too_old_is_named():
    problem = python_problem("pi", "/usr/bin/python3", CommandResult(0, "3.6.9\n1.19.5\n", ""))
    assert problem is not None and "is 3.6.9" in problem.message and "needs Python 3.8" in problem.message
    assert python_problem("pi", "python3", CommandResult(0, "3.8.10\n1.24.4\n", "")) is None


@pytest.mark.slow
def test_hanging_run_is_killed_on_the_device(built_superres, sshd, tmp_path, monkeypatch):
    name = device_with(sshd, tmp_path, monkeypatch, run_timeout=3)
    (device,) = resolve_devices([name])
    errors = []

    def run() -> None:
        try:
            verify_on(built_superres, SSHTransport(device), runs=10**9)  # a real run that would go on for days
        except DeviceError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    runner, guard = wait_for_runner(sshd.work_dir)  # the runner itself is found while it runs
    thread.join(timeout=120)
    assert len(errors) == 1 and "did not finish within 3 s and was killed on device 'localhost-ssh'" in errors[0].message
    assert not alive(runner), "the runner itself must be gone, not only its guard"
    assert not alive(guard)
    assert processes_in(sshd.work_dir) == {}
    assert list(sshd.work_dir.glob("run.*")) == []


@pytest.mark.slow
def test_two_runs_on_one_device_are_serialized(built_superres, sshd, tmp_path, monkeypatch):
    name = device_with(sshd, tmp_path, monkeypatch)
    (device,) = resolve_devices([name])
    results = []

    def run() -> None:
        results.append(verify_on(built_superres, SSHTransport(device), runs=1500))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 2 and all(r.status == "passed" for r in results)
    (a, b) = sorted((r.environment["started_at"], r.environment["finished_at"]) for r in results)
    assert a[1] <= b[0], f"runs overlapped: {a} and {b}"


@pytest.mark.slow
def test_lock_held_too_long_is_a_clear_error(built_superres, sshd, tmp_path, monkeypatch):
    name = device_with(sshd, tmp_path, monkeypatch, lock_timeout=2)
    (device,) = resolve_devices([name])
    sshd.work_dir.mkdir(parents=True, exist_ok=True)
    with open(sshd.work_dir / ".edgekit.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # another run holds the device
        with pytest.raises(DeviceError, match="another edgekit run held the lock .*edgekit.lock"):
            verify_on(built_superres, SSHTransport(device))


@pytest.mark.slow
def test_hostile_file_names_are_quoted(tmp_path, sshd, monkeypatch, superres):
    name = device_with(sshd, tmp_path, monkeypatch)
    hostile = tmp_path / "my model's \"best\"; $(touch PWNED) `touch PWNED2`.onnx"
    shutil.copy(superres, hostile)
    out = tmp_path / "out dir; rm -rf ~"
    result = cli("build", str(hostile), "--target", "arm", "--precision", "fp32", "--device", name, "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verification"]["status"] == "passed"
    found = subprocess.run(["find", str(tmp_path), "/root", "-maxdepth", "3", "-name", "PWNED*"],
                           capture_output=True, text=True).stdout
    assert not found, f"a file name reached a shell unquoted: {found}"


# --- the device's disk -------------------------------------------------------------------------


@pytest.mark.slow
def test_read_only_work_dir(built_superres, sshd, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs root on ext4); a read-only work dir cannot be made for root otherwise")
    try:
        name = device_with(sshd, tmp_path, monkeypatch, work_dir=str(locked / "edgekit"))
        result = cli("verify", str(built_superres), "--device", name)
        assert result.returncode == 6 and "cannot create a work folder" in result.stderr and "writable" in result.stderr
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MiB ext4 loop file, filled: a real full disk for the device's work dir."""
    image, mount = tmp_path / "disk.img", tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "2M", str(image)], check=True)
    if subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True).returncode != 0 or \
            subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a loop file here (needs root and loop devices)")
    try:
        (mount / "edgekit").mkdir()
        subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'filler'}", "bs=64k"], capture_output=True)
        yield mount / "edgekit"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_on_device(built_superres, sshd, tmp_path, monkeypatch, full_disk):
    name = device_with(sshd, tmp_path, monkeypatch, work_dir=str(full_disk))
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 6
    free_mib = shutil.disk_usage(full_disk).free / 1024**2
    needed_kib = len(bundle_bytes()) / 1024  # the first upload: the remote zipapp
    assert f"not enough free disk in {full_disk} for {BUNDLE_NAME} ({free_mib:.1f} MiB free; it needs {needed_kib:.0f} KiB plus 1 MiB to spare)" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", ["leaves-a-child", "child-hangs"])
def test_processes_started_by_the_run_are_killed(built_superres, sshd, tmp_path, monkeypatch, behaviour):
    """A runtime that leaves a child behind, or hangs in one, must not keep the device busy or the channel open."""
    marker = f"edgekit-test-{behaviour}-{sshd.port}"
    body = {"leaves-a-child": f"(exec -a {marker} sleep 1000) &\nexec '{sys.executable}' \"$@\"",
            "child-hangs": f"exec -a {marker} sleep 1000"}[behaviour]
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"#!/bin/bash\ncase \"$1\" in -c) exec '{sys.executable}' \"$@\";; esac\n{body}\n")
    wrapper.chmod(0o755)
    name = device_with(sshd, tmp_path, monkeypatch, python=str(wrapper), run_timeout=4)
    (device,) = resolve_devices([name])
    if behaviour == "leaves-a-child":
        assert verify_on(built_superres, SSHTransport(device)).status == "passed"
    else:
        with pytest.raises(DeviceError, match="did not finish within 4 s"):
            verify_on(built_superres, SSHTransport(device))
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.strip() == ""


# --- the device between runs -------------------------------------------------------------------


@pytest.mark.slow
def test_reboot_between_runs_is_noticed(built_superres, sshd, tmp_path, monkeypatch):
    """The device's boot id is remembered per device; a different one on the next run means it rebooted."""
    from edgekit.cache import state_dir

    name = device_with(sshd, tmp_path, monkeypatch)
    build = tmp_path / "build"
    shutil.copytree(built_superres, build)
    real_boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()

    def verify() -> tuple[str, dict]:
        result = cli("verify", str(build), "--device", name, env={**os.environ, "COLUMNS": "200"})
        assert result.returncode == 0, result.stderr
        return result.stdout, json.loads((build / "edgekit-report.json").read_text())["verification"]["environment"]

    _, first = verify()
    assert first["boot_id"] == real_boot_id and first["rebooted_since_last_run"] is None  # never seen before
    state_file = state_dir() / "devices.json"
    state = json.loads(state_file.read_text())
    (key,) = state
    assert state[key]["boot_id"] == real_boot_id
    state[key]["boot_id"] = "00000000-0000-4000-8000-000000000000"  # as if the device booted since
    state_file.write_text(json.dumps(state))
    shown, second = verify()
    assert second["boot_id"] == real_boot_id and second["rebooted_since_last_run"] is True
    assert "rebooted since the last run" in shown
    _, third = verify()
    assert third["rebooted_since_last_run"] is False
