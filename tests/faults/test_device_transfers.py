"""Files to and from devices: SSH servers without SFTP (an OpenSSH config without `Subsystem sftp`, Dropbear
without its sftp-server) get them streamed over an exec channel; a copy corrupted on the device is caught by
the sha256 check and sent again once. All against real servers on 127.0.0.1."""

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edgekit.fsutil import sha256_tree
from edgekit.transport.remote import RECEIVE_TREE
from edgekit.transport.ssh import SSHTransport
from tests.faults._device import cli, device_for, device_with


def verified(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    verification = json.loads(result.stdout)["verification"]
    assert verification["status"] == "passed" and verification["where"] == "device"
    return verification


@pytest.mark.slow
def test_sshd_without_sftp_verifies_by_streaming(built_superres, ssh_server, tmp_path, monkeypatch):
    server = ssh_server(sftp=False)
    name = device_with(server, tmp_path, monkeypatch)
    environment = verified(cli("verify", str(built_superres), "--device", name, "--json"))["environment"]
    assert environment["file_transfer"] == "exec-stream"
    assert environment["file_transfer_reason"] == "no SFTP on the device: the SSH server refused the sftp subsystem"
    assert "subsystem request for sftp" in server.log.read_text()  # it was asked, and had none


@pytest.mark.slow
def test_folder_upload_and_download_by_streaming(ssh_server, tmp_path):
    """A folder artifact (.mlpackage-like, odd names included) travels as a tar unpacked by the device's python."""
    folder = tmp_path / "model.mlpackage"
    (folder / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (folder / "Manifest.json").write_text('{"a": 1}')
    (folder / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(bytes(range(256)) * 300)
    (folder / "Data" / "com.apple.CoreML" / "weights" / "weight's $(x).bin").write_bytes(b"\x00\xff" * 5000)
    server = ssh_server(sftp=False)
    with SSHTransport(device_for(server, tmp_path)) as transport:
        transport.upload(folder, folder.name)
        remote = Path(transport.remote_dir)
        assert sha256_tree(remote / folder.name) == sha256_tree(folder)
        assert sorted(p.name for p in remote.iterdir() if p.name.startswith(".") and p.name != ".edgekit-run.json") == [], "no partial left"
        (remote / "outputs.npz").write_bytes(b"results" * 1000)
        transport.download("outputs.npz", tmp_path / "back.npz")
        assert (tmp_path / "back.npz").read_bytes() == b"results" * 1000
        assert transport.facts["file_transfer"] == "exec-stream"


def test_streamed_tree_with_traversal_is_refused(tmp_path):
    """The device side refuses tar members that leave the folder, links and absolute names."""
    for evil in ("../escaped.txt", "/tmp/absolute.txt", "link"):
        archive = tmp_path / "evil.tar"
        with tarfile.open(archive, "w") as tar:
            member = tarfile.TarInfo(evil)
            if evil == "link":
                member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(member)
            else:
                member.size = 4
                tar.addfile(member, io.BytesIO(b"evil"))
        dest = tmp_path / "dest"
        result = subprocess.run([sys.executable, "-c", RECEIVE_TREE, str(archive), str(dest)], capture_output=True, text=True)
        assert result.returncode == 3 and "refused tar member" in result.stderr
        assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()
        assert not any(dest.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("sftp", [True, False], ids=["with-sftp-server", "without-sftp-server"])
def test_dropbear_device(built_superres, dropbear_server, tmp_path, monkeypatch, sftp):
    server = dropbear_server(sftp=sftp)
    name = device_with(server, tmp_path, monkeypatch)
    environment = verified(cli("verify", str(built_superres), "--device", name, "--json"))["environment"]
    if sftp:
        assert environment["file_transfer"] == "sftp"
    else:
        assert environment["file_transfer"] == "exec-stream"
        assert environment["file_transfer_reason"] == "no SFTP on the device: the sftp subsystem exited at once (no sftp-server program on the device)"
    assert not list(server.work_dir.glob("run.*")), "the run folder is removed"


def _corrupting_python(tmp_path: Path, times: str) -> tuple[Path, Path]:
    """A device python whose storage corrupts the uploaded artifact between the upload and its check
    (flips a byte of the .partial file the first time, or every time)."""
    log = tmp_path / "checks.log"
    wrapper = tmp_path / f"python-corrupts-{times}"
    flip = "import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[100] ^= 0xFF; open(p, 'wb').write(bytes(b))"
    condition = f'[ ! -s "{log}" ]' if times == "once" else "true"
    wrapper.write_text(f"""#!/bin/sh
case "$3" in
  *.tflite.partial)
    if {condition}; then '{sys.executable}' -c "{flip}" "$3"; fi
    echo "$3" >> "{log}";;
esac
exec '{sys.executable}' "$@"
""")
    wrapper.chmod(0o755)
    return wrapper, log


@pytest.mark.slow
def test_corrupted_upload_is_detected_and_sent_again(built_superres, sshd, tmp_path, monkeypatch):
    wrapper, log = _corrupting_python(tmp_path, "once")
    name = device_with(sshd, tmp_path, monkeypatch, python=str(wrapper))
    environment = verified(cli("verify", str(built_superres), "--device", name, "--json"))["environment"]
    assert len(log.read_text().splitlines()) == 2, "checked, found corrupted, sent and checked again"
    assert environment["uploads_resent_after_a_bad_checksum"] == ["super_resolution_fp32.tflite"]


@pytest.mark.slow
def test_upload_corrupted_twice_is_its_own_error(built_superres, sshd, tmp_path, monkeypatch):
    wrapper, log = _corrupting_python(tmp_path, "always")
    name = device_with(sshd, tmp_path, monkeypatch, python=str(wrapper))
    result = cli("verify", str(built_superres), "--device", name)
    assert result.returncode == 11, result.stderr
    assert "super_resolution_fp32.tflite arrived corrupted" in result.stderr and "also when sent again" in result.stderr
    assert len(log.read_text().splitlines()) == 2, "sent once more, not forever"
