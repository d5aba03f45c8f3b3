"""Moving files to and from a device: over SFTP where the device's SSH server has it, else streamed over
an exec channel (`cat`), as scp's legacy mode does. Many boards have no SFTP: Dropbear without
openssh-sftp-server (OpenWrt, Yocto), minimal sshd configs without a `Subsystem sftp` line.

These coroutines only move bytes; the caller (SSHTransport) checks size and sha256 on the other side,
retries, and renames into place.
"""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from edgekit._lazy import require
from edgekit.transport.remote import RECEIVE_TREE

SFTP, EXEC_STREAM = "sftp", "exec-stream"


async def sftp_problem(conn: Any) -> str | None:
    """Why this connection cannot use SFTP (None: it can). A dropped connection raises instead."""
    asyncssh = require("asyncssh", "core")
    try:
        async with conn.start_sftp_client():
            return None
    except asyncssh.ChannelOpenError as exc:
        if exc.code == asyncssh.OPEN_REQUEST_SESSION_FAILED:  # OpenSSH without a `Subsystem sftp` line
            return "the SSH server refused the sftp subsystem"
        raise
    except asyncssh.SFTPError:
        # Dropbear runs its sftp-server through the shell: where the program is missing the subsystem
        # starts and ends at once. Only a connection that still runs commands means "no SFTP".
        for _ in range(5):
            if conn.is_closed():
                raise
            try:
                if (await conn.run("exit 0", check=False)).exit_status == 0:
                    return "the sftp subsystem exited at once (no sftp-server program on the device)"
            except asyncssh.ChannelOpenError:
                pass  # measured: Dropbear refuses about 1 in 6 sessions opened while it reaps the sftp child
            await asyncio.sleep(0.2)
        raise


async def put_sftp(conn: Any, local: Path, remote: str) -> None:
    async with conn.start_sftp_client() as sftp:
        await sftp.put(str(local), remote, recurse=local.is_dir())


async def get_sftp(conn: Any, remote: str, local: Path) -> None:
    async with conn.start_sftp_client() as sftp:
        await sftp.get(remote, str(local))


async def put_stream(conn: Any, local: Path, remote: str, command: Any, python: str) -> tuple[int | None, str]:
    """Stream a file into ``remote`` with `cat`, or a folder as a tar unpacked there by the device's ``python``.
    ``command(argv)`` makes the remote command line (with its deadline). Returns (exit status, stderr)."""
    if local.is_dir():
        with tempfile.TemporaryDirectory(prefix="edgekit-tar-") as scratch:
            archive = Path(scratch) / "tree.tar"
            _tar_tree(local, archive)
            tar_remote = f"{remote}.tar"
            status, stderr = await put_stream(conn, archive, tar_remote, command, python)
            if status != 0:
                return status, stderr
            unpack = await conn.run(command([python, "-c", RECEIVE_TREE, tar_remote, remote]), check=False)
            return unpack.exit_status, decoded(unpack.stderr)
    result = await conn.run(command(["sh", "-c", 'cat > "$1"', "edgekit-receive", remote]), stdin=str(local), encoding=None, check=False)
    return result.exit_status, decoded(result.stderr)


async def get_stream(conn: Any, remote: str, local: Path, command: Any) -> tuple[int | None, str]:
    result = await conn.run(command(["cat", remote]), stdout=str(local), encoding=None, check=False)
    return result.exit_status, decoded(result.stderr)


def _tar_tree(folder: Path, archive: Path) -> None:
    """A tar of the folder's files and subfolders (relative names; links and special files are left out)."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for item in sorted(folder.rglob("*")):
            if item.is_symlink() or not (item.is_file() or item.is_dir()):
                continue
            tar.add(item, arcname=item.relative_to(folder).as_posix(), recursive=False)


def decoded(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
