"""On-device verification through a real OpenSSH sshd on 127.0.0.1 (no mock of SSH anywhere)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.devices import resolve_devices

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEKIT, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def leftovers(sshd) -> list[str]:
    return [p.name for p in sshd.work_dir.glob("run.*")] if sshd.work_dir.exists() else []


@pytest.mark.slow
def test_build_verifies_on_the_device(superres, device_book, sshd, tmp_path):
    out = tmp_path / "out"
    result = cli("build", str(superres), "--target", "arm", "--precision", "fp32", "--device", "localhost-ssh", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    verification = report["verification"]
    assert verification["status"] == "passed" and verification["where"] == "device" and verification["device"] == "localhost-ssh"
    assert verification["runtime"].startswith("ai_edge_litert") and verification["latency_ms"]["runs"] == 30
    assert [v["device"] for v in report["verifications"]] == ["localhost-ssh"]
    assert leftovers(sshd) == [], "the per-run remote folder must be removed"
    assert "Accepted publickey" in sshd.log.read_text()  # it really went through sshd


@pytest.mark.slow
def test_target_comes_from_devices_toml(superres, device_book, tmp_path):
    result = cli("build", str(superres), "--precision", "fp16", "--device", "localhost-ssh", "-o", str(tmp_path / "o"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["target"] == "arm"


@pytest.mark.slow
def test_reverify_on_device_checks_the_artifact_hash(built_superres, device_book, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(built_superres, out)
    result = cli("verify", str(out), "--device", "localhost-ssh", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verification"]["where"] == "device" and report["verification"]["status"] == "passed"
    assert report["cache"]["reverified_at"]
    on_host = cli("verify", str(out), "--json")
    assert on_host.returncode == 0 and json.loads(on_host.stdout)["verification"]["where"] == "host"
    artifact = out / report["artifact"]
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF
    artifact.write_bytes(bytes(data))
    tampered = cli("verify", str(out), "--device", "localhost-ssh")
    assert tampered.returncode == 3 and "changed since it was built" in tampered.stderr


@pytest.mark.slow
def test_devices_list_and_check(device_book):
    listed = cli("devices")
    assert listed.returncode == 0 and "localhost-ssh" in listed.stdout and "target=arm" in listed.stdout
    checked = cli("devices", "check", "localhost-ssh", "--json")
    assert checked.returncode == 0, checked.stderr
    probe = json.loads(checked.stdout)["localhost-ssh"]
    assert probe["system"] == "Linux" and probe["python_ok"] and probe["numpy"]
    assert probe["runtimes"]["ai_edge_litert"] and probe["free_disk_bytes"] > 0
    assert probe["connection"]["file_transfer"] == "sftp" and probe["connection"]["boot_id"]


@pytest.mark.slow
def test_several_devices_at_once_one_row_each(superres, sshd, tmp_path, monkeypatch):
    book = sshd.write_devices(tmp_path / "devices.toml",
                              sshd.device_table("pi-a", work_dir=str(tmp_path / "remote-a")),
                              sshd.device_table("pi-b", work_dir=str(tmp_path / "remote-b")),
                              "[groups]\nfleet = [\"pi-a\", \"pi-b\"]\n")
    monkeypatch.setenv("EDGEKIT_DEVICES", str(book))
    result = cli("build", str(superres), "--target", "arm", "--precision", "fp32", "--device", "fleet", "-o", str(tmp_path / "o"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(v["device"] for v in report["verifications"]) == ["pi-a", "pi-b"]
    assert all(v["status"] == "passed" and v["where"] == "device" for v in report["verifications"])
    # one lock per device work dir: the two "devices" ran independently
    assert "pi-a" in (tmp_path / "o" / "report.html").read_text()


@pytest.mark.slow
def test_ssh_config_alias(superres, sshd, tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host edge-board\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.user_key}\n")
    shutil.copy(sshd.known_hosts, home / ".ssh" / "known_hosts")
    env = {**os.environ, "HOME": str(home), "EDGEKIT_DEVICES": str(tmp_path / "none.toml")}
    result = cli("build", str(superres), "--target", "arm", "--precision", "fp32", "--device", "edge-board", "-o", str(tmp_path / "o"), "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verification"]["device"] == "edge-board"


def test_devices_toml_errors(tmp_path):
    from edgekit.devices import load_book
    from edgekit.errors import DeviceError, InputError

    path = tmp_path / "devices.toml"
    path.write_text('[devices.pi]\nhost = "x"\nprot = 22\n')
    with pytest.raises(InputError, match=r"devices.pi.prot': unknown key \(did you mean 'port'\?\)"):
        load_book(path)
    path.write_text('[devices.pi]\nuser = "x"\n')
    with pytest.raises(InputError, match="devices.pi.host': is required"):
        load_book(path)
    path.write_text('[devices.pi]\nhost = "x"\n[groups]\nall = ["pi", "ghost"]\n')
    with pytest.raises(InputError, match="groups.all"):
        load_book(path)
    path.write_text('[devices.pi5]\nhost = "x"\n')
    with pytest.raises(DeviceError, match="unknown device 'pi4'") as info:
        resolve_devices(["pi4"], load_book(path))
    assert "did you mean 'pi5'" in str(info.value)


def test_ad_hoc_specs():
    (device,) = resolve_devices(["pi@192.168.1.7:2222"])
    assert (device.user, device.host, device.port) == ("pi", "192.168.1.7", 2222)
    (device,) = resolve_devices(["[::1]:2200"])
    assert device.host == "::1" and device.port == 2200


@pytest.mark.slow
def test_tensorrt_remote_build_reaches_the_device(cnn, device_book, sshd, tmp_path):
    """The Jetson route through the real sshd: upload model and builder, run it on the 'device', which has
    no TensorRT here, and fail with what to install there. Nothing is faked: the builder really runs remotely."""
    result = cli("build", str(cnn), "--target", "jetson", "--precision", "fp16", "--device", "localhost-ssh", "-o", str(tmp_path / "o"))
    assert result.returncode == 6, result.stderr
    assert "cannot build the TensorRT engine on" in result.stderr and "localhost-ssh" in result.stderr
    assert "JetPack" in result.stderr
    assert leftovers(sshd) == []


@pytest.mark.slow
def test_coreml_package_folder_travels_to_the_device(superres, device_book, sshd, tmp_path):
    """A .mlpackage is a folder: it is uploaded whole, checked by tree hash on the device, and run by the
    runner there. This 'device' is Linux, so Core ML says why it cannot predict: skipped, never passed."""
    result = cli("build", str(superres), "--target", "ios", "--precision", "fp16", "--device", "localhost-ssh", "-o", str(tmp_path / "o"), "--json")
    assert result.returncode == 0, result.stderr
    verification = json.loads(result.stdout)["verification"]
    assert verification["status"] == "skipped" and verification["where"] == "device" and verification["device"] == "localhost-ssh"
    assert "needs macOS" in verification["reason"]
    assert leftovers(sshd) == []


@pytest.mark.slow
def test_device_builds_are_never_served_from_the_cache(superres, device_book, tmp_path):
    first = cli("build", str(superres), "--target", "arm", "--precision", "fp16", "--device", "localhost-ssh", "-o", str(tmp_path / "a"), "--json")
    second = cli("build", str(superres), "--target", "arm", "--precision", "fp16", "--device", "localhost-ssh", "-o", str(tmp_path / "b"), "--json")
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["cache"]["hit"] is False  # measured again on the device
